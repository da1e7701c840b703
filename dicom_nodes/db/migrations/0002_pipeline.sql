-- Pipeline state: per-instance state machine, studies (completion, lane), forwarding queue.
ALTER TABLE ingest_instance
    ADD COLUMN state            text        NOT NULL DEFAULT 'received',
    ADD COLUMN route            text        NOT NULL DEFAULT '',
    ADD COLUMN lane             text        NOT NULL DEFAULT 'routine',
    ADD COLUMN state_changed_at timestamptz NOT NULL DEFAULT clock_timestamp();
CREATE INDEX ingest_instance_open ON ingest_instance (node, state, received_at)
    WHERE state IN ('received', 'routed', 'forwarded', 'confirmed');

CREATE TABLE study (
    study_instance_uid  text        PRIMARY KEY,
    state               text        NOT NULL DEFAULT 'receiving'
                                    CHECK (state IN ('receiving', 'complete')),
    lane                text        NOT NULL DEFAULT 'routine',
    first_received_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_received_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at        timestamptz,
    completed_by        text        NOT NULL DEFAULT '',
    increments          integer     NOT NULL DEFAULT 0
);
CREATE INDEX study_receiving ON study (last_received_at) WHERE state = 'receiving';

CREATE TABLE forward_item (
    sop_instance_uid     text        NOT NULL REFERENCES ingest_instance (sop_instance_uid),
    destination          text        NOT NULL,
    lane_rank            smallint    NOT NULL,
    state                text        NOT NULL DEFAULT 'pending'
                                     CHECK (state IN ('pending', 'sent', 'confirmed', 'dead', 'cancelled')),
    attempts             integer     NOT NULL DEFAULT 0,
    next_attempt_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_status          integer,
    last_error           text        NOT NULL DEFAULT '',
    note                 text        NOT NULL DEFAULT '',
    sent_transfer_syntax text,
    created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at              timestamptz,
    confirmed_at         timestamptz,
    PRIMARY KEY (sop_instance_uid, destination)
);
CREATE INDEX forward_item_queue ON forward_item (destination, lane_rank, next_attempt_at, created_at)
    WHERE state = 'pending';
