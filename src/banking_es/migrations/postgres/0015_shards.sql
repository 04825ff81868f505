-- Shards (docs/architecture.md, "Many instances"): the shard count fixed for the life of the
-- database, a lease per shard whose epoch grows by one with every new owner, the instances
-- seen, and the append function that refuses an append whose writer's epoch is not current.
CREATE TABLE shard_config (
    id          integer PRIMARY KEY CHECK (id = 1),
    shard_count integer NOT NULL CHECK (shard_count > 0)
);

-- One row per shard, made when a server first starts with a shard count. `owner` is null
-- when nobody holds it; `expires_at` is judged by this server's clock (now()) only.
-- `handover_to`: the instance a move is handing it to (status "rebalancing").
CREATE TABLE shard_leases (
    shard       integer PRIMARY KEY CHECK (shard >= 0),
    owner       text,
    epoch       bigint NOT NULL DEFAULT 0,
    expires_at  timestamptz,
    handover_to text,
    load        double precision NOT NULL DEFAULT 0
);

CREATE TABLE cluster_instances (
    id         text PRIMARY KEY,
    url        text NOT NULL,
    started_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL
);

-- banking_es_append_batch_v2 (0009) with fencing: `fences` is a JSON array of
-- [append (1-based), shard, epoch]. An append whose shard is not at that epoch is refused
-- (listed in o_fenced), in the same transaction as the others' writes; v2 refuses it by
-- an expected version no stream can have (-1) and writes the rest. FOR SHARE on the
-- leases: a claim that bumps an epoch waits until this append commits, and an append that
-- waited on a claim reads the epoch it committed. Without fences it is v2 exactly.
CREATE FUNCTION banking_es_append_batch_v3(
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
    fences jsonb,
    OUT o_head bigint,
    OUT o_now timestamptz,
    OUT o_actual int[],
    OUT o_refused int[],
    OUT o_fenced int[]
) LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    o_fenced := '{}';
    IF jsonb_array_length(fences) > 0 THEN
        PERFORM pg_advisory_xact_lock(lock_key);
        PERFORM 1 FROM shard_leases
        WHERE shard IN (SELECT (f->>1)::int FROM jsonb_array_elements(fences) AS f)
        ORDER BY shard FOR SHARE;
        SELECT coalesce(array_agg(DISTINCT (f->>0)::int), '{}') INTO o_fenced
        FROM jsonb_array_elements(fences) AS f
        LEFT JOIN shard_leases l ON l.shard = (f->>1)::int
        WHERE l.epoch IS DISTINCT FROM (f->>2)::bigint;
    END IF;
    IF cardinality(o_fenced) > 0 THEN
        expected := ARRAY(
            SELECT CASE WHEN x.a = ANY (o_fenced) THEN -1 ELSE x.e END
            FROM unnest(expected, appends) WITH ORDINALITY AS x(e, a, i) ORDER BY x.i
        );
    END IF;
    SELECT b.o_head, b.o_now, b.o_actual, b.o_refused
    INTO o_head, o_now, o_actual, o_refused
    FROM banking_es_append_batch_v2(
        lock_key, streams, expected, appends, new_events, new_outbox, new_snapshots, origin,
        notices, entries, channel
    ) AS b;
END
$fn$;
