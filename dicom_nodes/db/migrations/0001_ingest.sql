-- Ingest bookkeeping: one row per received SOP instance, plus every re-send of one.
CREATE TABLE ingest_instance (
    sop_instance_uid    text        PRIMARY KEY,
    sop_class_uid       text        NOT NULL,
    study_instance_uid  text        NOT NULL,
    series_instance_uid text        NOT NULL,
    modality            text        NOT NULL DEFAULT '',
    transfer_syntax_uid text        NOT NULL,
    size_bytes          bigint      NOT NULL CHECK (size_bytes > 0),
    blake3              bytea       NOT NULL CHECK (length(blake3) = 32),
    spool_path          text        NOT NULL,
    calling_ae          text        NOT NULL,
    called_ae           text        NOT NULL,
    peer_address        inet        NOT NULL,
    peer_port           integer     NOT NULL,
    node                text        NOT NULL,
    association_id      uuid        NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ingest_instance_study ON ingest_instance (study_instance_uid);
CREATE INDEX ingest_instance_series ON ingest_instance (series_instance_uid);
CREATE INDEX ingest_instance_received ON ingest_instance (received_at);

CREATE TABLE ingest_duplicate (
    id                  bigserial   PRIMARY KEY,
    sop_instance_uid    text        NOT NULL REFERENCES ingest_instance (sop_instance_uid),
    bytes_differ        boolean     NOT NULL,
    blake3              bytea       NOT NULL CHECK (length(blake3) = 32),
    size_bytes          bigint      NOT NULL,
    spool_path          text        NOT NULL,
    calling_ae          text        NOT NULL,
    called_ae           text        NOT NULL,
    peer_address        inet        NOT NULL,
    peer_port           integer     NOT NULL,
    node                text        NOT NULL,
    association_id      uuid        NOT NULL,
    note                text        NOT NULL DEFAULT '',
    received_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ingest_duplicate_sop ON ingest_duplicate (sop_instance_uid);
