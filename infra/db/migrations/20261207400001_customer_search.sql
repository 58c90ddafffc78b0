-- The customer search (GET /api/v1/customers, domain/search.py).
--
-- Names are matched fuzzily with pg_trgm's word similarity (`name <% search_name`), answered by
-- the GIN trigram index that already exists on core.parties.search_name (idx_parties_name_trgm;
-- search_name is core.search_key(full_name), the folded, accent-free form the search compares,
-- always filled, unlike normalized_name: a second trigram index would duplicate it). The
-- extension is stated here as the search's dependency.
--
-- The address filters get their indexes: the folded city and the UF. Not CONCURRENTLY: dbmate
-- holds its migration lock (an advisory lock) while applying, and a concurrent build waits for
-- every open transaction, including another instance waiting for that lock: a deadlock when
-- two instances migrate at once (tests/integration/db/test_migrate.py). A plain build holds a
-- SHARE lock on core.addresses (reads go on, enrichment writes wait) for the time of one scan;
-- lock_timeout bounds the wait for it.
-- The down section is for local development only: production is forward-only (the extension
-- stays: the name index of the first migration needs it).
-- squawk-ignore-file require-concurrent-index-creation, require-concurrent-index-deletion

-- migrate:up
SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- city filter: core.search_key(a.city) = <folded city>
CREATE INDEX IF NOT EXISTS idx_addresses_city_key ON core.addresses (core.search_key(city));
-- UF filter: a.state = <UF>
CREATE INDEX IF NOT EXISTS idx_addresses_state ON core.addresses (state);

-- migrate:down
SET lock_timeout = '5s';
SET statement_timeout = '60s';
DROP INDEX IF EXISTS core.idx_addresses_state;
DROP INDEX IF EXISTS core.idx_addresses_city_key;
