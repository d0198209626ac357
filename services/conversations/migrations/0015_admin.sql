-- Operator administration (issue 13): online re-sealing of secrets under
-- the current encryption key, and disabling channel accounts.
--
-- Secrets are sealed by the service, one key id per row. After an operator
-- puts a new key first in FARO_ENCRYPTION_KEYS, `faro admin reseal` moves
-- every row still under an older key to the new one, a few rows per
-- transaction. The service role cannot read the sealed columns of meta_apps
-- (nor any tenant's channel accounts without its tenant set), so these
-- narrow functions do it, owned by a role of their own that can read and
-- write those two tables and nothing else (table grants: the send-credential
-- columns only appear in 0016). The service role may call them; it already
-- holds the keys, so they give it no secret it could not open anyway.
--
-- plpgsql: the bodies are checked when first run, so this file (numbered
-- before 0016, which adds channel_accounts.send_key_id) applies to a fresh
-- database in order as well as to one that already has 0016.
DO $$ BEGIN
    CREATE ROLE faro_keys NOLOGIN BYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
GRANT USAGE ON SCHEMA public TO faro_keys;
GRANT SELECT, UPDATE ON meta_apps, channel_accounts TO faro_keys;

-- Locks (in the caller's transaction) up to p_limit apps sealed under
-- another key than p_current, after p_after in id order (a row being
-- changed by an operator meanwhile is waited for, then re-read).
CREATE FUNCTION faro_reseal_apps_lock(p_current text, p_after uuid, p_limit int)
    RETURNS TABLE (app_id uuid, key_id text, app_secret_enc bytea, verify_token_enc bytea)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$ BEGIN
        RETURN QUERY
        SELECT a.id, a.key_id, a.app_secret_enc, a.verify_token_enc
        FROM meta_apps a
        WHERE a.key_id <> p_current AND a.id > p_after
        ORDER BY a.id LIMIT p_limit
        FOR UPDATE;
    END $$;

-- Writes one app's re-sealed secrets, only if it is still under p_old.
CREATE FUNCTION faro_reseal_apps_write(p_id uuid, p_old text, p_new text,
                                       p_secret bytea, p_token bytea)
    RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$ BEGIN
        UPDATE meta_apps SET key_id = p_new, app_secret_enc = p_secret, verify_token_enc = p_token
        WHERE id = p_id AND key_id = p_old;
        RETURN FOUND;
    END $$;

CREATE FUNCTION faro_reseal_credentials_lock(p_current text, p_after uuid, p_limit int)
    RETURNS TABLE (account_id uuid, key_id text, credential_enc bytea)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$ BEGIN
        RETURN QUERY
        SELECT ca.id, ca.send_key_id, ca.send_credential_enc
        FROM channel_accounts ca
        WHERE ca.send_key_id IS NOT NULL AND ca.send_key_id <> p_current AND ca.id > p_after
        ORDER BY ca.id LIMIT p_limit
        FOR UPDATE;
    END $$;

CREATE FUNCTION faro_reseal_credentials_write(p_id uuid, p_old text, p_new text, p_enc bytea)
    RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$ BEGIN
        UPDATE channel_accounts SET send_key_id = p_new, send_credential_enc = p_enc
        WHERE id = p_id AND send_key_id = p_old;
        RETURN FOUND;
    END $$;

DO $$
DECLARE f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['faro_reseal_apps_lock(text, uuid, int)',
                             'faro_reseal_apps_write(uuid, text, text, bytea, bytea)',
                             'faro_reseal_credentials_lock(text, uuid, int)',
                             'faro_reseal_credentials_write(uuid, text, text, bytea)'] LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO faro_keys', f);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO faro_app', f);
    END LOOP;
END $$;

-- A disabled channel account stays (its conversations keep their account) but
-- no longer routes: webhooks naming it are refused as from an unknown account,
-- and it no longer lets its app's verify token pass Meta's handshake.
ALTER TABLE channel_accounts ADD COLUMN disabled_at timestamptz;

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
        WHERE ca.channel = p_channel AND ca.external_account_id = ANY (p_external_ids)
          AND ca.disabled_at IS NULL
    $$;

CREATE OR REPLACE FUNCTION faro_apps_by_verify_token(p_hash bytea, p_channel text)
    RETURNS TABLE (app_id uuid, key_id text, verify_token_enc bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        SELECT a.id, a.key_id, a.verify_token_enc
        FROM meta_apps a
        WHERE a.verify_token_hash = p_hash
          AND EXISTS (SELECT 1 FROM channel_accounts ca
                      WHERE ca.app_id = a.id AND ca.channel = p_channel
                        AND ca.disabled_at IS NULL)
          AND NOT EXISTS (SELECT 1 FROM channel_accounts ca
                          WHERE ca.app_id = a.id AND ca.channel = 'whatsapp'
                            AND ca.external_account_id LIKE '+%')
    $$;
