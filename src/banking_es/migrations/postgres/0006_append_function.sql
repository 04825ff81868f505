-- The common batch of appends as one statement: one round trip and one implicit transaction
-- (eventstore/postgres.py, `Guess`). It takes the append lock, then reads the head, the
-- clock and the version of every stream; each query of a VOLATILE function takes a fresh
-- snapshot, so these see every batch committed before the lock was granted. Only when every
-- stream is at the version its append expects does it write the events, their outbox rows
-- and the notices (positions in `new_events` order and in `new_outbox` are relative to the
-- head). It answers the head, the clock, whether it wrote, and the versions it read. The
-- lock is released, and the notices delivered, when the statement's transaction commits.
CREATE FUNCTION banking_es_append_if_current(
    lock_key bigint,
    streams text[],
    expected int[],
    new_events jsonb,
    new_outbox jsonb,
    origin text,
    notices text[],
    channel text,
    OUT o_head bigint,
    OUT o_now timestamptz,
    OUT o_ok boolean,
    OUT o_actual int[]
) LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT coalesce(max(e.position), 0), clock_timestamp() INTO o_head, o_now FROM events e;
    SELECT coalesce(array_agg(coalesce(v.version, 0) ORDER BY s.i), '{}') INTO o_actual
    FROM unnest(streams) WITH ORDINALITY AS s(id, i)
    LEFT JOIN LATERAL (
        SELECT e.version FROM events e WHERE e.stream_id = s.id ORDER BY e.version DESC LIMIT 1
    ) v ON true;
    o_ok := o_actual = coalesce(expected, '{}');
    IF NOT o_ok THEN
        RETURN;
    END IF;
    INSERT INTO events (position, stream_id, version, event_id, type, data, metadata, recorded_at)
    SELECT o_head + x.o, x.r->>0, (x.r->>1)::int, x.r->>2, x.r->>3, x.r->4, x.r->5, o_now
    FROM jsonb_array_elements(new_events) WITH ORDINALITY AS x(r, o);
    INSERT INTO outbox (topic, key, payload, event_position, created_at)
    SELECT r->>0, r->>1, nullif(r->2, 'null'::jsonb), o_head + (r->>3)::bigint, o_now
    FROM jsonb_array_elements(new_outbox) AS r;
    PERFORM pg_notify(
        channel,
        origin || ' {"h":' || o_head || ',"at":' || to_json(o_now)::text || ',"s":[' || n || ']}'
    )
    FROM unnest(notices) AS n;
END
$fn$;
