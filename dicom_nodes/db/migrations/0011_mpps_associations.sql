-- Signals that a series is complete (dicom_nodes/pipeline/triage.py, complete_series):
-- mpps: Modality Performed Procedure Steps the SCP received (PS3.4 F.7: N-CREATE, N-SET); only
--   their status and the series they performed are kept (no patient attributes).
-- association_end: when an association that sent instances ended, and whether it was released
--   (a modality that releases has sent what it meant to send) or aborted.
CREATE TABLE mpps (
    sop_instance_uid   text        PRIMARY KEY,
    node               text        NOT NULL,
    status             text        NOT NULL
                                   CHECK (status IN ('IN PROGRESS', 'COMPLETED', 'DISCONTINUED')),
    series_uids        text[]      NOT NULL DEFAULT '{}',
    calling_ae         text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX mpps_done ON mpps USING gin (series_uids) WHERE status <> 'IN PROGRESS';

CREATE TABLE association_end (
    association_id uuid        PRIMARY KEY,
    node           text        NOT NULL,
    released       boolean     NOT NULL,
    ended_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ingest_instance_association ON ingest_instance (association_id);
