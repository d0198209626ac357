-- A reply worker's claims for many tenants in ONE call (issue 14). The claim
-- was one UPDATE a tenant, each its own round trip after switching
-- faro.tenant_id; a batch at 1,000 replies/s holds about one reply a tenant,
-- so those statements cost as much as the replies themselves. This loops over
-- the tenants inside the database instead: before each tenant's UPDATE it
-- switches faro.tenant_id, so RLS still scopes every statement to one tenant
-- (it runs as its caller, faro_app; no privilege is added). The tenant the
-- transaction saw before the call is restored at the end.
--
-- p_tenants, p_ids and p_claims are in step (one element a claim). Returns the
-- claimed messages whole, with their location, claim, reply metadata and the
-- account's sealed credential (services/conversations/src/replies/delivery.rs).

CREATE FUNCTION faro_claim_replies(p_tenants uuid[], p_ids uuid[], p_claims text[], p_ttl float8)
    RETURNS TABLE (r_message messages, r_location_id uuid, r_claim text, r_reply jsonb,
                   r_account_id uuid, r_external_account_id text, r_send_key_id text,
                   r_send_credential_enc bytea)
    LANGUAGE plpgsql AS $$
DECLARE
    v_before text := current_setting('faro.tenant_id', true);
    v_tenant uuid;
BEGIN
    FOR v_tenant IN SELECT DISTINCT u.t FROM unnest(p_tenants) AS u(t) ORDER BY 1 LOOP
        PERFORM set_config('faro.tenant_id', v_tenant::text, true);
        RETURN QUERY
        UPDATE messages m SET metadata = jsonb_set(m.metadata, '{reply,claim}',
                 jsonb_build_object('by', j.claim, 'at', extract(epoch FROM now())))
        FROM (SELECT u.id, u.claim FROM unnest(p_tenants, p_ids, p_claims) AS u(tenant, id, claim)
              WHERE u.tenant = v_tenant) j,
             channel_accounts ca
        WHERE m.tenant_id = v_tenant AND m.id = j.id AND m.status = 'pending' AND m.metadata ? 'reply'
          AND (m.metadata #>> '{reply,claim,by}' IS NULL
               OR m.metadata #>> '{reply,claim,by}' = j.claim
               OR (m.metadata #>> '{reply,claim,at}')::float8 < extract(epoch FROM now()) - p_ttl)
          AND ca.tenant_id = m.tenant_id AND ca.id = (m.metadata #>> '{reply,account}')::uuid
        RETURNING m, (SELECT c.location_id FROM conversations c
                      WHERE c.tenant_id = m.tenant_id AND c.id = m.conversation_id),
                  j.claim, m.metadata -> 'reply', ca.id, ca.external_account_id, ca.send_key_id,
                  ca.send_credential_enc;
    END LOOP;
    PERFORM set_config('faro.tenant_id', coalesce(v_before, ''), true);
END
$$;

GRANT EXECUTE ON FUNCTION faro_claim_replies(uuid[], uuid[], text[], float8) TO faro_app;
