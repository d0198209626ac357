-- Storing a batch of agents' replies for many tenants in two calls (issue 14):
-- the look-up and the insert were one statement a tenant each, each its own
-- round trip after switching faro.tenant_id, so at one reply a tenant a batch
-- paid three round trips a reply. Like faro_claim_replies (0023), these loop
-- over the tenants inside the database, switching faro.tenant_id before each
-- tenant's statement so RLS scopes it to that tenant (they run as their
-- caller), and restore the tenant seen before the call.
--
-- The statements are the per-tenant ones create.rs ran before (called from
-- services/conversations/src/replies/create.rs); the arrays are in step,
-- one element a reply, sorted by (tenant, thread, ord): the threads are
-- locked in that order.

-- What every reply needs: its thread (locked; no row for a thread of another
-- tenant or of a disabled location), the key's first use, the channel
-- account (the one the customer last wrote to, else the location's first on
-- that channel) and the replied-to message.
CREATE FUNCTION faro_lookup_replies(p_tenants uuid[], p_ord int4[], p_threads uuid[],
                                    p_keys text[], p_reply_to uuid[])
    RETURNS TABLE (r_ord int4, r_thread conversations, r_first_id uuid, r_first_hash bytea,
                   r_account_id uuid, r_external_account_id text, r_human_agent boolean,
                   r_has_credential boolean, r_reply_to_found boolean, r_reply_to_pid text)
    LANGUAGE plpgsql AS $$
DECLARE
    v_before text := current_setting('faro.tenant_id', true);
    v_tenant uuid;
BEGIN
    FOR v_tenant IN SELECT DISTINCT u.t FROM unnest(p_tenants) AS u(t) ORDER BY 1 LOOP
        PERFORM set_config('faro.tenant_id', v_tenant::text, true);
        RETURN QUERY
        SELECT j.ord, c.thread, r.message_id, r.request_hash,
               a.id, a.external_account_id, a.human_agent, a.has_credential,
               rt.id IS NOT NULL, rt.channel_message_id
        FROM (SELECT u.ord, u.conversation_id, u.key, u.reply_to
              FROM unnest(p_tenants, p_ord, p_threads, p_keys, p_reply_to)
                   AS u(tenant, ord, conversation_id, key, reply_to)
              WHERE u.tenant = v_tenant) j
        -- Each thread by its key (a generic plan could otherwise scan a tenant).
        JOIN LATERAL (SELECT t AS thread, t.id, t.tenant_id, t.location_id, t.channel
                      FROM conversations t
                      WHERE t.tenant_id = v_tenant AND t.id = j.conversation_id LIMIT 1) c
          ON NOT EXISTS (SELECT 1 FROM locations dl
                         WHERE dl.tenant_id = c.tenant_id AND dl.id = c.location_id
                           AND dl.disabled_at IS NOT NULL)
        LEFT JOIN reply_requests r ON r.tenant_id = v_tenant AND r.idempotency_key = j.key
        LEFT JOIN LATERAL (
            SELECT ca.id, ca.external_account_id, ca.human_agent,
                   ca.send_credential_enc IS NOT NULL AS has_credential
            FROM channel_accounts ca
            WHERE ca.tenant_id = c.tenant_id AND ca.location_id = c.location_id
              AND ca.channel = c.channel AND ca.kind = 'messaging'
            ORDER BY (ca.external_account_id = (
                         SELECT mi.recipient_id FROM messages mi
                         WHERE mi.tenant_id = c.tenant_id AND mi.conversation_id = c.id
                           AND mi.direction = 'inbound'
                         ORDER BY mi."timestamp" DESC LIMIT 1)) DESC NULLS LAST,
                     ca.created_at, ca.id
            LIMIT 1) a ON true
        LEFT JOIN messages rt ON rt.tenant_id = v_tenant AND rt.conversation_id = c.id
                             AND rt.id = j.reply_to
        ORDER BY c.id, j.ord
        FOR UPDATE OF c;
    END LOOP;
    PERFORM set_config('faro.tenant_id', coalesce(v_before, ''), true);
END
$$;

