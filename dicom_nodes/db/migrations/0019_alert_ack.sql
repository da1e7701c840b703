-- Acknowledging an alert has one writer: radiogate_acknowledge_alert(), called by the state
-- repository (dicom_nodes/state/repository.py acknowledge_alert, used by `radiogate alert ack`)
-- and by the archive plugin (pacs_plugin, which imports only config, audit and the driver).
--
-- It makes the transitions of the state tables (dicom_nodes/state/model.py): ALERT
-- `acknowledged` from `open`, and DELIVERY `cancelled` from `pending` for the alert's
-- deliveries not sent yet (tests/integration/alerts/test_ack_function.py applies it to a row in
-- every state and compares with the tables). It returns what the caller's audit events name —
-- the study, the patient pseudonym, the targets of the cancelled deliveries (in delivery
-- order) — and the caller appends them in the same transaction.
--
-- changed: whether it acknowledged the alert; prior_state: the state the alert was in (NULL:
-- no such alert; a state the transition may not leave: nothing changed).
DROP FUNCTION radiogate_acknowledge_alert(text, text);

CREATE FUNCTION radiogate_acknowledge_alert(p_alert_id text, p_user text)
RETURNS TABLE (changed boolean, prior_state text, study_instance_uid text, patient_pseudonym text, cancelled text[])
LANGUAGE plpgsql AS $$
DECLARE
    v_state text;
    v_study text;
    v_patient text;
    v_cancelled text[];
BEGIN
    SELECT a.state, a.study_instance_uid INTO v_state, v_study
    FROM alert a WHERE a.alert_id = p_alert_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, NULL::text, NULL::text, NULL::text, '{}'::text[];
        RETURN;
    END IF;
    SELECT nullif(s.patient_pseudonym, '') INTO v_patient
    FROM study s WHERE s.study_instance_uid = v_study;
    IF v_state <> ALL (ARRAY['open']) THEN
        RETURN QUERY SELECT false, v_state, v_study, v_patient, '{}'::text[];
        RETURN;
    END IF;
    WITH c AS (
        UPDATE alert_delivery d SET state = 'cancelled', state_changed_at = clock_timestamp()
        WHERE d.alert_id = p_alert_id AND d.state = ANY (ARRAY['pending'])
        RETURNING d.delivery_id, d.target
    )
    SELECT coalesce(array_agg(c.target ORDER BY c.delivery_id), '{}') INTO v_cancelled FROM c;
    UPDATE alert a SET state = 'acknowledged', state_changed_at = clock_timestamp(),
                       acknowledged_at = clock_timestamp(), acknowledged_by = p_user
    WHERE a.alert_id = p_alert_id AND a.state = ANY (ARRAY['open']);
    RETURN QUERY SELECT true, v_state, v_study, v_patient, v_cancelled;
END
$$;
