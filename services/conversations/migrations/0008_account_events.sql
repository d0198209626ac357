-- WhatsApp account-level webhooks (template reviews and quality, number
-- quality and name, account alerts and updates, security, ...) name no phone
-- number: only the WhatsApp Business Account (WABA) in `entry[].id`. They were
-- refused 401 (no account to verify the signature by), and Meta retries and
-- can disable a webhook that keeps failing.
--
-- 1. A WABA is a channel account of its own kind, so the routing lookup
--    (faro_resolve_channel_accounts, unchanged) finds its tenant and app by
--    the same unique (channel, external_account_id): one owner per WABA.
--    Connecting a number with its WABA records the WABA on the number too.
ALTER TABLE channel_accounts
    ADD COLUMN kind text NOT NULL DEFAULT 'messaging' CHECK (kind IN ('messaging', 'waba')),
    ADD COLUMN waba_id text CHECK (length(waba_id) BETWEEN 1 AND 100);

-- 2. What those webhooks say, kept per tenant: never a message.
CREATE TABLE account_events (
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    id                  uuid NOT NULL,
    location_id         uuid NOT NULL,
    channel_account_id  uuid NOT NULL,
    channel             text NOT NULL CHECK (channel IN ('whatsapp', 'facebook_messenger', 'instagram_dm',
                                                          'google_business', 'sms', 'email')),
    -- The id the webhook named: a WABA id or a number.
    external_account_id text NOT NULL CHECK (length(external_account_id) BETWEEN 1 AND 100),
    -- Meta's change field, or YCloud's event type.
    field               text NOT NULL CHECK (length(field) BETWEEN 1 AND 200),
    value               jsonb NOT NULL,
    -- The platform's time of the event (the receive time if it gives none).
    occurred_at         timestamptz NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    -- The same for every delivery of one event (a hash computed by ingest).
    event_key           text NOT NULL CHECK (length(event_key) BETWEEN 1 AND 200),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, channel_account_id) REFERENCES channel_accounts (tenant_id, id),
    FOREIGN KEY (tenant_id, location_id) REFERENCES locations (tenant_id, id),
    -- Exactly once: a retried webhook or a redelivered job conflicts here.
    UNIQUE (tenant_id, event_key)
);
CREATE INDEX account_events_recent ON account_events (tenant_id, occurred_at DESC, id DESC);

ALTER TABLE account_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE account_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON account_events
    USING (tenant_id = faro_current_tenant()) WITH CHECK (tenant_id = faro_current_tenant());

-- Append-only: the service inserts and lists, never rewrites.
GRANT SELECT, INSERT ON account_events TO faro_app;
