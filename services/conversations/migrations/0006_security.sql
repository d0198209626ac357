-- Two cross-tenant functions made narrower.
--
-- 1. Meta's subscription handshake. Until now any registered app's verify
--    token passed it on every Meta path, including the placeholder token of a
--    YCloud endpoint (YCloud has no handshake, so the operator passes anything).
--    A token now passes only on a channel the app has an account connected on,
--    and never for an app serving YCloud numbers: YCloud's route is keyed by
--    the business number as +E.164, which Meta's phone_number_id never is.
DROP FUNCTION faro_apps_by_verify_token(bytea);

CREATE FUNCTION faro_apps_by_verify_token(p_hash bytea, p_channel text)
    RETURNS TABLE (app_id uuid, key_id text, verify_token_enc bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        SELECT a.id, a.key_id, a.verify_token_enc
        FROM meta_apps a
        WHERE a.verify_token_hash = p_hash
          AND EXISTS (SELECT 1 FROM channel_accounts ca
                      WHERE ca.app_id = a.id AND ca.channel = p_channel)
          AND NOT EXISTS (SELECT 1 FROM channel_accounts ca
                          WHERE ca.app_id = a.id AND ca.channel = 'whatsapp'
                            AND ca.external_account_id LIKE '+%')
    $$;

ALTER FUNCTION faro_apps_by_verify_token(bytea, text) OWNER TO faro_router;
REVOKE ALL ON FUNCTION faro_apps_by_verify_token(bytea, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION faro_apps_by_verify_token(bytea, text) TO faro_app;

-- 2. Expiring pending events. faro_expire_pending_events deletes across
--    tenants; granted to faro_app, any session of the service role could wipe
--    every tenant's waiting events. Only the sweeper's own role may call it
--    now, and that role can do nothing else: no table grants at all.
DO $$ BEGIN
    CREATE ROLE faro_sweeper LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

GRANT USAGE ON SCHEMA public TO faro_sweeper;
REVOKE EXECUTE ON FUNCTION faro_expire_pending_events(interval) FROM faro_app;
GRANT EXECUTE ON FUNCTION faro_expire_pending_events(interval) TO faro_sweeper;
