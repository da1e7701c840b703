-- Alerts (dicom_nodes/alerts): one row per finding worth announcing, idempotent by its key
-- (study + finding + model version), and one delivery row per target and escalation level.
-- Messages carry pseudonymous identifiers only (payload); the original study UID stays here
-- for the pipeline and the audit trail.
CREATE TABLE alert (
    alert_id            text        PRIMARY KEY,
    alert_key           text        NOT NULL UNIQUE,
    node                text        NOT NULL,
    study_instance_uid  text        NOT NULL,
    series_instance_uid text        NOT NULL DEFAULT '',
    category            smallint    NOT NULL CHECK (category IN (1, 2, 3)),
    payload             jsonb       NOT NULL,
    state               text        NOT NULL DEFAULT 'open'
                                    CHECK (state IN ('open', 'acknowledged')),
    level               smallint    NOT NULL DEFAULT 0,
    escalate_at         timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    state_changed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    acknowledged_at     timestamptz,
    acknowledged_by     text        NOT NULL DEFAULT ''
);
CREATE INDEX alert_open ON alert (escalate_at) WHERE state = 'open';
CREATE INDEX alert_study ON alert (study_instance_uid);

CREATE TABLE alert_delivery (
    delivery_id      text        PRIMARY KEY,
    alert_id         text        NOT NULL REFERENCES alert (alert_id),
    target           text        NOT NULL,
    level            smallint    NOT NULL,
    state            text        NOT NULL DEFAULT 'pending'
                                 CHECK (state IN ('pending', 'delivered', 'cancelled')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_error       text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    state_changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at     timestamptz
);
CREATE INDEX alert_delivery_due ON alert_delivery (next_attempt_at) WHERE state = 'pending';
CREATE INDEX alert_delivery_alert ON alert_delivery (alert_id);
