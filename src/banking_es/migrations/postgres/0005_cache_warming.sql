-- Cache warming reads the most recently active accounts first.
CREATE INDEX account_summaries_updated ON account_summaries (updated_at);
