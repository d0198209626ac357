-- The inbox agents work in (issue 13): who the agents are, what each has read,
-- the links that tell which review or listing started a conversation, and a
-- version per conversation so that two agents' edits never silently overwrite
-- each other. Every table is tenant-keyed with row-level security ENABLED and
-- FORCED, and granted to the service role only (the pattern of 0001/0006).

-- The agents (users) of a tenant: `id` is the JWT's `sub`. Assignment names
-- one; `location_ids` empty means every location of the tenant.
CREATE TABLE agents (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    id           text NOT NULL CHECK (length(id) BETWEEN 1 AND 200),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role         text NOT NULL DEFAULT 'agent' CHECK (role IN ('agent', 'manager', 'admin')),
    location_ids uuid[] NOT NULL DEFAULT '{}',
    disabled_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- Optimistic concurrency: every agent edit (status, assignment, tags, lead
-- status, source type, ROI links) adds one; a new message does not, so an
-- agent's ETag stays valid while the customer keeps writing.
ALTER TABLE conversations ADD COLUMN version bigint NOT NULL DEFAULT 1 CHECK (version >= 1);

-- An assignee is one of the tenant's agents. NOT VALID: rows assigned before
-- agents existed are left as they are; every new assignment is checked.
ALTER TABLE conversations
    ADD CONSTRAINT conversations_assignee FOREIGN KEY (tenant_id, assigned_to_user_id)
        REFERENCES agents (tenant_id, id) NOT VALID;

-- Per agent and thread: the last message read (and its platform time, which
-- orders the thread), so that unread counts are exact: the inbound messages
-- after it, by (timestamp, id).
CREATE TABLE conversation_reads (
    tenant_id            uuid NOT NULL,
    conversation_id      uuid NOT NULL,
    agent_id             text NOT NULL CHECK (length(agent_id) BETWEEN 1 AND 200),
    last_read_message_id uuid NOT NULL,
    last_read_at         timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, conversation_id, agent_id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id),
    FOREIGN KEY (tenant_id, last_read_message_id) REFERENCES messages (tenant_id, id)
);

-- What started a conversation, for ROI: a review answered, a listing asked
-- about, an ad or a post. Several per thread; one row per (kind, external id).
CREATE TABLE conversation_roi_links (
    tenant_id       uuid NOT NULL,
    conversation_id uuid NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('review', 'listing', 'ad', 'post')),
    external_id     text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 500),
    -- The platform it lives on (google, yelp, facebook, ...), free text.
    source          text NOT NULL DEFAULT '' CHECK (length(source) <= 100),
    url             text NOT NULL DEFAULT '' CHECK (length(url) <= 2000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, conversation_id, kind, external_id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id)
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agents', 'conversation_reads', 'conversation_roi_links'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (tenant_id = faro_current_tenant()) '
                       'WITH CHECK (tenant_id = faro_current_tenant())', t);
    END LOOP;
END $$;

-- The service role only: no DELETE on agents (they are disabled, never
-- removed: assignments name them) nor on read state.
GRANT SELECT, INSERT, UPDATE ON agents, conversation_reads TO faro_app;
GRANT SELECT, INSERT, DELETE ON conversation_roi_links TO faro_app;
