-- Everything that happens to a message after it arrives: delivery statuses,
-- reactions, edits, deletions; plus the media, reply and referral data every
-- platform sends. Events that arrive before their message wait in
-- pending_message_events and are applied when it is stored.

ALTER TABLE messages
    ADD COLUMN status text CHECK (status IN ('sent', 'delivered', 'read', 'played', 'failed')),
    ADD COLUMN status_error jsonb,
    ADD COLUMN played_at timestamptz,
    ADD COLUMN failed_at timestamptz,
    -- reactor id -> {"emoji": "..", "timestamp": ".."}; an empty emoji records a removal.
    ADD COLUMN reactions jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN edited_at timestamptz,
    -- [{"text": "..", "replaced_at": ".."}], oldest first.
    ADD COLUMN edit_history jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN deleted_at timestamptz,
    ADD COLUMN reply_to_channel_message_id text,
    -- [{"kind", "id", "mime_type", "sha256", "caption", "filename", "url"}]
    ADD COLUMN media jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN referral jsonb,
    ADD COLUMN forwarded boolean NOT NULL DEFAULT false;

ALTER TABLE conversations ADD COLUMN customer_user_id text;

CREATE TABLE pending_message_events (
    tenant_id                   uuid NOT NULL REFERENCES tenants (id),
    channel                     text NOT NULL,
    target_channel_message_id   text NOT NULL,
    kind                        text NOT NULL CHECK (kind IN ('status', 'reaction', 'edit', 'deletion')),
    -- Tells apart events of one kind on one message, so a redelivered event is kept once.
    event_key                   text NOT NULL,
    payload                     jsonb NOT NULL,
    received_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel, target_channel_message_id, kind, event_key)
);

ALTER TABLE pending_message_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE pending_message_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON pending_message_events
    USING (tenant_id = faro_current_tenant()) WITH CHECK (tenant_id = faro_current_tenant());
GRANT SELECT, INSERT, DELETE ON pending_message_events TO faro_app;

CREATE FUNCTION faro_status_rank(s text) RETURNS int
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE s WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3 WHEN 'played' THEN 4 ELSE 0 END $$;

-- Applies one event to its message and returns the message id, or NULL when
-- the message is not stored (yet). Every rule is order-independent, so events
-- may arrive in any order and any number of times:
--   status:   moves forward only (sent < delivered < read < played); failed
--             replaces sent/delivered and keeps its error; nothing erases failed.
--   reaction: each reactor's newest reaction wins; an empty emoji removes it.
--   edit:     the newest edit's text wins; the text it replaced goes to history.
--   deletion: marks the message deleted, keeping the row and its text.
-- Runs as the caller, so row-level security applies.
CREATE FUNCTION faro_apply_message_event(p_tenant uuid, p_channel text, p_target text,
                                         p_kind text, p_payload jsonb)
    RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    m   messages%ROWTYPE;
    ts  timestamptz := (p_payload->>'timestamp')::timestamptz;
    s   text := p_payload->>'status';
    who text := p_payload->>'reactor_id';
BEGIN
    SELECT * INTO m FROM messages
    WHERE tenant_id = p_tenant AND channel = p_channel AND channel_message_id = p_target
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF p_kind = 'status' THEN
        UPDATE messages SET
            status = CASE
                WHEN s = 'failed' THEN CASE WHEN faro_status_rank(m.status) >= 3 THEN m.status ELSE 'failed' END
                WHEN m.status = 'failed' THEN 'failed'
                WHEN faro_status_rank(s) > faro_status_rank(m.status) THEN s
                ELSE m.status END,
            status_error = CASE WHEN s = 'failed' AND faro_status_rank(m.status) < 3
                                THEN p_payload->'error' ELSE m.status_error END,
            delivered_at = CASE WHEN s = 'delivered' THEN LEAST(COALESCE(m.delivered_at, ts), ts) ELSE m.delivered_at END,
            read_at = CASE WHEN s = 'read' THEN LEAST(COALESCE(m.read_at, ts), ts) ELSE m.read_at END,
            played_at = CASE WHEN s = 'played' THEN LEAST(COALESCE(m.played_at, ts), ts) ELSE m.played_at END,
            failed_at = CASE WHEN s = 'failed' THEN LEAST(COALESCE(m.failed_at, ts), ts) ELSE m.failed_at END
        WHERE tenant_id = m.tenant_id AND id = m.id;
    ELSIF p_kind = 'reaction' THEN
        IF m.reactions->who IS NULL OR (m.reactions->who->>'timestamp')::timestamptz < ts THEN
            UPDATE messages SET reactions = jsonb_set(reactions, ARRAY[who],
                jsonb_build_object('emoji', COALESCE(p_payload->>'emoji', ''), 'timestamp', p_payload->'timestamp'))
            WHERE tenant_id = m.tenant_id AND id = m.id;
        END IF;
    ELSIF p_kind = 'edit' THEN
        IF m.edited_at IS NULL OR m.edited_at < ts THEN
            UPDATE messages SET
                edit_history = edit_history || jsonb_build_array(
                    jsonb_build_object('text', m.text, 'replaced_at', p_payload->'timestamp')),
                text = p_payload->>'text',
                edited_at = ts
            WHERE tenant_id = m.tenant_id AND id = m.id;
        END IF;
    ELSIF p_kind = 'deletion' THEN
        UPDATE messages SET deleted_at = LEAST(COALESCE(m.deleted_at, ts), ts)
        WHERE tenant_id = m.tenant_id AND id = m.id;
    END IF;
    RETURN m.id;
