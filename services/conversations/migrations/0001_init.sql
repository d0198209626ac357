-- FARO's first schema. Every tenant table carries tenant_id, keys on it, and has
-- row-level security ENABLED and FORCED. The service queries as faro_app, which
-- neither owns these tables nor bypasses RLS; it sets `faro.tenant_id` per
-- transaction. With no tenant set, nothing is visible.

-- Roles are cluster-wide; tolerate another database's migration creating them concurrently.
DO $$ BEGIN
    CREATE ROLE faro_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

-- Owns the one narrow lookup that must run before the tenant is known.
DO $$ BEGIN
    CREATE ROLE faro_router NOLOGIN BYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

CREATE FUNCTION faro_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT NULLIF(current_setting('faro.tenant_id', true), '')::uuid $$;

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE locations (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- A Meta app (or a BSP endpoint) whose secret signs webhooks. FARO's own apps
-- serve many tenants (owner_tenant_id NULL); a tenant may bring its own.
-- Secrets are AES-256-GCM sealed by the service; key_id names the key.
CREATE TABLE meta_apps (
    id                  uuid PRIMARY KEY,
    meta_app_id         text NOT NULL UNIQUE CHECK (length(meta_app_id) BETWEEN 1 AND 100),
    name                text NOT NULL,
    owner_tenant_id     uuid REFERENCES tenants (id),
    key_id              text NOT NULL,
    app_secret_enc      bytea NOT NULL,
    verify_token_enc    bytea NOT NULL,
    -- SHA-256 of the verify token, so the handshake finds its app by index.
    verify_token_hash   bytea NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX meta_apps_verify_token_hash ON meta_apps (verify_token_hash);

CREATE TABLE channel_accounts (
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    id                  uuid NOT NULL,
    location_id         uuid NOT NULL,
    channel             text NOT NULL CHECK (channel IN ('whatsapp', 'facebook_messenger', 'instagram_dm',
                                                          'google_business', 'sms', 'email')),
    -- WhatsApp phone_number_id, Facebook page id or Instagram account id.
    external_account_id text NOT NULL CHECK (length(external_account_id) BETWEEN 1 AND 100),
    app_id              uuid NOT NULL REFERENCES meta_apps (id),
    display_name        text NOT NULL DEFAULT '',
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, location_id) REFERENCES locations (tenant_id, id),
    -- Webhook routing needs one owner per account. When the schema is distributed
    -- by tenant this becomes a reference table of routes.
    UNIQUE (channel, external_account_id)
);

CREATE TABLE conversations (
    tenant_id               uuid NOT NULL REFERENCES tenants (id),
    id                      uuid NOT NULL,
    location_id             uuid NOT NULL,
    channel                 text NOT NULL CHECK (channel IN ('whatsapp', 'facebook_messenger', 'instagram_dm',
                                                              'google_business', 'sms', 'email')),
    -- The customer's id on the channel: wa_id, PSID or IGSID.
    customer_id             text NOT NULL,
    customer_name           text,
    customer_phone          text,
    customer_email          text,
    channel_conversation_id text,
    source_type             text NOT NULL DEFAULT 'direct'
                            CHECK (source_type IN ('review_response', 'story_dm', 'listing_inquiry', 'direct')),
    linked_review_id        text,
    linked_listing_source   text,
    status                  text NOT NULL DEFAULT 'new'
                            CHECK (status IN ('new', 'open', 'quoted', 'booked', 'converted', 'archived')),
    assigned_to_user_id     text,
    lead_status             text CHECK (lead_status IN ('qualified', 'interested', 'converted')),
    tags                    text[] NOT NULL DEFAULT '{}',
    last_message_at         timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, location_id) REFERENCES locations (tenant_id, id),
    UNIQUE (tenant_id, location_id, channel, customer_id)
);
CREATE INDEX conversations_recent ON conversations (tenant_id, last_message_at DESC NULLS LAST, id);

