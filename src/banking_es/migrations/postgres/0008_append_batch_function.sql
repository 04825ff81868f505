-- The common batch of appends as one statement, deciding each append on its own
-- (eventstore/postgres.py, `Guess`). It replaces 0006's all-or-nothing function, whose
-- batch, when one stream had moved, took the locked path of four round trips, holding the
-- append lock across them.
--
-- It takes the append lock, then reads the head, the clock and the version of every stream
-- (each query of a VOLATILE function takes a fresh snapshot, so these see every batch
-- committed before the lock was granted). An append is refused when one of its streams is
-- not at the version it expects; the others are written: their events with positions
-- head + 1, head + 2, ... in batch order, their outbox rows, their snapshots and the notice
-- entries of their streams (a notice carries no position, so refusing an append changes
-- nothing in the others' entries). Every stream appears in one append of the batch only,
-- so no append depends on another. It answers the head, the clock, the versions it read
-- (in `streams` order) and the refused appends (1-based, batch order). The lock is
-- released, and the notices delivered, when the statement's transaction commits.
CREATE FUNCTION banking_es_append_batch(
    lock_key bigint,
    streams text[],
    expected int[],
    appends int[],
    new_events jsonb,
    new_outbox jsonb,
    new_snapshots jsonb,
    origin text,
    notices text[],
    chunks int[],
    channel text,
    OUT o_head bigint,
    OUT o_now timestamptz,
    OUT o_actual int[],
    OUT o_refused int[]
) LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    skipped text[];
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT coalesce(max(e.position), 0), clock_timestamp() INTO o_head, o_now FROM events e;
    SELECT coalesce(array_agg(coalesce(v.version, 0) ORDER BY s.i), '{}') INTO o_actual
    FROM unnest(streams) WITH ORDINALITY AS s(id, i)
    LEFT JOIN LATERAL (
        SELECT e.version FROM events e WHERE e.stream_id = s.id ORDER BY e.version DESC LIMIT 1
    ) v ON true;
    SELECT coalesce(array_agg(DISTINCT x.a ORDER BY x.a), '{}') INTO o_refused
    FROM unnest(o_actual, expected, appends) AS x(actual, wanted, a)
    WHERE x.actual <> x.wanted;
    SELECT coalesce(array_agg(x.s), '{}') INTO skipped
    FROM unnest(streams, appends) AS x(s, a)
    WHERE x.a = ANY (o_refused);
    -- new_events: [stream, version, event_id, type, data, metadata]; new_outbox: [topic, key,
    -- payload, its event (1-based index into new_events) or null, its append].
    WITH kept AS (
        SELECT x.r, x.o, row_number() OVER (ORDER BY x.o) AS k
        FROM jsonb_array_elements(new_events) WITH ORDINALITY AS x(r, o)
        WHERE NOT (x.r->>0 = ANY (skipped))
    ), written AS (
        INSERT INTO events (position, stream_id, version, event_id, type, data, metadata,
                            recorded_at)
        SELECT o_head + kept.k, kept.r->>0, (kept.r->>1)::int, kept.r->>2, kept.r->>3,
               kept.r->4, kept.r->5, o_now
        FROM kept
    )
    INSERT INTO outbox (topic, key, payload, event_position, created_at)
    SELECT b.r->>0, b.r->>1, nullif(b.r->2, 'null'::jsonb), o_head + kept.k, o_now
    FROM jsonb_array_elements(new_outbox) WITH ORDINALITY AS b(r, o)
    LEFT JOIN kept ON kept.o = (b.r->>3)::bigint
    WHERE NOT ((b.r->>4)::int = ANY (o_refused))
    ORDER BY b.o;
    -- new_snapshots: [stream, version, state, its append].
    INSERT INTO snapshots (stream_id, version, state)
    SELECT r->>0, (r->>1)::int, r->2
    FROM jsonb_array_elements(new_snapshots) AS r
    WHERE NOT ((r->>3)::int = ANY (o_refused))
    ON CONFLICT (stream_id, version) DO NOTHING;
    PERFORM pg_notify(
        channel,
        origin || ' {"at":' || to_json(o_now)::text || ',"s":['
            || string_agg(n.entry, ',' ORDER BY n.i) || ']}'
    )
    FROM unnest(notices, chunks, appends) WITH ORDINALITY AS n(entry, chunk, a, i)
    WHERE n.entry IS NOT NULL AND NOT (n.a = ANY (o_refused))
    GROUP BY n.chunk;
END
$fn$;

DROP FUNCTION banking_es_append_if_current(
    bigint, text[], int[], jsonb, jsonb, text, text[], text
);
