-- `transactions` rows of type `hold` carry the hold's status (pending, captured, voided,
-- expired) and the position of the event that settled it (NULL while pending), so a rebuild
-- from a position puts back to pending the holds settled after it. NULL on other rows.
-- Nullable columns without a default: no row is rewritten.
ALTER TABLE transactions ADD COLUMN status text, ADD COLUMN settled_position bigint;
