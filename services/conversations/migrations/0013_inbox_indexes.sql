-- The inbox's list queries (issue 13), checked with EXPLAIN on a tenant with
-- 100k conversations and 1M messages (docs/BENCHMARKS.md).
--
-- The list is ordered by (last_message_at, id), newest first. A thread made
-- by a conversation event alone has no message yet (NULL): it sorts as the
-- epoch, last, so that the keyset comparison never meets a NULL.
CREATE FUNCTION faro_activity(at timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT COALESCE(at, to_timestamp(0)) $$;

CREATE INDEX conversations_inbox
    ON conversations (tenant_id, faro_activity(last_message_at), id);
CREATE INDEX conversations_inbox_location
    ON conversations (tenant_id, location_id, faro_activity(last_message_at), id);
CREATE INDEX conversations_inbox_status
    ON conversations (tenant_id, status, faro_activity(last_message_at), id);
CREATE INDEX conversations_inbox_assignee
    ON conversations (tenant_id, assigned_to_user_id, faro_activity(last_message_at), id);
CREATE INDEX conversations_tags ON conversations USING gin (tags);
CREATE INDEX conversations_updated ON conversations (tenant_id, updated_at);

-- Search: trigram, so that a fragment of a phone number or a name matches
-- (full text search does not split "+1555..." nor match "ann" in "Joanna").
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE FUNCTION faro_customer_text(name text, phone text, customer text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT lower(COALESCE(name, '') || ' ' || COALESCE(phone, '') || ' ' || customer) $$;

CREATE INDEX conversations_customer_search
    ON conversations USING gin (faro_customer_text(customer_name, customer_phone, customer_id) gin_trgm_ops);
CREATE INDEX messages_text_search ON messages USING gin (lower(text) gin_trgm_ops);

-- Unread counts: a thread's inbound messages after a read marker.
CREATE INDEX messages_inbound ON messages (tenant_id, conversation_id, "timestamp", id)
    WHERE direction = 'inbound';
