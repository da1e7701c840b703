-- De-identification (DICOM PS3.15 Annex E): de-identified copies, quarantine, the vault.

-- The profile a destination receives an instance under ('' = the instance as received).
ALTER TABLE forward_item ADD COLUMN profile text NOT NULL DEFAULT '';
-- 'quarantined': held back (burned-in annotation without a mask, or de-identification failed);
-- an admin sees it with `radiogate deid quarantine list` and decides.
ALTER TABLE forward_item DROP CONSTRAINT forward_item_state_check;
ALTER TABLE forward_item ADD CONSTRAINT forward_item_state_check
    CHECK (state IN ('pending', 'sent', 'confirmed', 'dead', 'cancelled', 'quarantined'));

-- One de-identified copy per (instance, profile), written to the spool (content-addressed)
-- before this row commits; deleted with the instance's spool file at release. The copy's new
-- UIDs are not stored here: they are keyed HMACs of the originals (recomputable only with the
-- site secret), and the copy's own header names them when it is forwarded.
CREATE TABLE deid_output (
    sop_instance_uid        text        NOT NULL REFERENCES ingest_instance (sop_instance_uid),
    profile                 text        NOT NULL,
    spool_path              text        NOT NULL,
    transfer_syntax_uid     text        NOT NULL,
    size                    bigint      NOT NULL,
    note                    text        NOT NULL DEFAULT '',
    created_at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (sop_instance_uid, profile)
);

-- Pseudonym -> original identifiers, encrypted with AES-256-GCM under a key that is never in
-- the database (dicom_nodes/deid/vault.py). The pseudonym is a keyed HMAC of the original, so
-- the row reveals nothing without the site secret or the vault key.
CREATE TABLE deid_vault (
    pseudonym   text        PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('patient', 'study', 'series', 'instance', 'uid')),
    key_id      text        NOT NULL,
    nonce       bytea       NOT NULL,
    ciphertext  bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
