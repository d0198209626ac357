-- Replies (issue 14): a conversation shows its customer-service window. The
-- window starts at the customer's last inbound message (the platform's
-- time); kept on the thread, so every read of a conversation and every live
-- event carrying one (`message.created` for the customer's new message)
-- shows the window as it is now. Written by the inbound thread upsert with
-- GREATEST, like last_message_at.
ALTER TABLE conversations ADD COLUMN last_inbound_at timestamptz;

UPDATE conversations c SET last_inbound_at = i.at
FROM (SELECT tenant_id, conversation_id, max("timestamp") AS at
      FROM messages WHERE direction = 'inbound'
      GROUP BY tenant_id, conversation_id) i
WHERE c.tenant_id = i.tenant_id AND c.id = i.conversation_id;
