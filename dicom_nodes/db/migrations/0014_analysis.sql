-- Analysis of a series by a pipeline (dicom_nodes/pipeline/analyse.py, state model ANALYSIS),
-- and the feature store: every value a run computed, with what it was computed with.
CREATE TABLE series_analysis (
    analysis_id          text        PRIMARY KEY,
    series_instance_uid  text        NOT NULL REFERENCES series (series_instance_uid),
    study_instance_uid   text        NOT NULL,
    node                 text        NOT NULL,
    pipeline             text        NOT NULL,
    state                text        NOT NULL DEFAULT 'waiting'
                                     CHECK (state IN ('waiting', 'running', 'done', 'failed')),
    runs                 integer     NOT NULL DEFAULT 0,
    error                text        NOT NULL DEFAULT '',
    started_at           timestamptz,
    finished_at          timestamptz,
    seg_series_uid       text,
    sr_series_uid        text,
    seg_sop_instance_uid text,
    sr_sop_instance_uid  text,
    parameter_hash       text,
    pyradiomics_version  text,
    created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    state_changed_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX series_analysis_waiting ON series_analysis (node, created_at) WHERE state = 'waiting';
CREATE INDEX series_analysis_study ON series_analysis (study_instance_uid);

CREATE TABLE feature_value (
    analysis_id          text        NOT NULL REFERENCES series_analysis (analysis_id),
    run                  integer     NOT NULL,
    study_instance_uid   text        NOT NULL,
    series_instance_uid  text        NOT NULL,
    segment_number       integer     NOT NULL,
    segment_label        text        NOT NULL,
    tracking_uid         text        NOT NULL,
    feature              text        NOT NULL,
    code_value           text        NOT NULL,
    code_scheme          text        NOT NULL,
    code_meaning         text        NOT NULL,
    unit                 text        NOT NULL,
    derivation           text,
    value                float8,
    imputed              boolean     NOT NULL DEFAULT false,
    missing_reason       text        NOT NULL DEFAULT '',
    parameter_hash       text        NOT NULL,
    pyradiomics_version  text        NOT NULL,
    model_hash           text,
    seg_sop_instance_uid text,
    sr_sop_instance_uid  text,
    recorded_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (analysis_id, run, segment_number, feature)
);
CREATE INDEX feature_value_recorded ON feature_value (recorded_at);
