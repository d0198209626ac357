-- Replies (issue 14): an echo of our own reply that the platform delivered
-- BEFORE it answered the send (Instagram's echoes name no app, so they are
-- stored as outbound messages) holds the platform's id the reply is about
-- to record. Recording merges it into the reply: one message, never two.
--
-- faro_app may not delete messages; this one narrow function may, and only
-- an outbound non-reply message of the caller's tenant (RLS still applies:
-- its owner does not bypass it, and `faro.tenant_id` is the caller's) that
-- holds the same thread and channel as the reply named beside it. The
-- echo's receipts move to the reply (status forward only, never over
-- `failed`), agents' read markers on it move to the reply, then it goes.
-- Returns the ids of the echoes deleted.
DO $$ BEGIN
    CREATE ROLE faro_echo_merger NOLOGIN NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
GRANT USAGE ON SCHEMA public TO faro_echo_merger;
GRANT SELECT, UPDATE, DELETE ON messages TO faro_echo_merger;
GRANT SELECT, UPDATE ON conversation_reads TO faro_echo_merger;

CREATE FUNCTION faro_merge_reply_echoes(p_replies uuid[], p_echoes uuid[])
    RETURNS SETOF uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT m.tenant_id, m.id AS reply, e.id AS echo, e.status, e.delivered_at, e.read_at,
               e.played_at
        FROM UNNEST(p_replies, p_echoes) AS j(reply, echo)
        JOIN messages m ON m.tenant_id = faro_current_tenant() AND m.id = j.reply
        JOIN messages e ON e.tenant_id = m.tenant_id AND e.id = j.echo
        WHERE e.id <> m.id
          AND m.direction = 'outbound' AND m.metadata ? 'reply'
          AND e.direction = 'outbound' AND NOT (e.metadata ? 'reply')
          AND e.channel = m.channel AND e.conversation_id = m.conversation_id
        FOR UPDATE OF m, e
    LOOP
        UPDATE messages SET
            status = CASE WHEN status <> 'failed'
                           AND faro_status_rank(r.status) > faro_status_rank(status)
                          THEN r.status ELSE status END,
            delivered_at = COALESCE(delivered_at, r.delivered_at),
            read_at = COALESCE(read_at, r.read_at),
            played_at = COALESCE(played_at, r.played_at)
        WHERE tenant_id = r.tenant_id AND id = r.reply;
        UPDATE conversation_reads SET last_read_message_id = r.reply
        WHERE tenant_id = r.tenant_id AND last_read_message_id = r.echo;
        DELETE FROM messages WHERE tenant_id = r.tenant_id AND id = r.echo;
        RETURN NEXT r.echo;
    END LOOP;
END
$$;

ALTER FUNCTION faro_merge_reply_echoes(uuid[], uuid[]) OWNER TO faro_echo_merger;
REVOKE ALL ON FUNCTION faro_merge_reply_echoes(uuid[], uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION faro_merge_reply_echoes(uuid[], uuid[]) TO faro_app;
