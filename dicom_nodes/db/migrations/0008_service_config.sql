-- The effective configuration each service of a node last started with (BLAKE3 of its
-- canonical JSON): a start with another one is a config-changed audit event (PS3.15 A.5.3.11).
CREATE TABLE service_config (
    node        text        NOT NULL,
    service     text        NOT NULL,
    config_hash text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (node, service)
);