END $$;

-- Applies a batch of events in one round trip; events whose message is not
-- stored yet are kept for later. Returns the ids of the messages changed.
CREATE FUNCTION faro_apply_message_events(p_tenant uuid, p_channels text[], p_targets text[],
                                          p_kinds text[], p_keys text[], p_payloads jsonb[])
    RETURNS SETOF uuid LANGUAGE plpgsql AS $$
DECLARE
    changed uuid;
BEGIN
    FOR i IN 1 .. COALESCE(array_length(p_targets, 1), 0) LOOP
        changed := faro_apply_message_event(p_tenant, p_channels[i], p_targets[i], p_kinds[i], p_payloads[i]);
        IF changed IS NULL THEN
            INSERT INTO pending_message_events (tenant_id, channel, target_channel_message_id, kind,
                                                event_key, payload)
            VALUES (p_tenant, p_channels[i], p_targets[i], p_kinds[i], p_keys[i], p_payloads[i])
            ON CONFLICT DO NOTHING;
        ELSE
            RETURN NEXT changed;
        END IF;
    END LOOP;
END $$;

-- Applies (and removes) the events that were waiting for these messages.
CREATE FUNCTION faro_apply_pending_events(p_tenant uuid, p_channels text[], p_targets text[])
    RETURNS SETOF uuid LANGUAGE plpgsql AS $$
DECLARE
    e record;
    changed uuid;
BEGIN
    FOR e IN
        DELETE FROM pending_message_events p
        USING unnest(p_channels, p_targets) AS k(channel, target)
        WHERE p.tenant_id = p_tenant AND p.channel = k.channel AND p.target_channel_message_id = k.target
        RETURNING p.channel, p.target_channel_message_id, p.kind, p.payload
    LOOP
        changed := faro_apply_message_event(p_tenant, e.channel, e.target_channel_message_id, e.kind, e.payload);
        IF changed IS NOT NULL THEN
            RETURN NEXT changed;
        END IF;
    END LOOP;
END $$;

-- Messenger's watermarks: every outbound message of one thread at or before
-- the watermark reached the status. Messages sent later are not touched.
CREATE FUNCTION faro_apply_watermark(p_tenant uuid, p_location uuid, p_channel text,
                                     p_customer text, p_status text, p_watermark timestamptz)
    RETURNS SETOF uuid LANGUAGE plpgsql AS $$
DECLARE
    target text;
    changed uuid;
BEGIN
    FOR target IN
        SELECT m.channel_message_id
        FROM messages m
        JOIN conversations c ON c.tenant_id = m.tenant_id AND c.id = m.conversation_id
        WHERE c.tenant_id = p_tenant AND c.location_id = p_location AND c.channel = p_channel
          AND c.customer_id = p_customer AND m.direction = 'outbound'
          AND m."timestamp" <= p_watermark
          AND faro_status_rank(m.status) < faro_status_rank(p_status)
          AND m.status IS DISTINCT FROM 'failed'
    LOOP
        changed := faro_apply_message_event(p_tenant, p_channel, target, 'status',
            jsonb_build_object('status', p_status, 'timestamp', to_jsonb(p_watermark)));
        IF changed IS NOT NULL THEN
            RETURN NEXT changed;
        END IF;
    END LOOP;
END $$;
