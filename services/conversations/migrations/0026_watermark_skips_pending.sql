-- A Messenger watermark covers the messages the page SENT before it. A
-- reply still `pending` has not been sent (or its send is not recorded
-- yet), so it is not covered: 0005's version moved it to delivered or read
-- (`pending` ranks below both), and a send that then failed could not mark
-- it failed (a failure is recorded on a pending reply only). The same
-- function with the pending replies left out; their delivery shows with the
-- page's next watermark once they are sent.
CREATE OR REPLACE FUNCTION faro_apply_watermark(p_tenant uuid, p_location uuid, p_channel text,
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
          AND m.status IS DISTINCT FROM 'pending'
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
