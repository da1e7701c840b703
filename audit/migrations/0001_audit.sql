-- Tamper-evident audit trail (DICOM PS3.15 A.5 events in a BLAKE3 hash chain).
-- See audit/store.py (append), audit/verify.py (verify) and audit/checkpoint.py.
--
-- audit_head       one row: the last sequence number and hash; locked FOR UPDATE by every
--                  append, so appends are serialised and the sequence has no gaps.
-- audit_event      one row per event: canonical bytes stored verbatim + chain hash; the other
--                  columns are search indexes derived from the bytes (never trusted by verify).
-- audit_checkpoint signed (Ed25519) statements "the chain had hash H at seq N at time T".
--
-- Append-only: UPDATE, DELETE and TRUNCATE are refused by triggers (the head may only move
-- forward), and the application role radiogate_app gets SELECT, INSERT on checkpoints and
-- EXECUTE on audit_append() only.

CREATE TABLE audit_head (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    chain_id uuid    NOT NULL DEFAULT gen_random_uuid(),
    seq      bigint  NOT NULL DEFAULT 0 CHECK (seq >= 0),
    hash     bytea   NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
                     CHECK (length(hash) = 32)
) WITH (fillfactor = 10);  -- room for HOT updates of the one row
INSERT INTO audit_head DEFAULT VALUES;

CREATE TABLE audit_event (
    seq         bigint      PRIMARY KEY CHECK (seq > 0),
    hash        bytea       NOT NULL CHECK (length(hash) = 32),
    body        bytea       NOT NULL,
    event_time  timestamptz NOT NULL,
    event_id    text        NOT NULL,
    step        text        NOT NULL,
    keys        text[]      NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_event_time ON audit_event (event_time);
CREATE INDEX audit_event_keys ON audit_event USING gin (keys);

CREATE TABLE audit_checkpoint (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain_id  uuid        NOT NULL,
    seq       bigint      NOT NULL CHECK (seq >= 0),
    hash      bytea       NOT NULL CHECK (length(hash) = 32),
    signed_at timestamptz NOT NULL,
    key_id    text        NOT NULL,
    signature bytea       NOT NULL CHECK (length(signature) = 64)
);
CREATE INDEX audit_checkpoint_seq ON audit_checkpoint (seq);

-- Refuse changes to the append-only tables (superusers must disable the triggers to tamper).
CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END $$;

CREATE TRIGGER audit_event_no_update BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE OR DELETE ON audit_checkpoint
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- The head only moves forward and keeps its chain id.
CREATE FUNCTION audit_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq <= OLD.seq OR NEW.chain_id <> OLD.chain_id OR NEW.id <> OLD.id THEN
        RAISE EXCEPTION 'audit trail is append-only: head may only move forward';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_head_forward BEFORE UPDATE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION audit_head_forward();

-- Append events after the head the caller expects, in the caller's transaction.
-- The caller computed each hash from p_expect_hash (BLAKE3 is not available in SQL). If the head
-- is not what it expected, nothing is inserted and the current head is returned: the row lock
-- taken here is held until the caller's transaction ends, so a second call with hashes
-- computed from that head cannot miss.
CREATE FUNCTION audit_append(
    p_expect_seq bigint, p_expect_hash bytea, p_hashes bytea[], p_bodies bytea[],
    p_times timestamptz[], p_event_ids text[], p_steps text[], p_keys text[],
    OUT appended boolean, OUT head_seq bigint, OUT head_hash bytea
) LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    n integer := cardinality(p_bodies);
BEGIN
    SELECT h.seq, h.hash INTO head_seq, head_hash FROM audit_head h WHERE h.id FOR UPDATE;
    IF head_seq <> p_expect_seq OR head_hash <> p_expect_hash OR n IS NULL OR n = 0 THEN
        appended := false;
        RETURN;
    END IF;
    IF cardinality(p_hashes) <> n OR cardinality(p_times) <> n
       OR cardinality(p_event_ids) <> n OR cardinality(p_steps) <> n
       OR cardinality(p_keys) <> n THEN
        RAISE EXCEPTION 'audit_append: arrays of different lengths';
    END IF;
    INSERT INTO audit_event (seq, hash, body, event_time, event_id, step, keys)
    SELECT head_seq + t.ord, t.h, t.b, t.tm, t.e, t.s, string_to_array(t.k, E'\n')
      FROM unnest(p_hashes, p_bodies, p_times, p_event_ids, p_steps, p_keys)
           WITH ORDINALITY AS t (h, b, tm, e, s, k, ord);
    UPDATE audit_head SET seq = head_seq + n, hash = p_hashes[n] WHERE id;
    appended := true;
    head_seq := head_seq + n;
    head_hash := p_hashes[n];
END $$;
REVOKE ALL ON FUNCTION audit_append(bigint, bytea, bytea[], bytea[], timestamptz[], text[],
                                    text[], text[]) FROM PUBLIC;

-- The application role: NOLOGIN (sites create login roles IN ROLE radiogate_app, see
-- audit/__init__.py). Created only if missing and if we may create roles.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'radiogate_app') THEN
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = current_user
                   AND (rolsuper OR rolcreaterole)) THEN
            BEGIN
                CREATE ROLE radiogate_app NOLOGIN;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created concurrently by a migration of another database
            END;
        ELSE
            RAISE WARNING 'role radiogate_app does not exist and % may not create it; '
                          'audit grants skipped', current_user;
        END IF;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'radiogate_app') THEN
        GRANT SELECT ON audit_head, audit_event, audit_checkpoint TO radiogate_app;
        GRANT INSERT ON audit_checkpoint TO radiogate_app;
        GRANT EXECUTE ON FUNCTION audit_append(bigint, bytea, bytea[], bytea[], timestamptz[],
                                               text[], text[], text[]) TO radiogate_app;
    END IF;
END $$;
