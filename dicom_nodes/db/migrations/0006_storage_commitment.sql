-- Storage Commitment Push Model (DICOM PS3.4 Annex J): what the worker asked, what the peer said.
--
-- A worker records its request (one row per Transaction UID) and commits it before it sends the
-- N-ACTION. The destination answers with an N-EVENT-REPORT on an association of its own to our
-- SCP, which records one row per referenced instance and notifies 'radiogate_commitment' with
-- the Transaction UID in the same transaction; the waiting worker LISTENs on that channel (and
-- polls as a fallback) and marks the request taken when it reads the report. Reports that
-- arrive after their worker stopped waiting (never taken) are still used: a later confirmation
-- of the same instances by the same destination counts the most recent result recorded for each
-- (the reuse rule, dicom_nodes/forward/commitment.py). Rows older than the retention period
-- are deleted by the workers.

CREATE TABLE commitment_request (
    transaction_uid  text        PRIMARY KEY,
    destination      text        NOT NULL,             -- [[destinations]] name
    peer_ae          text        NOT NULL,             -- the destination's AE title (called AE)
    calling_ae       text        NOT NULL,             -- our AE title, where the peer reports
    instance_count   integer     NOT NULL CHECK (instance_count > 0),
    requested_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    reported_at      timestamptz,                       -- first report received (NULL: none yet)
    taken_at         timestamptz                        -- the waiting worker read the report
);
CREATE INDEX commitment_request_age ON commitment_request (requested_at);

CREATE TABLE commitment_result (
    transaction_uid  text        NOT NULL,
    sop_instance_uid text        NOT NULL,
    sop_class_uid    text        NOT NULL DEFAULT '',  -- Referenced SOP Class UID as reported
    committed        boolean     NOT NULL,
    failure_reason   integer,                          -- (0008,1197), PS3.4 Table J.3-3
    event_type       smallint    NOT NULL,             -- 1 successful, 2 failures exist
    destination      text        NOT NULL DEFAULT '',  -- from the request ('' = not ours)
    reporter_ae      text        NOT NULL,             -- calling AE of the reporting association
    reporter_address text        NOT NULL DEFAULT '',
    received_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (transaction_uid, sop_instance_uid),
    CHECK (committed = (failure_reason IS NULL))
);
CREATE INDEX commitment_result_instance ON commitment_result (sop_instance_uid, received_at);
CREATE INDEX commitment_result_age ON commitment_result (received_at);
