-- The same locks as 0003's faro_lock_message_keys (one transaction-scoped
-- advisory lock per target message, in key order), as PL/pgSQL: a SQL
-- function called from PL/pgSQL is not inlined and plans its query on every
-- call, which was 70 % of faro_apply_pending_events (0.13 of 0.19 ms for six
-- keys; PL/pgSQL keeps the plan for the session: 0.045 ms). It runs once per
-- store transaction and once per recorded reply (docs/BENCHMARKS.md, issue 15).

CREATE OR REPLACE FUNCTION faro_lock_message_keys(p_tenant uuid, p_channels text[], p_targets text[])
    RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM count(pg_advisory_xact_lock(k.key))
    FROM (SELECT DISTINCT hashtextextended(p_tenant::text || '/' || c || '/' || t, 0) AS key
          FROM unnest(p_channels, p_targets) AS u(c, t)
          ORDER BY 1) k;
END
$$;
