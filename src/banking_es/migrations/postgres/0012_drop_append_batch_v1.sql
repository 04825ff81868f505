-- 0008's batch function: no server calls it any more. The release that wrote 0009 calls
-- banking_es_append_batch_v2, which this one calls too, so a rolling upgrade from that
-- release needs only v2. Upgrading from an older release, stop its servers first
-- (docs/architecture.md, "Upgrades").
DROP FUNCTION banking_es_append_batch(
    bigint, text[], int[], int[], jsonb, jsonb, jsonb, text, text[], int[], text
);
