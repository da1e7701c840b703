-- The pipeline's state model (dicom_nodes/state/model.py): every state column gets the CHECK
-- constraint that mirrors its StrEnum, forward items and studies record when their state
-- changed, and held items record why they are held.

ALTER TABLE forward_item
    ADD COLUMN state_changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ADD COLUMN hold_reason      text        NOT NULL DEFAULT '';
ALTER TABLE study
    ADD COLUMN state_changed_at timestamptz NOT NULL DEFAULT clock_timestamp();

-- Items held before reasons were recorded.
UPDATE forward_item SET hold_reason = 'unrecorded' WHERE state = 'quarantined';
UPDATE forward_item
   SET hold_reason = coalesce('status-' || lower(lpad(to_hex(last_status), 4, '0')), 'unrecorded')
 WHERE state = 'dead';

-- Instance states that are no longer used: 'forwarded' and 'confirmed' instances are routed
-- (the worker releases those whose destinations all confirmed, deleting their spool copies).
UPDATE ingest_instance SET state = 'routed' WHERE state IN ('forwarded', 'confirmed');
UPDATE ingest_instance SET state = 'held' WHERE state IN ('quarantined', 'given_up');

-- Instances stuck in 'routed' although nothing waits for a destination any more: held for a
-- person when an item is quarantined or dead, else cancelled when an item was cancelled.
UPDATE ingest_instance i SET state = 'held', state_changed_at = clock_timestamp()
 WHERE i.state = 'routed'
   AND NOT EXISTS (SELECT 1 FROM forward_item f WHERE f.sop_instance_uid = i.sop_instance_uid
                   AND f.state IN ('pending', 'sent'))
   AND EXISTS (SELECT 1 FROM forward_item f WHERE f.sop_instance_uid = i.sop_instance_uid
               AND f.state IN ('quarantined', 'dead'));
UPDATE ingest_instance i SET state = 'cancelled', state_changed_at = clock_timestamp()
 WHERE i.state = 'routed'
   AND NOT EXISTS (SELECT 1 FROM forward_item f WHERE f.sop_instance_uid = i.sop_instance_uid
                   AND f.state IN ('pending', 'sent', 'quarantined', 'dead'))
   AND EXISTS (SELECT 1 FROM forward_item f WHERE f.sop_instance_uid = i.sop_instance_uid
               AND f.state = 'cancelled');

ALTER TABLE ingest_instance ADD CONSTRAINT ingest_instance_state_check
    CHECK (state IN ('received', 'routed', 'held', 'released', 'cancelled', 'unroutable',
                     'missing', 'purged'));
ALTER TABLE forward_item DROP CONSTRAINT forward_item_state_check;
ALTER TABLE forward_item ADD CONSTRAINT forward_item_state_check
    CHECK (state IN ('pending', 'sent', 'confirmed', 'dead', 'cancelled', 'quarantined'));
-- study.state keeps its constraint from 0002: ('receiving', 'complete').

DROP INDEX ingest_instance_open;
CREATE INDEX ingest_instance_open ON ingest_instance (node, state, received_at)
    WHERE state IN ('received', 'routed', 'held', 'cancelled', 'unroutable');
CREATE INDEX forward_item_sent ON forward_item (destination, next_attempt_at)
    WHERE state = 'sent';
CREATE INDEX forward_item_held ON forward_item (state, created_at)
    WHERE state IN ('quarantined', 'dead');
-- The worker's /health asks when a destination last confirmed anything.
CREATE INDEX forward_item_progress ON forward_item (destination, confirmed_at);
