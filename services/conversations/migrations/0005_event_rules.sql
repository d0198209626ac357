-- Event rules, corrected:
--   * Every function now says whether an event changed its message, not only
--     whether it found it, so that an event that changes nothing (a retry, a
--     repeated read, an older reaction) is not announced again.
--   * Reactions: two by one person within one timestamp (WhatsApp's are whole
--     seconds) are ordered by their arrival in FARO's queue (`arrival`: the
--     job's stream id and the event's index in it, the same on every
--     redelivery of the job). The later arrival wins, so a change or a removal
--     made in the same second as the reaction it replaces is not lost.
--   * Statuses: a failure keeps Meta's error even when the message was read
--     first, and read/played beat failed whatever order they arrive in (before,
--     read-then-failed ended read and failed-then-read ended failed).
-- The result columns change, so the functions are dropped and created again.

DROP FUNCTION faro_apply_message_events(uuid, text[], text[], text[], text[], jsonb[]);
DROP FUNCTION faro_apply_pending_events(uuid, text[], text[]);
DROP FUNCTION faro_apply_watermark(uuid, uuid, text, text, text, timestamptz);
DROP FUNCTION faro_apply_message_event(uuid, text, text, text, jsonb);

-- Applies one event to its message. message_id is NULL when the message is
-- not stored (yet); changed says whether anything an agent sees changed.
-- Every rule is order-independent, so events may arrive in any order and any
-- number of times:
--   status:   moves forward only (sent < delivered < read < played); failed
--             replaces sent/delivered, read and played replace failed; each
--             status keeps its earliest time; a failure keeps the error of the
--             earliest failed event that carried one.
--   reaction: each reactor's newest reaction wins (by timestamp, then by
--             arrival); an empty emoji removes it.
--   edit:     the newest edit's text wins; the text it replaced goes to history.
--   deletion: marks the message deleted (earliest time), keeping the row and its text.
-- Runs as the caller, so row-level security applies.
CREATE FUNCTION faro_apply_message_event(p_tenant uuid, p_channel text, p_target text,
                                         p_kind text, p_payload jsonb,
                                         OUT message_id uuid, OUT changed boolean)
    LANGUAGE plpgsql AS $$
DECLARE
    m        messages%ROWTYPE;
    ts       timestamptz := (p_payload->>'timestamp')::timestamptz;
    s        text := p_payload->>'status';
    err      jsonb := NULLIF(p_payload->'error', 'null'::jsonb);
    who      text := p_payload->>'reactor_id';
    emoji    text := COALESCE(p_payload->>'emoji', '');
    arrival  jsonb := COALESCE(p_payload->'arrival', '[]'::jsonb);
    prev     jsonb;
    prev_ts  timestamptz;
    n_status text;
    n_error  jsonb;
    n_deliv  timestamptz;
    n_read   timestamptz;
    n_played timestamptz;
    n_failed timestamptz;
BEGIN
    changed := false;
    SELECT * INTO m FROM messages
    WHERE tenant_id = p_tenant AND channel = p_channel AND channel_message_id = p_target
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    message_id := m.id;
    IF p_kind = 'status' THEN
        n_status := CASE
            WHEN s = 'failed' THEN CASE WHEN faro_status_rank(m.status) >= 3 THEN m.status ELSE 'failed' END
            WHEN m.status = 'failed' THEN CASE WHEN faro_status_rank(s) >= 3 THEN s ELSE 'failed' END
            WHEN faro_status_rank(s) > faro_status_rank(m.status) THEN s
            ELSE m.status END;
        n_error := CASE
            WHEN s = 'failed' AND err IS NOT NULL
                 AND (m.status_error IS NULL OR m.failed_at IS NULL OR ts < m.failed_at) THEN err
            ELSE m.status_error END;
        n_deliv := CASE WHEN s = 'delivered' THEN LEAST(COALESCE(m.delivered_at, ts), ts) ELSE m.delivered_at END;
        n_read := CASE WHEN s = 'read' THEN LEAST(COALESCE(m.read_at, ts), ts) ELSE m.read_at END;
        n_played := CASE WHEN s = 'played' THEN LEAST(COALESCE(m.played_at, ts), ts) ELSE m.played_at END;
        n_failed := CASE WHEN s = 'failed' THEN LEAST(COALESCE(m.failed_at, ts), ts) ELSE m.failed_at END;
        IF (n_status, n_error, n_deliv, n_read, n_played, n_failed) IS DISTINCT FROM
           (m.status, m.status_error, m.delivered_at, m.read_at, m.played_at, m.failed_at) THEN
            UPDATE messages SET status = n_status, status_error = n_error, delivered_at = n_deliv,
                                read_at = n_read, played_at = n_played, failed_at = n_failed
            WHERE tenant_id = m.tenant_id AND id = m.id;
            changed := true;
        END IF;
    ELSIF p_kind = 'reaction' THEN
        prev := m.reactions->who;
        prev_ts := (prev->>'timestamp')::timestamptz;
        IF prev IS NULL OR prev_ts < ts
           OR (prev_ts = ts AND COALESCE(prev->'arrival', '[]'::jsonb) < arrival) THEN
            UPDATE messages SET reactions = jsonb_set(reactions, ARRAY[who],
                jsonb_build_object('emoji', emoji, 'timestamp', p_payload->'timestamp',
                                   'arrival', arrival))
            WHERE tenant_id = m.tenant_id AND id = m.id;
            -- Removals are not shown, so only a shown emoji or its time is news.
            changed := COALESCE(prev->>'emoji', '') IS DISTINCT FROM emoji
                       OR (emoji <> '' AND prev_ts IS DISTINCT FROM ts);
        END IF;
    ELSIF p_kind = 'edit' THEN
        IF m.edited_at IS NULL OR m.edited_at < ts THEN
            UPDATE messages SET
                edit_history = edit_history || jsonb_build_array(
                    jsonb_build_object('text', m.text, 'replaced_at', p_payload->'timestamp')),
                text = p_payload->>'text',
                edited_at = ts
            WHERE tenant_id = m.tenant_id AND id = m.id;
            changed := true;
        END IF;
    ELSIF p_kind = 'deletion' THEN
        IF m.deleted_at IS NULL OR ts < m.deleted_at THEN
            UPDATE messages SET deleted_at = ts
            WHERE tenant_id = m.tenant_id AND id = m.id;
            changed := true;
        END IF;
    END IF;