CREATE TABLE messages (
    tenant_id           uuid NOT NULL,
    id                  uuid NOT NULL,
    conversation_id     uuid NOT NULL,
    sender_type         text NOT NULL CHECK (sender_type IN ('customer', 'agent')),
    text                text,
    media_urls          text[] NOT NULL DEFAULT '{}',
    direction           text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    channel             text NOT NULL,
    channel_message_id  text NOT NULL CHECK (length(channel_message_id) BETWEEN 1 AND 512),
    message_type        text NOT NULL,
    sender_id           text,
    recipient_id        text,
    -- The platform's time: threads are ordered by it, never by arrival.
    "timestamp"         timestamptz NOT NULL,
    delivered_at        timestamptz,
    read_at             timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    metadata            jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id),
    -- Exactly once: a retried webhook or a redelivered job conflicts here.
    UNIQUE (tenant_id, channel, channel_message_id)
);
CREATE INDEX messages_thread ON messages (tenant_id, conversation_id, "timestamp", id);

-- Row-level security: enabled and forced on every tenant table.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = faro_current_tenant()) WITH CHECK (id = faro_current_tenant());

ALTER TABLE meta_apps ENABLE ROW LEVEL SECURITY;
ALTER TABLE meta_apps FORCE ROW LEVEL SECURITY;
-- A tenant sees the apps it brought; FARO's own apps are written with no tenant set.
CREATE POLICY tenant_isolation ON meta_apps
    USING (owner_tenant_id = faro_current_tenant())
    WITH CHECK (owner_tenant_id IS NOT DISTINCT FROM faro_current_tenant());

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['locations', 'channel_accounts', 'conversations', 'messages'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = faro_current_tenant()) '
                       'WITH CHECK (tenant_id = faro_current_tenant())', t);
    END LOOP;
END $$;

GRANT USAGE ON SCHEMA public TO faro_app, faro_router;
GRANT SELECT, INSERT, UPDATE ON tenants, locations, channel_accounts, conversations, messages TO faro_app;
-- Secrets never leave through a plain SELECT: only non-secret columns are readable.
GRANT SELECT (id, meta_app_id, name, owner_tenant_id, created_at), INSERT ON meta_apps TO faro_app;
GRANT SELECT ON channel_accounts, meta_apps TO faro_router;

-- Webhook routing: the external account ids a payload names -> tenant, location,
-- and the sealed secret of the app that signs them. Nothing else.
CREATE FUNCTION faro_resolve_channel_accounts(p_channel text, p_external_ids text[])
    RETURNS TABLE (external_account_id text, tenant_id uuid, location_id uuid, channel_account_id uuid,
                   app_id uuid, meta_app_id text, key_id text, app_secret_enc bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        SELECT ca.external_account_id, ca.tenant_id, ca.location_id, ca.id,
               a.id, a.meta_app_id, a.key_id, a.app_secret_enc
        FROM channel_accounts ca
        JOIN meta_apps a ON a.id = ca.app_id
        WHERE ca.channel = p_channel AND ca.external_account_id = ANY (p_external_ids)
    $$;

-- The subscription handshake: apps whose verify token hashes to p_hash.
CREATE FUNCTION faro_apps_by_verify_token(p_hash bytea)
    RETURNS TABLE (app_id uuid, key_id text, verify_token_enc bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$ SELECT id, key_id, verify_token_enc FROM meta_apps WHERE verify_token_hash = p_hash $$;

ALTER FUNCTION faro_resolve_channel_accounts(text, text[]) OWNER TO faro_router;
ALTER FUNCTION faro_apps_by_verify_token(bytea) OWNER TO faro_router;
REVOKE ALL ON FUNCTION faro_resolve_channel_accounts(text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION faro_apps_by_verify_token(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION faro_resolve_channel_accounts(text, text[]) TO faro_app;
GRANT EXECUTE ON FUNCTION faro_apps_by_verify_token(bytea) TO faro_app;
