-- An outbox for agents' live edits (issue 13). UpdateConversation and
-- MarkRead write the `conversation_updated` event they cause in the same
-- transaction as the edit; ingest's relay publishes pending rows and deletes
-- them once published. A change is therefore announced at least once even
-- when the edge, ingest or Redis fails right after the commit; the event's id
-- (the row's) lets clients drop a second copy.
CREATE TABLE conversation_outbox (
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    id               uuid NOT NULL,
    conversation_id  uuid NOT NULL,
    -- The encoded faro.stream.v1.Event, as it will be published.
    event            bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- A relay that took the row holds it until then; past it, another may.
    claimed_until    timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id)
);
CREATE INDEX conversation_outbox_due ON conversation_outbox (created_at);

ALTER TABLE conversation_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversation_outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON conversation_outbox
    USING (tenant_id = faro_current_tenant()) WITH CHECK (tenant_id = faro_current_tenant());
GRANT SELECT, INSERT, DELETE ON conversation_outbox TO faro_app;

-- The relay works across tenants: these two functions, owned by a role that
-- can touch this table alone, take a batch of due rows (skipping rows another
-- relay holds) and delete published ones. The service role calls them; they
-- return nothing but outbox rows.
DO $$ BEGIN
    CREATE ROLE faro_outbox NOLOGIN BYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
GRANT USAGE ON SCHEMA public TO faro_outbox;
GRANT SELECT, UPDATE, DELETE ON conversation_outbox TO faro_outbox;

CREATE FUNCTION faro_outbox_claim(p_limit int, p_lease_ms int, p_min_age_ms int)
    RETURNS TABLE (tenant_id uuid, id uuid, event bytea)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        UPDATE conversation_outbox o
        SET claimed_until = now() + make_interval(secs => p_lease_ms / 1000.0)
        FROM (SELECT x.tenant_id, x.id FROM conversation_outbox x
              WHERE x.created_at <= now() - make_interval(secs => p_min_age_ms / 1000.0)
                AND (x.claimed_until IS NULL OR x.claimed_until < now())
              ORDER BY x.created_at
              LIMIT least(greatest(p_limit, 1), 1000)
              FOR UPDATE SKIP LOCKED) due
        WHERE o.tenant_id = due.tenant_id AND o.id = due.id
        RETURNING o.tenant_id, o.id, o.event
    $$;

CREATE FUNCTION faro_outbox_done(p_tenants uuid[], p_ids uuid[])
    RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        WITH gone AS (
            DELETE FROM conversation_outbox o
            USING unnest(p_tenants, p_ids) AS d(tenant_id, id)
            WHERE o.tenant_id = d.tenant_id AND o.id = d.id
            RETURNING 1)
        SELECT count(*) FROM gone
    $$;

DO $$
DECLARE f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['faro_outbox_claim(int, int, int)',
                             'faro_outbox_done(uuid[], uuid[])'] LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO faro_outbox', f);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO faro_app', f);
    END LOOP;
END $$;
