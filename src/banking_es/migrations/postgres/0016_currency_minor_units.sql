-- Amounts keep their currency's minor digits (JPY 0, USD 2, BHD 3, UYW 4): numeric with
-- a scale of 2 would round BHD's 1.505 and pad JPY's 150 to 150.00. An unconstrained
-- numeric stores each value with the digits it was written with (USD rows stay 1.50);
-- dropping the scale is binary-compatible, so no row is rewritten.
ALTER TABLE account_summaries ALTER COLUMN balance TYPE numeric;
ALTER TABLE transactions ALTER COLUMN amount TYPE numeric,
                         ALTER COLUMN balance_after TYPE numeric;
