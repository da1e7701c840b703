-- Deferred appends: enqueue in the caller's transaction without the head lock, seal later.
-- See audit/sealer.py. audit_pending holds canonical event bytes until a sealer moves them, in
-- id order, into audit_event (chained, gap-free) and deletes them, in one transaction.

CREATE TABLE audit_pending (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body        bytea       NOT NULL,
    event_time  timestamptz NOT NULL,
    event_id    text        NOT NULL,
    step        text        NOT NULL,
    keys        text[]      NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now()
);

-- Only audit_seal() may delete pending events (it sets audit.sealing for its transaction).
CREATE FUNCTION audit_pending_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('audit.sealing', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER audit_pending_guard BEFORE UPDATE OR DELETE ON audit_pending
    FOR EACH ROW EXECUTE FUNCTION audit_pending_guard();
CREATE TRIGGER audit_pending_no_truncate BEFORE TRUNCATE ON audit_pending
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- Lock the head for a sealer (serialises sealers and appenders) and return it.
CREATE FUNCTION audit_lock_head(OUT head_seq bigint, OUT head_hash bytea)
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT seq, hash FROM audit_head WHERE id FOR UPDATE
$$;

-- Move pending events p_ids (in that order) into the chain with the caller's hashes, computed
-- from the head the caller locked with audit_lock_head() in this transaction.
CREATE FUNCTION audit_seal(p_expect_seq bigint, p_ids bigint[], p_hashes bytea[])
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_seq bigint;
    n integer := cardinality(p_ids);
    moved integer;
BEGIN
    SELECT seq INTO v_seq FROM audit_head WHERE id FOR UPDATE;
    IF v_seq <> p_expect_seq OR n IS NULL OR n = 0 OR cardinality(p_hashes) <> n THEN
        RAISE EXCEPTION 'audit_seal: head moved or bad arguments';
    END IF;
    INSERT INTO audit_event (seq, hash, body, event_time, event_id, step, keys)
    SELECT v_seq + t.ord, t.h, p.body, p.event_time, p.event_id, p.step, p.keys
      FROM unnest(p_ids, p_hashes) WITH ORDINALITY AS t (pid, h, ord)
      JOIN audit_pending p ON p.id = t.pid;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved <> n THEN
        RAISE EXCEPTION 'audit_seal: % of % pending events found', moved, n;
    END IF;
    PERFORM set_config('audit.sealing', 'on', true);
    DELETE FROM audit_pending WHERE id = ANY (p_ids);
    PERFORM set_config('audit.sealing', 'off', true);
    UPDATE audit_head SET seq = v_seq + n, hash = p_hashes[n] WHERE id;
    RETURN v_seq + n;
END $$;
REVOKE ALL ON FUNCTION audit_lock_head() FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_seal(bigint, bigint[], bytea[]) FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'radiogate_app') THEN
        GRANT SELECT, INSERT ON audit_pending TO radiogate_app;
        GRANT EXECUTE ON FUNCTION audit_lock_head() TO radiogate_app;
        GRANT EXECUTE ON FUNCTION audit_seal(bigint, bigint[], bytea[]) TO radiogate_app;
    END IF;
END $$;
