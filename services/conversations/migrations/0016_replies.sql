-- Replies (issue 14): agents answer through the platform the customer wrote on.
--
-- 1. A channel account's send credential (WhatsApp system-user token, Page
--    access token, Instagram token, YCloud API key), sealed by the service like
--    app secrets (AES-256-GCM, key id per row, associated data binding it to
--    this row and column). The service never returns it through an API.
--    `human_agent` says the page may use Messenger's/Instagram's HUMAN_AGENT
--    tag (replies up to 7 days after the customer's last message).
ALTER TABLE channel_accounts
    ADD COLUMN send_key_id text,
    ADD COLUMN send_credential_enc bytea,
    ADD COLUMN send_credential_set_at timestamptz,
    ADD COLUMN human_agent boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT channel_accounts_send_credential_sealed
        CHECK ((send_key_id IS NULL) = (send_credential_enc IS NULL));

-- 2. A reply is stored at once as outbound with status `pending` (under a
--    placeholder channel_message_id, `faro:<message id>`, until the platform
--    names it). `pending` ranks below `sent` in faro_status_rank (0), so the
--    platform's later statuses move it forward like any other message's.
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('pending', 'sent', 'delivered', 'read', 'played', 'failed'));

-- 3. Idempotency: one reply per (tenant, key). A retried request finds its
--    first answer here; the same key with another body is refused.
CREATE TABLE reply_requests (
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    -- SHA-256 of the request as understood (conversation and content).
    request_hash    bytea NOT NULL,
    message_id      uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, message_id) REFERENCES messages (tenant_id, id)
);
ALTER TABLE reply_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE reply_requests FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON reply_requests
    USING (tenant_id = faro_current_tenant()) WITH CHECK (tenant_id = faro_current_tenant());
GRANT SELECT, INSERT ON reply_requests TO faro_app;

-- The customer's last inbound message of a thread (the window's start).
CREATE INDEX messages_last_inbound ON messages (tenant_id, conversation_id, "timestamp" DESC)
    WHERE direction = 'inbound';
