-- A tenant's own rate of verified webhooks (per platform), set by an operator
-- (`faro admin set-rate-limit`). NULL = the edge's default. The edge reads it
-- with the routes it already resolves and caches, so a limit costs no extra
-- lookup and follows the route cache (FARO_ROUTE_CACHE_MS) when changed.
ALTER TABLE tenants
    ADD COLUMN webhook_per_minute integer CHECK (webhook_per_minute BETWEEN 1 AND 60000000),
    ADD COLUMN webhook_burst      integer CHECK (webhook_burst BETWEEN 1 AND 1000000),
    ADD CONSTRAINT tenants_webhook_rate_whole
        CHECK ((webhook_per_minute IS NULL) = (webhook_burst IS NULL));

-- The routing function returns the rate beside each route. Its result type
-- changes, so it is dropped and created again (same grants).
DROP FUNCTION faro_resolve_channel_accounts(text, text[]);

CREATE FUNCTION faro_resolve_channel_accounts(p_channel text, p_external_ids text[])
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
        WHERE ca.channel = p_channel AND ca.external_account_id = ANY (p_external_ids)
    $$;

GRANT SELECT (id, webhook_per_minute, webhook_burst) ON tenants TO faro_router;
ALTER FUNCTION faro_resolve_channel_accounts(text, text[]) OWNER TO faro_router;
REVOKE ALL ON FUNCTION faro_resolve_channel_accounts(text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION faro_resolve_channel_accounts(text, text[]) TO faro_app;
