-- Privileged admin actions are authorised by PostgreSQL role membership of the admin's own,
-- server-authenticated session (dicom_nodes/admin_identity.py), and that session's role is the
-- user recorded in the audit trail:
--   radiogate_privacy: re-identification (radiogate reidentify);
--   radiogate_admin:   quarantine release, job cancel / retry, route retry, study complete,
--                      analyse again.
-- Both are NOLOGIN groups; each admin gets a LOGIN role of their own IN ROLE one or both
-- (docs/operations.md). Members inherit radiogate_app's table privileges, which the commands
-- need. Created only if missing and if the migrating role may create roles (otherwise a
-- warning: nobody is authorised until a site creates them; superusers always are).
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['radiogate_admin', 'radiogate_privacy'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) THEN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = current_user
                       AND (rolsuper OR rolcreaterole)) THEN
                BEGIN
                    EXECUTE format('CREATE ROLE %I NOLOGIN', name);
                EXCEPTION WHEN duplicate_object OR unique_violation THEN
                    NULL;  -- created concurrently by a migration of another database
                END;
            ELSE
                RAISE WARNING 'role % does not exist and % may not create it', name, current_user;
            END IF;
        END IF;
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = name)
           AND EXISTS (SELECT FROM pg_roles WHERE rolname = 'radiogate_app')
           AND NOT pg_has_role(name, 'radiogate_app', 'MEMBER') THEN
            BEGIN
                EXECUTE format('GRANT radiogate_app TO %I', name);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE WARNING 'could not grant radiogate_app to %', name;
            END;
        END IF;
    END LOOP;
END $$;
