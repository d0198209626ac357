-- Operator administration, part two (issue 13): disabling tenants, locations
-- and Meta apps, listing across tenants, and an operator role of its own.
--
-- Who may do what:
-- * faro_app (the service role) works inside one tenant under RLS. It lists
--   and disables that tenant's locations and agents, and may no longer change
--   a tenant's disabled state (only its webhook rate): a tenant-scoped
--   session cannot re-enable its own tenant.
-- * faro_operator (LOGIN, no table grants, no BYPASSRLS) is the role the
--   conversations service connects with for operator RPCs that span tenants:
--   listing tenants and apps, disabling tenants and apps, and re-sealing
--   secrets (the functions of 0015, taken away from faro_app here).
-- * faro_registry (NOLOGIN, BYPASSRLS) owns the cross-tenant functions and can
--   read and write exactly the columns they need; never a sealed value.

ALTER TABLE tenants ADD COLUMN disabled_at timestamptz;
ALTER TABLE locations ADD COLUMN disabled_at timestamptz;
ALTER TABLE meta_apps ADD COLUMN disabled_at timestamptz;

DO $$ BEGIN
    CREATE ROLE faro_operator LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
DO $$ BEGIN
    CREATE ROLE faro_registry NOLOGIN BYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
GRANT USAGE ON SCHEMA public TO faro_operator, faro_registry;
GRANT SELECT (id, name, created_at, disabled_at), UPDATE (disabled_at) ON tenants TO faro_registry;
GRANT SELECT (id, meta_app_id, name, owner_tenant_id, created_at, disabled_at), UPDATE (disabled_at)
    ON meta_apps TO faro_registry;

-- The service role keeps changing a tenant's rate, nothing else of the row.
REVOKE UPDATE ON tenants FROM faro_app;
GRANT UPDATE (webhook_per_minute, webhook_burst) ON tenants TO faro_app;

-- Tenants, in id order after p_after, at most p_limit (1..=1000).
CREATE FUNCTION faro_admin_list_tenants(p_after uuid, p_limit int)
    RETURNS TABLE (id uuid, name text, disabled boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        SELECT t.id, t.name, t.disabled_at IS NOT NULL FROM tenants t
        WHERE t.id > p_after ORDER BY t.id LIMIT least(greatest(p_limit, 1), 1000)
    $$;

CREATE FUNCTION faro_admin_set_tenant_disabled(p_id uuid, p_disabled boolean)
    RETURNS TABLE (id uuid, name text, disabled boolean)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        UPDATE tenants t SET disabled_at = CASE WHEN p_disabled THEN COALESCE(t.disabled_at, now()) END
        WHERE t.id = p_id
        RETURNING t.id, t.name, t.disabled_at IS NOT NULL
    $$;

-- Meta apps (FARO's own and tenants'), never a sealed column.
CREATE FUNCTION faro_admin_list_apps(p_after uuid, p_limit int)
    RETURNS TABLE (id uuid, meta_app_id text, name text, owner_tenant_id uuid, disabled boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        SELECT a.id, a.meta_app_id, a.name, a.owner_tenant_id, a.disabled_at IS NOT NULL
        FROM meta_apps a
        WHERE a.id > p_after ORDER BY a.id LIMIT least(greatest(p_limit, 1), 1000)
    $$;

CREATE FUNCTION faro_admin_set_app_disabled(p_id uuid, p_disabled boolean)
    RETURNS TABLE (id uuid, meta_app_id text, name text, owner_tenant_id uuid, disabled boolean)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        UPDATE meta_apps a SET disabled_at = CASE WHEN p_disabled THEN COALESCE(a.disabled_at, now()) END
        WHERE a.id = p_id
        RETURNING a.id, a.meta_app_id, a.name, a.owner_tenant_id, a.disabled_at IS NOT NULL
    $$;

DO $$
DECLARE f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['faro_admin_list_tenants(uuid, int)',
                             'faro_admin_set_tenant_disabled(uuid, boolean)',
                             'faro_admin_list_apps(uuid, int)',
                             'faro_admin_set_app_disabled(uuid, boolean)'] LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO faro_registry', f);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO faro_operator', f);
    END LOOP;
END $$;

-- Re-sealing is an operator's act: the service role may no longer call it.
DO $$
DECLARE f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['faro_reseal_apps_lock(text, uuid, int)',
                             'faro_reseal_apps_write(uuid, text, text, bytea, bytea)',
                             'faro_reseal_credentials_lock(text, uuid, int)',
                             'faro_reseal_credentials_write(uuid, text, text, bytea)'] LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM faro_app', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO faro_operator', f);
    END LOOP;
END $$;

-- Routing skips what is disabled: the account (0015), its location, its
-- tenant, or the app whose secret signs it. The edge then answers 401
-- unknown_account and stores nothing.
GRANT SELECT (tenant_id, id, disabled_at) ON locations TO faro_router;
GRANT SELECT (disabled_at) ON tenants TO faro_router;

CREATE OR REPLACE FUNCTION faro_resolve_channel_accounts(p_channel text, p_external_ids text[])
    RETURNS TABLE (external_account_id text, tenant_id uuid, location_id uuid, channel_account_id uuid,
                   app_id uuid, meta_app_id text, key_id text, app_secret_enc bytea,
                   webhook_per_minute integer, webhook_burst integer)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        SELECT ca.external_account_id, ca.tenant_id, ca.location_id, ca.id,
               a.id, a.meta_app_id, a.key_id, a.app_secret_enc,
               t.webhook_per_minute, t.webhook_burst
        FROM channel_accounts ca
        JOIN meta_apps a ON a.id = ca.app_id
        JOIN tenants t ON t.id = ca.tenant_id
        JOIN locations l ON l.tenant_id = ca.tenant_id AND l.id = ca.location_id
        WHERE ca.channel = p_channel AND ca.external_account_id = ANY (p_external_ids)
          AND ca.disabled_at IS NULL AND a.disabled_at IS NULL
          AND t.disabled_at IS NULL AND l.disabled_at IS NULL
    $$;

-- Meta's handshake: a disabled app's token no longer passes, nor one whose
-- only live accounts are under disabled tenants or locations.
CREATE OR REPLACE FUNCTION faro_apps_by_verify_token(p_hash bytea, p_channel text)
    RETURNS TABLE (app_id uuid, key_id text, verify_token_enc bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        SELECT a.id, a.key_id, a.verify_token_enc
        FROM meta_apps a
        WHERE a.verify_token_hash = p_hash AND a.disabled_at IS NULL
          AND EXISTS (SELECT 1 FROM channel_accounts ca
                      JOIN tenants t ON t.id = ca.tenant_id
                      JOIN locations l ON l.tenant_id = ca.tenant_id AND l.id = ca.location_id
                      WHERE ca.app_id = a.id AND ca.channel = p_channel
                        AND ca.disabled_at IS NULL AND t.disabled_at IS NULL
                        AND l.disabled_at IS NULL)
          AND NOT EXISTS (SELECT 1 FROM channel_accounts ca
                          WHERE ca.app_id = a.id AND ca.channel = 'whatsapp'
                            AND ca.external_account_id LIKE '+%')
    $$;
