-- `banking-es verify` reads the transactions rows in position order beside the events (a
-- merge), instead of looking each one up by (account_id, version). Positions only grow, so
-- each insert appends to the index's last page.
CREATE INDEX transactions_position ON transactions (position);
