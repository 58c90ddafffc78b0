-- The audit trail (LGPD art. 37, docs/security.md "Audit trail"): one row per read or fetch of a
-- person's data. The person is named by a keyed digest of the CPF (`subject`), never the CPF.
-- Partitioned by month on `at`: retention drops whole old partitions (DETACH/DROP, not DELETE,
-- see audit.drop_partitions_before); the DEFAULT partition catches a row whose month has no
-- partition yet. The application creates the partition of a month before writing into it
-- (audit.ensure_partition, called by infra/db/audit.py), so the DEFAULT partition stays empty.
-- Append-only: a trigger refuses UPDATE, DELETE and TRUNCATE for every role the app connects as.
-- The down section is for local development only: production is forward-only.
-- squawk-ignore-file ban-drop-schema

-- migrate:up
SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE SCHEMA IF NOT EXISTS audit;

CREATE TABLE audit.access_log (
    -- Keyset paging on (at, id); unique per row across partitions (one sequence).
    id bigint GENERATED ALWAYS AS IDENTITY,
    at timestamptz NOT NULL,
    tenant text NOT NULL,
    key_id text,
    operation text NOT NULL,
    -- Keyed digest (hex) of the normalised CPF; never the CPF itself.
    subject text NOT NULL,
    paid boolean NOT NULL DEFAULT false,
    upstream text,
    request_id text,
    PRIMARY KEY (at, id)
) PARTITION BY RANGE (at);

CREATE TABLE audit.access_log_default PARTITION OF audit.access_log DEFAULT;

-- Indexes on the partitioned table are created on every partition, present and future.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX access_log_subject ON audit.access_log (tenant, subject, at);
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX access_log_key ON audit.access_log (tenant, key_id, at);
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX access_log_tenant_at ON audit.access_log (tenant, at, id);

CREATE FUNCTION audit.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.access_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- Row triggers on a partitioned table are cloned onto every partition; TRUNCATE triggers are
-- not, so audit.ensure_partition adds one to each new partition.
CREATE TRIGGER access_log_append_only
    BEFORE UPDATE OR DELETE ON audit.access_log
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER access_log_no_truncate
    BEFORE TRUNCATE ON audit.access_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER access_log_no_truncate
    BEFORE TRUNCATE ON audit.access_log_default
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- The partition of the month holding `month` (audit.access_log_YYYYMM), created if missing.
-- Safe under concurrency (an advisory lock serialises creators). Returns the partition's name.
CREATE FUNCTION audit.ensure_partition(month date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    first_day date := date_trunc('month', month::timestamp)::date;
    name text := 'access_log_' || to_char(first_day, 'YYYYMM');
BEGIN
    IF to_regclass('audit.' || name) IS NOT NULL THEN
        RETURN name;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('audit.access_log partitions'));
    IF to_regclass('audit.' || name) IS NOT NULL THEN
        RETURN name;
    END IF;
    EXECUTE format(
        'CREATE TABLE audit.%I PARTITION OF audit.access_log FOR VALUES FROM (%L) TO (%L)',
        name, first_day::timestamp AT TIME ZONE 'UTC',
        (first_day + interval '1 month')::timestamp AT TIME ZONE 'UTC'
    );
    EXECUTE format(
        'CREATE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON audit.%I '
        'FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change()',
        name
    );
    RETURN name;
END;
$$;

-- Retention: detach and drop every monthly partition wholly before `month` (the DEFAULT
-- partition is left alone). Returns how many were dropped.
CREATE FUNCTION audit.drop_partitions_before(month date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    cutoff text := to_char(month, 'YYYYMM');
    part record;
    dropped integer := 0;
BEGIN
    FOR part IN
        SELECT c.relname
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'audit.access_log'::regclass
           AND c.relname ~ '^access_log_[0-9]{6}$'
           AND substr(c.relname, 12) < cutoff
         ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE audit.access_log DETACH PARTITION audit.%I', part.relname);
        EXECUTE format('DROP TABLE audit.%I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END;
$$;

-- The current and the next month (UTC); later months are created by the application.
SELECT audit.ensure_partition((now() AT TIME ZONE 'UTC')::date);
SELECT audit.ensure_partition(((now() AT TIME ZONE 'UTC') + interval '1 month')::date);

-- migrate:down
SET lock_timeout = '5s';
SET statement_timeout = '60s';
DROP SCHEMA audit CASCADE;
