-- Party model: the golden record of people and companies, their
-- contacts and addresses, and the Work API enrichment of each party.
--
-- Every table here is created in a brand-new schema, so nothing can be locked by this migration
-- and the index builds below run on empty tables (no CONCURRENTLY needed, none possible inside
-- dbmate's transaction).

-- The down section is for local development only: production is forward-only.
-- squawk-ignore-file ban-drop-table, ban-drop-type, ban-drop-function

-- migrate:up
SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE EXTENSION IF NOT EXISTS pg_trgm;
-- unaccent makes name search accent-insensitive ("JOAO" finds "JOÃO").
CREATE EXTENSION IF NOT EXISTS unaccent;

CREATE SCHEMA IF NOT EXISTS core;

CREATE TYPE core.party_type_enum AS ENUM ('person', 'company');
CREATE TYPE core.contact_type_enum AS ENUM ('email', 'phone', 'whatsapp');

-- The key names are searched by: upper case, no accents, single spaces. Declared IMMUTABLE so
-- it can feed a stored generated column; the dictionary is named explicitly (two-argument
-- form) so the result does not depend on search_path. infra.db.repository.name_search_key is
-- its Python twin, applied to the search text.
CREATE FUNCTION core.search_key(name text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN regexp_replace(
        btrim(upper(public.unaccent('public.unaccent'::regdictionary, name))), '\s+', ' ', 'g');

-- Golden record. cpf_cnpj is deliberately NOT unique (history and legacy imports may
-- hold several rows per document; lookups take the newest).
CREATE TABLE core.parties (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    party_type core.party_type_enum NOT NULL,
    cpf_cnpj text,
    full_name text NOT NULL,
    normalized_name text,
    -- Stored so the name search does not recompute unaccent for every candidate row and no
    -- writer has to remember to fill it (on 1M parties: a common first name went from ~10 ms
    -- to ~6 ms).
    search_name text GENERATED ALWAYS AS (core.search_key(full_name)) STORED,
    -- squawk-ignore ban-char-field
    sex char(1),
    birth_date date,
    mother_name text,
    father_name text,
    rg text,
    fantasy_name text,
    normalized_fantasy_name text,
    opening_date date,
    registration_status_date date,
    company_type text,
    company_size text,
    enriched boolean NOT NULL DEFAULT false,
    -- API keys are scoped by tenant; NULL = shared data (everything the pipeline writes today).
    tenant text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chk_parties_sex CHECK (sex IN ('M', 'F')),
    CONSTRAINT chk_parties_cpf_cnpj_digits CHECK (cpf_cnpj ~ '^[0-9]{11}$|^[0-9]{14}$')
);
-- Lookup by CPF takes the newest row: the index serves both the filter and the ORDER BY.
CREATE INDEX idx_parties_cpf_cnpj ON core.parties (cpf_cnpj, updated_at DESC)
    WHERE cpf_cnpj IS NOT NULL;
CREATE INDEX idx_parties_tenant ON core.parties (tenant) WHERE tenant IS NOT NULL;
-- Case- and accent-insensitive "contains" search on the name (search_name LIKE '%x%').
CREATE INDEX idx_parties_name_trgm ON core.parties USING gin (search_name gin_trgm_ops);

CREATE TABLE core.people (
    party_id uuid PRIMARY KEY REFERENCES core.parties (id) ON DELETE CASCADE,
    full_name text NOT NULL,
    mothers_name text,
    fathers_name text,
    birth_date date,
    -- squawk-ignore ban-char-field
    sex char(1),
    marital_status text,
    document_cpf text,
    rg text,
    occupation text,
    income numeric(14, 2),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chk_people_sex CHECK (sex IN ('M', 'F'))
);

CREATE TABLE core.companies (
    party_id uuid PRIMARY KEY REFERENCES core.parties (id) ON DELETE CASCADE,
    legal_name text NOT NULL,
    trade_name text,
    cnpj text,
    company_size text,
    industry text,
    foundation_date date,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE core.party_contacts (
    contact_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    party_id uuid NOT NULL REFERENCES core.parties (id) ON DELETE CASCADE,
    contact_type core.contact_type_enum NOT NULL,
    -- e-mails lower-cased and trimmed, phones digits only (DDD + number, no 55)
    value text NOT NULL,
    is_primary boolean NOT NULL DEFAULT false,
    is_verified boolean NOT NULL DEFAULT false,
    is_whatsapp boolean NOT NULL DEFAULT false,
    source text,
    confidence numeric(3, 2),
    valid_from timestamptz NOT NULL DEFAULT now(),
    valid_to timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Also the index that loads a party's contacts (party_id is its first column).
    CONSTRAINT uq_party_contact_unique UNIQUE (party_id, contact_type, value),
    CONSTRAINT chk_party_contacts_confidence CHECK (confidence BETWEEN 0 AND 1),
    CONSTRAINT chk_party_contacts_value CHECK (value <> '')
);
-- Lookups by e-mail or phone filter on the value and the type.
CREATE INDEX idx_party_contacts_value ON core.party_contacts (value, contact_type);

CREATE TABLE core.addresses (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    street_type text,
    street text,
    number text,
    complement text,
    neighborhood text,
    city text,
    state text,
    zip_code text,
    latitude numeric(9, 6),
    longitude numeric(9, 6),
    formatted_address text,
    -- Digest of the normalised street|number|complement|zip|city|state: re-enrichment finds the
    -- row again instead of inserting a duplicate.
    hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_addresses_hash UNIQUE (hash),
    CONSTRAINT chk_addresses_zip_code CHECK (zip_code ~ '^[0-9]{8}$'),
    CONSTRAINT chk_addresses_state_uf CHECK (state ~ '^[A-Z]{2}$')
);

CREATE TABLE core.party_addresses (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    party_id uuid NOT NULL REFERENCES core.parties (id) ON DELETE CASCADE,
    address_id uuid NOT NULL REFERENCES core.addresses (id) ON DELETE CASCADE,
    address_type text NOT NULL DEFAULT 'residential',
    is_primary boolean NOT NULL DEFAULT false,
    is_current boolean NOT NULL DEFAULT true,
    verified boolean NOT NULL DEFAULT false,
    confidence_score numeric(3, 2) NOT NULL DEFAULT 0.80,
    metadata jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Also the index that loads a party's addresses.
    CONSTRAINT uq_party_address_link UNIQUE (party_id, address_id),
    CONSTRAINT chk_party_addresses_type
        CHECK (address_type IN ('residential', 'commercial', 'billing', 'family_member', 'other')),
    CONSTRAINT chk_party_addresses_confidence CHECK (confidence_score BETWEEN 0 AND 1)
);
-- At most one primary address per party.
CREATE UNIQUE INDEX idx_party_addresses_primary ON core.party_addresses (party_id)
    WHERE is_primary;
-- Serves the foreign key (deleting an address) and "who lives here" queries.
CREATE INDEX idx_party_addresses_address ON core.party_addresses (address_id);

-- The CURRENT enrichment of a party (one row per party, upserted). Every enrichment is also
-- appended to core.party_enrichment_history (ADR 0001).
CREATE TABLE core.party_enrichments (
    enrichment_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    party_id uuid NOT NULL REFERENCES core.parties (id) ON DELETE CASCADE,
    provider text NOT NULL DEFAULT 'work_api',
    lead_id text,
    raw_payload jsonb NOT NULL,
    -- msgspec JSON of domain.dossier.NormalizedPerson (never a placeholder '{}').
    normalized_data jsonb,
    quality_score numeric(4, 3),
    enriched_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Also the index of lookups joining a party to its enrichment.
    CONSTRAINT uq_party_enrichments_party UNIQUE (party_id),
    CONSTRAINT chk_party_enrichments_quality CHECK (quality_score BETWEEN 0 AND 1)
);

-- Append-only log of every enrichment ever stored (ADR 0001).
CREATE TABLE core.party_enrichment_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    party_id uuid NOT NULL REFERENCES core.parties (id) ON DELETE CASCADE,
    provider text NOT NULL,
    lead_id text,
    raw_payload jsonb NOT NULL,
    normalized_data jsonb,
    quality_score numeric(4, 3),
    enriched_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chk_party_enrichment_history_quality CHECK (quality_score BETWEEN 0 AND 1)
);
CREATE INDEX idx_party_enrichment_history_party
    ON core.party_enrichment_history (party_id, enriched_at DESC);

-- History rows are facts: refuse UPDATE. DELETE stays possible so that erasing a party (its
-- ON DELETE CASCADE) and retention jobs keep working.
CREATE FUNCTION core.reject_update() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER trg_party_enrichment_history_append_only
    BEFORE UPDATE ON core.party_enrichment_history
    FOR EACH ROW EXECUTE FUNCTION core.reject_update();

-- migrate:down
SET lock_timeout = '5s';
SET statement_timeout = '60s';
DROP TABLE core.party_enrichment_history;
DROP FUNCTION core.reject_update();
DROP TABLE core.party_enrichments;
DROP TABLE core.party_addresses;
DROP TABLE core.addresses;
DROP TABLE core.party_contacts;
DROP TABLE core.companies;
DROP TABLE core.people;
DROP TABLE core.parties;
DROP FUNCTION core.search_key(text);
DROP TYPE core.contact_type_enum;
DROP TYPE core.party_type_enum;
