-- Events whose message never arrives (statuses of messages another system
-- sent, reactions to messages from before FARO) would wait forever. Meta
-- retries a delivery for up to 7 days, so an event older than that will not
-- meet its message. The service calls this periodically; it runs across
-- tenants, so it is a narrow SECURITY DEFINER function that can only delete
-- old pending events.
GRANT DELETE ON pending_message_events TO faro_router;
GRANT SELECT ON pending_message_events TO faro_router;

CREATE FUNCTION faro_expire_pending_events(p_older_than interval)
    RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        WITH gone AS (
            DELETE FROM pending_message_events
            WHERE received_at < now() - GREATEST(p_older_than, interval '1 hour')
            RETURNING 1
        )
        SELECT count(*) FROM gone
    $$;

ALTER FUNCTION faro_expire_pending_events(interval) OWNER TO faro_router;
REVOKE ALL ON FUNCTION faro_expire_pending_events(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION faro_expire_pending_events(interval) TO faro_app;
