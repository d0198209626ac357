-- Conversation events and standby messages (issue 7, sections 1, 4 and 6).
--
-- Handover of thread control, opt-ins, account linking, game plays, policy
-- enforcement, app roles and events of unknown type used to become empty
-- "unsupported" customer messages that moved the thread and were announced
-- as the customer speaking (or, without a sender, were dead-lettered). They
-- are kept here instead: typed, with the platform's raw JSON, shown in the
-- thread as system lines. An event with no customer (policy enforcement, app
-- roles, a checkbox-plugin opt-in known only by its user_ref) is page-level:
-- no conversation. Storing one never moves conversations.last_message_at.

CREATE TABLE conversation_events (
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    id                  uuid NOT NULL,
    location_id         uuid NOT NULL,
    -- The page / account the event came through.
    channel_account_id  uuid NOT NULL,
    channel             text NOT NULL CHECK (channel IN ('whatsapp', 'facebook_messenger', 'instagram_dm',
                                                          'google_business', 'sms', 'email')),
    -- NULL for a page-level event.
    conversation_id     uuid,
    kind                text NOT NULL CHECK (kind IN ('pass_thread_control', 'take_thread_control',
                                                      'request_thread_control', 'app_roles',
                                                      'account_linking', 'optin', 'game_play',
                                                      'policy_enforcement', 'unknown')),
    -- The natural key (a digest of the event as the platform sent it): a
    -- retried webhook or a redelivered job conflicts here and stores nothing.
    event_key           text NOT NULL CHECK (length(event_key) BETWEEN 1 AND 512),
    -- The platform's time.
    "timestamp"         timestamptz NOT NULL,
    raw                 jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, location_id) REFERENCES locations (tenant_id, id),
    FOREIGN KEY (tenant_id, channel_account_id) REFERENCES channel_accounts (tenant_id, id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id),
    UNIQUE (tenant_id, channel, event_key)
);
CREATE INDEX conversation_events_thread
    ON conversation_events (tenant_id, conversation_id, "timestamp", id);

ALTER TABLE conversation_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversation_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON conversation_events
    USING (tenant_id = faro_current_tenant()) WITH CHECK (tenant_id = faro_current_tenant());
GRANT SELECT, INSERT ON conversation_events TO faro_app;

-- A message delivered on `standby` (Messenger / Instagram `entry[].standby[]`,
-- WhatsApp `field: standby`): another app owned the thread, but the words are
-- the customer's (or that app's replies). Stored and announced like any other.
ALTER TABLE messages ADD COLUMN standby boolean NOT NULL DEFAULT false;