-- Inserts the replies that passed the rules, their keys (a key another
-- transaction committed meanwhile inserts nothing for its reply) and their
-- threads' activity; returns the inserted messages with their location and
-- their thread's activity as it is now.
CREATE FUNCTION faro_insert_replies(p_tenants uuid[], p_ids uuid[], p_threads uuid[], p_texts text[],
                                    p_media jsonb[], p_channels text[], p_types text[],
                                    p_senders text[], p_recipients text[], p_times timestamptz[],
                                    p_reply_to text[], p_metadata jsonb[], p_keys text[],
                                    p_hashes bytea[])
    RETURNS TABLE (r_message messages, r_location_id uuid, r_thread_last_message_at timestamptz,
                   r_thread_updated_at timestamptz)
    LANGUAGE plpgsql AS $$
DECLARE
    v_before text := current_setting('faro.tenant_id', true);
    v_tenant uuid;
BEGIN
    FOR v_tenant IN SELECT DISTINCT u.t FROM unnest(p_tenants) AS u(t) ORDER BY 1 LOOP
        PERFORM set_config('faro.tenant_id', v_tenant::text, true);
        RETURN QUERY
        WITH j AS (
            SELECT u.id, u.conversation_id, u.text, u.media_urls, u.channel, u.message_type,
                   u.sender_id, u.recipient_id, u.ts, u.reply_to, u.metadata, u.key, u.hash
            FROM unnest(p_tenants, p_ids, p_threads, p_texts, p_media, p_channels, p_types, p_senders,
                        p_recipients, p_times, p_reply_to, p_metadata, p_keys, p_hashes)
                 AS u(tenant, id, conversation_id, text, media_urls, channel, message_type, sender_id,
                      recipient_id, ts, reply_to, metadata, key, hash)
            WHERE u.tenant = v_tenant),
        k AS (
            INSERT INTO reply_requests (tenant_id, idempotency_key, request_hash, message_id)
            SELECT v_tenant, j.key, j.hash, j.id FROM j ORDER BY j.key
            ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
            RETURNING message_id),
        m AS (
            INSERT INTO messages AS m (tenant_id, id, conversation_id, sender_type, text, media_urls,
                                       direction, channel, channel_message_id, message_type, sender_id,
                                       recipient_id, "timestamp", status, reply_to_channel_message_id,
                                       metadata)
            SELECT v_tenant, j.id, j.conversation_id, 'agent', j.text,
                   ARRAY(SELECT jsonb_array_elements_text(j.media_urls)), 'outbound', j.channel,
                   'faro:' || j.id, j.message_type, j.sender_id, j.recipient_id, j.ts, 'pending',
                   j.reply_to, j.metadata
            FROM j JOIN k ON k.message_id = j.id
            RETURNING m AS msg, m.conversation_id,
                      (SELECT c.location_id FROM conversations c
                       WHERE c.tenant_id = m.tenant_id AND c.id = m.conversation_id) AS location_id),
        t AS (
            UPDATE conversations c
            SET last_message_at = GREATEST(c.last_message_at, x.ts), updated_at = now()
            FROM (SELECT j.conversation_id, max(j.ts) AS ts FROM j JOIN k ON k.message_id = j.id
                  GROUP BY j.conversation_id) x
            WHERE c.tenant_id = v_tenant AND c.id = x.conversation_id
            RETURNING c.id, c.last_message_at, c.updated_at)
        SELECT m.msg, m.location_id, t.last_message_at, t.updated_at
        FROM m JOIN t ON t.id = m.conversation_id;
    END LOOP;
    PERFORM set_config('faro.tenant_id', coalesce(v_before, ''), true);
END
$$;

GRANT EXECUTE ON FUNCTION faro_lookup_replies(uuid[], int4[], uuid[], text[], uuid[]) TO faro_app;
GRANT EXECUTE ON FUNCTION faro_insert_replies(uuid[], uuid[], uuid[], text[], jsonb[], text[], text[],
                                              text[], text[], timestamptz[], text[], jsonb[], text[],
                                              bytea[]) TO faro_app;
