-- Series and their triage (dicom_nodes/pipeline/triage.py, state model SERIES and TRIAGE).
--
-- series: one row per Series Instance UID of a node, created by routing; complete when every
--   signal says so (quiet period, the expected instance count, the sending association's
--   release, MPPS COMPLETED/DISCONTINUED); a late instance re-opens it.
-- series_triage: the triage decision of a series (lane, score, data quality), pending until
--   decided; instances of a triaged route keep their spool copies until it is decided.
-- triage_instance: what triage needs of each instance, captured when it is routed (geometry
--   for the data-quality checks, the model's slice score) so that the decision does not need
--   the files again.
CREATE TABLE series (
    series_instance_uid text        PRIMARY KEY,
    study_instance_uid  text        NOT NULL,
    node                text        NOT NULL,
    modality            text        NOT NULL DEFAULT '',
    state               text        NOT NULL DEFAULT 'receiving'
                                    CHECK (state IN ('receiving', 'complete')),
    instances           integer     NOT NULL DEFAULT 0,
    expected            integer,
    first_received_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_received_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at        timestamptz,
    completed_by        text        NOT NULL DEFAULT '',
    increments          integer     NOT NULL DEFAULT 0,
    state_changed_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX series_receiving ON series (node, last_received_at) WHERE state = 'receiving';
CREATE INDEX series_study ON series (study_instance_uid);

CREATE TABLE series_triage (
    series_instance_uid text        PRIMARY KEY REFERENCES series (series_instance_uid),
    study_instance_uid  text        NOT NULL,
    node                text        NOT NULL,
    route               text        NOT NULL DEFAULT '',
    state               text        NOT NULL DEFAULT 'pending'
                                    CHECK (state IN ('pending', 'decided')),
    lane                text        NOT NULL DEFAULT 'routine',
    rule_lane           text        NOT NULL DEFAULT 'routine',
    model_lane          text,
    score               real,
    model               jsonb,
    quality             text        NOT NULL DEFAULT 'unchecked'
                                    CHECK (quality IN ('unchecked', 'complete', 'incomplete')),
    reasons             text[]      NOT NULL DEFAULT '{}',
    flagged             text[]      NOT NULL DEFAULT '{}',
    early               boolean     NOT NULL DEFAULT false,
    decisions           integer     NOT NULL DEFAULT 0,
    decided_at          timestamptz,
    sr_sop_instance_uid  text,
    kos_sop_instance_uid text,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    state_changed_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX series_triage_pending ON series_triage (node) WHERE state = 'pending';
CREATE INDEX series_triage_study ON series_triage (study_instance_uid);

CREATE TABLE triage_instance (
    sop_instance_uid    text        PRIMARY KEY REFERENCES ingest_instance (sop_instance_uid),
    series_instance_uid text        NOT NULL REFERENCES series (series_instance_uid),
    instance_number     integer,
    position            float8[],
    orientation         float8[],
    rows                integer,
    columns             integer,
    pixel_spacing       float8[],
    images_in_acquisition integer,
    problems            text[]      NOT NULL DEFAULT '{}',
    score               real,
    captured_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX triage_instance_series ON triage_instance (series_instance_uid);
