-- The batch function of 0008, doing less work in the common case (docs/performance.md,
-- ninth round): about a tenth less time per append in the statement, which runs under the
-- append lock.
--
-- * The notices come ready: one body per payload (its entries joined by commas, built by
--   the client before the lock), and where each stream's entry is in them (`entries`:
--   [body (1-based), first byte (1-based), length in bytes] of its UTF-8, or null for a
--   stream without one; JSON, which the client writes faster than an array per column). When the statement refuses no append it only adds the
--   head of each payload (origin and clock) and sends the bodies; before, it re-joined the
--   entries with string_agg every time, most of what the notices cost.
-- * When it refuses no append, the positions are head + the index of the event in
--   `new_events` and the outbox rows point at them directly: no window over the kept events
--   and no join of the outbox rows to them.
--
-- When it refuses some, it does what 0008 does: the other appends are written with dense
-- positions, and each payload is rebuilt from the entries of the written streams, cut out
-- of the bodies by their byte offsets.
--
-- It has a name of its own, and 0008's function stays: a process of the previous release
-- still running beside this one during an upgrade keeps appending safely (both take the same
-- lock and send notices in the same format). An overload of the same name would not do: the
-- previous release sends its arguments untyped, and PostgreSQL could not choose between the
-- two ("function ... is not unique"; tests/integration/test_postgres_append_batch.py).
CREATE FUNCTION banking_es_append_batch_v2(
    lock_key bigint,
    streams text[],
    expected int[],
    appends int[],
    new_events jsonb,
    new_outbox jsonb,
    new_snapshots jsonb,
    origin text,
    notices text[],
    entries jsonb,
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
    -- new_events: [stream, version, event_id, type, data, metadata]; new_outbox: [topic, key,
    -- payload, its event (1-based index into new_events) or null, its append]; new_snapshots:
    -- [stream, version, state, its append].
    IF cardinality(o_refused) = 0 THEN
        WITH written AS (
            INSERT INTO events (position, stream_id, version, event_id, type, data, metadata,
                                recorded_at)
            SELECT o_head + x.o, x.r->>0, (x.r->>1)::int, x.r->>2, x.r->>3, x.r->4, x.r->5,
                   o_now
            FROM jsonb_array_elements(new_events) WITH ORDINALITY AS x(r, o)
        )
        INSERT INTO outbox (topic, key, payload, event_position, created_at)
        SELECT b.r->>0, b.r->>1, nullif(b.r->2, 'null'::jsonb), o_head + (b.r->>3)::bigint,
               o_now
        FROM jsonb_array_elements(new_outbox) WITH ORDINALITY AS b(r, o)
        ORDER BY b.o;
        INSERT INTO snapshots (stream_id, version, state)
        SELECT r->>0, (r->>1)::int, r->2
        FROM jsonb_array_elements(new_snapshots) AS r
        ON CONFLICT (stream_id, version) DO NOTHING;
        PERFORM pg_notify(
            channel, origin || ' {"at":' || to_json(o_now)::text || ',"s":[' || n.body || ']}'
        )
        FROM unnest(notices) WITH ORDINALITY AS n(body, i)
        ORDER BY n.i;
        RETURN;
    END IF;
    SELECT coalesce(array_agg(x.s), '{}') INTO skipped
    FROM unnest(streams, appends) AS x(s, a)
    WHERE x.a = ANY (o_refused);
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
    INSERT INTO snapshots (stream_id, version, state)
    SELECT r->>0, (r->>1)::int, r->2
    FROM jsonb_array_elements(new_snapshots) AS r
    WHERE NOT ((r->>3)::int = ANY (o_refused))
    ON CONFLICT (stream_id, version) DO NOTHING;
    PERFORM pg_notify(
        channel,
        origin || ' {"at":' || to_json(o_now)::text || ',"s":['
            || string_agg(
                convert_from(
                    substring(convert_to(notices[n.notice], 'UTF8') FROM n.start FOR n.length),
                    'UTF8'
                ),
                ',' ORDER BY n.i
            )
            || ']}'
    )
    FROM (
        SELECT (x.at->>0)::int AS notice, (x.at->>1)::int AS start, (x.at->>2)::int AS length,
               x.i, u.a
        FROM jsonb_array_elements(entries) WITH ORDINALITY AS x(at, i)
        JOIN unnest(appends) WITH ORDINALITY AS u(a, i) ON u.i = x.i
    ) n
    WHERE n.notice IS NOT NULL AND NOT (n.a = ANY (o_refused))
    GROUP BY n.notice
    ORDER BY n.notice;
END
$fn$;
