-- The inbox's search under row-level security (issue 13). LIKE is not
-- leakproof, so under a policy Postgres must not test it before the policy
-- and never uses the trigram indexes of 0013 for it: every search scanned
-- every message of the tenant (1.3 s with 1M messages). This function runs
-- as a role that bypasses RLS and may read only the searched columns, and
-- filters on the transaction's tenant itself (`faro_current_tenant()`, not a
-- parameter: it cannot be asked about another tenant; with none set it finds
-- nothing). It returns thread ids only; the caller reads the threads under
-- RLS, with its location limit.
DO $$ BEGIN
    CREATE ROLE faro_search NOLOGIN BYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

GRANT USAGE ON SCHEMA public TO faro_search;
GRANT SELECT (tenant_id, id, customer_name, customer_phone, customer_id) ON conversations TO faro_search;
GRANT SELECT (tenant_id, conversation_id, text) ON messages TO faro_search;

CREATE FUNCTION faro_search_conversations(p_pattern text)
    RETURNS TABLE (conversation_id uuid)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
    DECLARE
        t uuid := faro_current_tenant();
    BEGIN
        IF t IS NULL THEN
            RETURN;
        END IF;
        -- EXECUTE: planned with the pattern itself, so that the trigram
        -- indexes are chosen for a rare fragment and not for a common one.
        RETURN QUERY EXECUTE
            'SELECT s.id FROM conversations s
             WHERE s.tenant_id = $1
               AND faro_customer_text(s.customer_name, s.customer_phone, s.customer_id) LIKE $2
             UNION
             SELECT m.conversation_id FROM messages m WHERE m.tenant_id = $1 AND lower(m.text) LIKE $2'
            USING t, p_pattern;
    END
    $$;

ALTER FUNCTION faro_search_conversations(text) OWNER TO faro_search;
REVOKE ALL ON FUNCTION faro_search_conversations(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION faro_search_conversations(text) TO faro_app;
