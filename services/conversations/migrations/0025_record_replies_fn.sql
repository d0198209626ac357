-- Recording the platforms' answers for many tenants in one call (issue 14):
-- per tenant it was four round trips (switch the tenant, UPDATE, apply the
-- events parked for the new ids, read the threads again). Like 0023 and
-- 0024, this loops over the tenants inside the database, switching
-- faro.tenant_id before each tenant's statements so RLS scopes them to it (it
-- runs as its caller), and restores the tenant seen before the call.
--
-- p_tenants, p_ids, p_pids and p_errors are in step, one element an answer:
-- a platform id (p_errors NULL) or an error (p_pids NULL). The statements are
-- the per-tenant ones record.rs ran before (called from
-- services/conversations/src/replies/record.rs). A reply whose
-- platform id another row already holds keeps its placeholder here and gets
-- no parked events: the caller merges the echo holding it (rare).
-- Returns every reply named, as it is now, with its location and thread.
CREATE FUNCTION faro_record_replies(p_tenants uuid[], p_ids uuid[], p_pids text[], p_errors jsonb[])
    RETURNS TABLE (r_message messages, r_location_id uuid, r_thread conversations)
    LANGUAGE plpgsql AS $$
DECLARE
    v_before text := current_setting('faro.tenant_id', true);
    v_tenant uuid;
    v_channels text[];
    v_targets text[];
BEGIN
    FOR v_tenant IN SELECT DISTINCT u.t FROM unnest(p_tenants) AS u(t) ORDER BY 1 LOOP
        PERFORM set_config('faro.tenant_id', v_tenant::text, true);
        UPDATE messages m SET
            status = CASE WHEN m.status = 'pending' THEN 'failed' ELSE m.status END,
            status_error = CASE WHEN m.status = 'pending' THEN j.error ELSE m.status_error END,
            failed_at = CASE WHEN m.status = 'pending' THEN now() ELSE m.failed_at END
        FROM (SELECT u.id, u.error FROM unnest(p_tenants, p_ids, p_errors) AS u(tenant, id, error)
              WHERE u.tenant = v_tenant AND u.error IS NOT NULL) j
        WHERE m.tenant_id = v_tenant AND m.id = j.id;
        WITH s AS (
            UPDATE messages m SET
                channel_message_id = CASE WHEN EXISTS (
                        SELECT 1 FROM messages x WHERE x.tenant_id = m.tenant_id
                          AND x.channel = m.channel AND x.channel_message_id = j.pid AND x.id <> m.id)
                    THEN m.channel_message_id ELSE j.pid END,
                status = CASE WHEN m.status = 'pending' THEN 'sent' ELSE m.status END,
                metadata = jsonb_set(m.metadata, '{reply,platform_message_id}', to_jsonb(j.pid))
            FROM (SELECT u.id, u.pid FROM unnest(p_tenants, p_ids, p_pids) AS u(tenant, id, pid)
                  WHERE u.tenant = v_tenant AND u.pid IS NOT NULL) j
            WHERE m.tenant_id = v_tenant AND m.id = j.id
            RETURNING m.channel, m.channel_message_id)
        SELECT array_agg(s.channel), array_agg(s.channel_message_id) INTO v_channels, v_targets
        FROM s WHERE s.channel_message_id NOT LIKE 'faro:%';
        IF v_channels IS NOT NULL THEN
            PERFORM faro_apply_pending_events(v_tenant, v_channels, v_targets);
        END IF;
        -- Each message and thread by its key (a generic plan could otherwise
        -- scan a tenant).
        RETURN QUERY
        SELECT mm.msg, (c.thread).location_id, c.thread
        FROM (SELECT DISTINCT u.id FROM unnest(p_tenants, p_ids) AS u(tenant, id)
              WHERE u.tenant = v_tenant) j
        CROSS JOIN LATERAL (SELECT m AS msg, m.conversation_id FROM messages m
                            WHERE m.tenant_id = v_tenant AND m.id = j.id LIMIT 1) mm
        CROSS JOIN LATERAL (SELECT t AS thread FROM conversations t
                            WHERE t.tenant_id = v_tenant AND t.id = mm.conversation_id LIMIT 1) c;
    END LOOP;
    PERFORM set_config('faro.tenant_id', coalesce(v_before, ''), true);
END
$$;

GRANT EXECUTE ON FUNCTION faro_record_replies(uuid[], uuid[], text[], jsonb[]) TO faro_app;
