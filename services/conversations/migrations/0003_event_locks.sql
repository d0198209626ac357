-- Closes a race between a message and an event aimed at it arriving in two
-- concurrent transactions: the event's transaction could miss the message
-- (not committed yet) and park the event, while the message's transaction
-- looked for parked events before that one was committed; the event then
-- waited forever. Both sides now take a transaction-scoped advisory lock per
-- target message, in one global order (by key), before looking for the other.
-- Whichever commits second sees the first.

CREATE FUNCTION faro_lock_message_keys(p_tenant uuid, p_channels text[], p_targets text[])
    RETURNS void LANGUAGE sql AS $$
    SELECT count(pg_advisory_xact_lock(k.key))
    FROM (SELECT DISTINCT hashtextextended(p_tenant::text || '/' || c || '/' || t, 0) AS key
          FROM unnest(p_channels, p_targets) AS u(c, t)
          ORDER BY 1) k
$$;

CREATE OR REPLACE FUNCTION faro_apply_message_events(p_tenant uuid, p_channels text[], p_targets text[],
                                                     p_kinds text[], p_keys text[], p_payloads jsonb[])
    RETURNS SETOF uuid LANGUAGE plpgsql AS $$
DECLARE
    changed uuid;
BEGIN
    PERFORM faro_lock_message_keys(p_tenant, p_channels, p_targets);
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

CREATE OR REPLACE FUNCTION faro_apply_pending_events(p_tenant uuid, p_channels text[], p_targets text[])
    RETURNS SETOF uuid LANGUAGE plpgsql AS $$
DECLARE
    e record;
    changed uuid;
BEGIN
    -- Waits for any transaction parking an event for these messages to commit.
    PERFORM faro_lock_message_keys(p_tenant, p_channels, p_targets);
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
