-- The PACS side (pacs_plugin, dicom_nodes/pacs).
--
-- pacs_journal: how far the recorder has chained each segment of the archive's access journal
--   into the audit log; advanced in the transaction that enqueues the events, so each record is
--   recorded exactly once.
-- radiogate_acknowledge_alert: the alert transition open -> acknowledged (its pending
--   deliveries cancelled) as one statement, for callers that cannot use the state repository
--   (the Orthanc plugin imports only config, audit and the driver). It mirrors the ALERT and
--   DELIVERY tables of dicom_nodes/state/model.py (checked by tests/unit/pacs/test_ack_sql.py);
--   the caller appends the audit event in the same transaction.
CREATE TABLE pacs_journal (
    segment     text        PRIMARY KEY,
    position    bigint      NOT NULL,
    finished    boolean     NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE FUNCTION radiogate_acknowledge_alert(p_alert_id text, p_user text)
RETURNS TABLE (outcome text, study_instance_uid text, cancelled integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_state text;
    v_study text;
    v_cancelled integer;
BEGIN
    SELECT a.state, a.study_instance_uid INTO v_state, v_study
    FROM alert a WHERE a.alert_id = p_alert_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown'::text, NULL::text, 0;
        RETURN;
    END IF;
    IF v_state <> 'open' THEN
        RETURN QUERY SELECT 'already'::text, v_study, 0;
        RETURN;
    END IF;
    UPDATE alert_delivery d SET state = 'cancelled', state_changed_at = clock_timestamp()
    WHERE d.alert_id = p_alert_id AND d.state = 'pending';
    GET DIAGNOSTICS v_cancelled = ROW_COUNT;
    UPDATE alert a SET state = 'acknowledged', state_changed_at = clock_timestamp(),
                       acknowledged_at = clock_timestamp(), acknowledged_by = p_user
    WHERE a.alert_id = p_alert_id AND a.state = 'open';
    RETURN QUERY SELECT 'acknowledged'::text, v_study, v_cancelled;
END
$$;