END $$;

-- Applies a batch's events in one round trip; events whose message is not
-- stored yet are kept for later. One row per event that found its message.
CREATE FUNCTION faro_apply_message_events(p_tenant uuid, p_channels text[], p_targets text[],
                                          p_kinds text[], p_keys text[], p_payloads jsonb[])
    RETURNS TABLE (message_id uuid, changed boolean) LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    PERFORM faro_lock_message_keys(p_tenant, p_channels, p_targets);
    FOR i IN 1 .. COALESCE(array_length(p_targets, 1), 0) LOOP
        SELECT * INTO r FROM faro_apply_message_event(p_tenant, p_channels[i], p_targets[i], p_kinds[i], p_payloads[i]);
        IF r.message_id IS NULL THEN
            INSERT INTO pending_message_events (tenant_id, channel, target_channel_message_id, kind,
                                                event_key, payload)
            VALUES (p_tenant, p_channels[i], p_targets[i], p_kinds[i], p_keys[i], p_payloads[i])
            ON CONFLICT DO NOTHING;
        ELSE
            message_id := r.message_id;
            changed := r.changed;
            RETURN NEXT;
        END IF;
    END LOOP;
END $$;

-- Applies (and removes) the events that were waiting for these messages.
CREATE FUNCTION faro_apply_pending_events(p_tenant uuid, p_channels text[], p_targets text[])
    RETURNS TABLE (message_id uuid, changed boolean) LANGUAGE plpgsql AS $$
DECLARE
    e record;
    r record;
BEGIN
    -- Waits for any transaction parking an event for these messages to commit.
    PERFORM faro_lock_message_keys(p_tenant, p_channels, p_targets);
    FOR e IN
        DELETE FROM pending_message_events p
        USING unnest(p_channels, p_targets) AS k(channel, target)
        WHERE p.tenant_id = p_tenant AND p.channel = k.channel AND p.target_channel_message_id = k.target
        RETURNING p.channel, p.target_channel_message_id, p.kind, p.payload
    LOOP
        SELECT * INTO r FROM faro_apply_message_event(p_tenant, e.channel, e.target_channel_message_id, e.kind, e.payload);
        IF r.message_id IS NOT NULL THEN
            message_id := r.message_id;
            changed := r.changed;
            RETURN NEXT;
        END IF;
    END LOOP;
END $$;

-- Messenger's watermarks: every outbound message of one thread at or before
-- the watermark reached the status. Messages sent later are not touched.
-- Messages this watermark already marked (their time is the watermark) are
-- returned unchanged, so that a redelivery can announce them.
CREATE FUNCTION faro_apply_watermark(p_tenant uuid, p_location uuid, p_channel text,
                                     p_customer text, p_status text, p_watermark timestamptz)
    RETURNS TABLE (message_id uuid, changed boolean) LANGUAGE plpgsql AS $$
DECLARE
    target text;
    r record;
BEGIN
    FOR target IN
        SELECT m.channel_message_id
        FROM messages m
        JOIN conversations c ON c.tenant_id = m.tenant_id AND c.id = m.conversation_id
        WHERE c.tenant_id = p_tenant AND c.location_id = p_location AND c.channel = p_channel
          AND c.customer_id = p_customer AND m.direction = 'outbound'
          AND m."timestamp" <= p_watermark
          AND ((faro_status_rank(m.status) < faro_status_rank(p_status)
                AND m.status IS DISTINCT FROM 'failed')
               OR CASE p_status WHEN 'delivered' THEN m.delivered_at
                                WHEN 'read' THEN m.read_at END = p_watermark)
    LOOP
        SELECT * INTO r FROM faro_apply_message_event(p_tenant, p_channel, target, 'status',
            jsonb_build_object('status', p_status, 'timestamp', to_jsonb(p_watermark)));
        IF r.message_id IS NOT NULL THEN
            message_id := r.message_id;
            changed := r.changed;
            RETURN NEXT;
        END IF;
    END LOOP;
END $$;
