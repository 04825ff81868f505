"""The statements of the PostgreSQL pass: the checks as set operations over all events.

`FOLD` reads every event once, sorted by (account, position), and answers only what needs
a look from Python: versions out of order, balances below the rule, snapshot, `transactions`
and `account_summaries` rows not provably equal to the fold, each account's last event, and
the accounts whose events SQL does not read strictly (`irregular`: folded by the domain's
code instead, as are all accounts with holds, `hold` rows and statuses). `TRANSFERS` pairs
legs, `OUTBOX` checks the outbox. The running fold repeats `Account.apply` for the six
event types; tests/integration/test_verify_sql.py holds it to the Python fold's report.
"""

from __future__ import annotations

from banking_es.projections.transactions import ROW_TYPES

#: Amounts SQL casts: what `Decimal` reads too, so a row SQL reads Python reads alike.
_MONEY = r"'^-?[0-9]+(\.[0-9]+)?$'"
_TEXT = "coalesce(jsonb_typeof(e.data->'{key}'), 'null') IN ('null', 'string')"
_STRING = "jsonb_typeof(e.data->'{key}') = 'string'"
_AMOUNT = _STRING + " AND e.data->>'{key}' ~ " + _MONEY


def _valid() -> str:
    """The events whose `data` SQL reads as `event_from_stored` would: anything else is
    folded by the domain's code (`irregular`)."""
    amount = _AMOUNT.format(key="amount") + " AND " + _TEXT.format(key="description")
    transfer = amount + " AND " + _STRING.format(key="transfer_id")
    opened = " AND ".join(
        [_AMOUNT.format(key="initial_balance")]
        + [_STRING.format(key=k) for k in ("owner_name", "currency")]
        + [_TEXT.format(key="owner_id"), "e.data ? 'account_id'"]
    )
    return (
        f"CASE e.type WHEN 'AccountCreated' THEN {opened}"
        f" WHEN 'MoneyDeposited' THEN {amount} WHEN 'MoneyWithdrawn' THEN {amount}"
        f" WHEN 'TransferSent' THEN {transfer} AND {_STRING.format(key='to_account_id')}"
        f" WHEN 'TransferReceived' THEN {transfer} AND {_STRING.format(key='from_account_id')}"
        f" WHEN 'AccountClosed' THEN {_TEXT.format(key='reason')} ELSE false END"
        " AND (e.metadata->>'schema' IS NULL OR e.metadata->>'schema' = $1::text)"
    )


_ISO = (
    "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
    " || CASE WHEN extract(microseconds FROM {c}) % 1000000 = 0 THEN ''"
    " ELSE to_char({c} AT TIME ZONE 'UTC', '.US') END || '+00:00'"
)

#: The rule of funds over the fold's columns: `lowest_allowed_balance` in SQL, which
#: tests/integration/test_verify_sql.py checks against the Python function. SQL folds only
#: accounts of the six types above, which never have an overdraft limit (any other type
#: makes an account `irregular`, folded by the domain's code), so the rule is zero here.
LOWEST_ALLOWED = "0.00"

#: The `transactions` row type of an event (`ROW_TYPES`), NULL when it makes no row.
_ROW_TYPE = (
    "CASE e.type "
    + " ".join(f"WHEN '{event}' THEN '{row}'" for event, row in ROW_TYPES.items())
    + " END"
)

_PROBLEMS = f"""
  NOT ok OR NOT opens OR closes > 1 OR (previous IS NULL AND version <> 1) AS irregular,
  version <> coalesce(previous, 0) + 1 AS bad_version,
  balance < {LOWEST_ALLOWED} AS bad_balance,
  CASE WHEN t_found AND NOT t_expected THEN 'unexpected'
    WHEN t_expected AND NOT t_found THEN 'missing'
    WHEN t_expected AND NOT (t_same AND t_balance = balance) THEN 'differs' END AS t_problem,
  position <= $3 AND (next IS NULL OR next > $3) AS summary"""
_OPENED = (
    "o.data->>'owner_name' AS owner_name, o.data->>'owner_id' AS owner_id,"
    " o.data->>'currency' AS currency"
)
_STATUS = "CASE WHEN w.closed_reason IS NULL THEN $4::text ELSE $5::text END"
#: A snapshot provably equal to the fold (compared as `to_snapshot` writes it); any other
#: is read by Python, which says how it differs, if it does.
_SNAPSHOT_SAME = f"""w.state->'id' = to_jsonb(w.stream_id)
  AND w.state->'owner_name' = o.data->'owner_name'
  AND coalesce(w.state->'owner_id', 'null') = coalesce(o.data->'owner_id', 'null')
  AND w.state->'balance' = to_jsonb(w.balance::numeric(17, 2)::text)
  AND w.state->'currency' = o.data->'currency' AND w.state->'status' = to_jsonb({_STATUS})
  AND w.state->'version' = to_jsonb(w.version)
  AND coalesce(w.state->'closed_reason', 'null') = coalesce(to_jsonb(w.closed_reason), 'null')
  AND w.state->>'created_at' = {_ISO.format(c="o.recorded_at")}
  AND w.state->>'updated_at' = {_ISO.format(c="w.recorded_at")}"""
_SUMMARY_SAME = f"""a.owner_name = o.data->>'owner_name'
  AND a.owner_id IS NOT DISTINCT FROM o.data->>'owner_id' AND a.balance = w.balance
  AND a.currency = o.data->>'currency' AND a.status = {_STATUS} AND a.version = w.version
  AND a.created_position = o.position AND a.created_at = o.recorded_at
  AND a.updated_at = w.recorded_at"""

# $1 schema version (text), $2 `transactions` checkpoint, $3 `account_summaries` checkpoint,
# $4 `OPEN`, $5 `CLOSED`.
#: Every event with its `transactions` row and snapshot, folded per account; the rows with
#: a problem, a snapshot, the summary at the checkpoint or the account's last event.
FOLD = f"""
SELECT w.position, w.stream_id, w.version, w.type, w.balance, ({LOWEST_ALLOWED}) AS lowest,
  w.previous, w.irregular, w.bad_version, w.bad_balance, w.t_problem, w.next IS NULL AS last,
  w.events, w.rows_seen, w.state IS NOT NULL AS snapshot, w.summary,
  CASE WHEN w.state IS NOT NULL AND ({_SNAPSHOT_SAME}) IS NOT TRUE THEN w.state END AS state,
  w.summary AND a.account_id IS NOT NULL AS has_row,
  w.summary AND ({_SUMMARY_SAME}) IS NOT TRUE AS summary_differs,
  o.position AS created_position, o.recorded_at AS created_at, w.recorded_at, {_OPENED},
  {_STATUS} AS status, w.closed_reason
FROM (
  SELECT x.*, {_PROBLEMS} FROM (
    SELECT j.*, lag(version) OVER s AS previous, lead(position) OVER s AS next,
      sum(delta) OVER s AS balance, count(reason) OVER s AS closes,
      max(reason) OVER s AS closed_reason, count(*) FILTER (WHERE t_found) OVER s AS rows_seen,
      count(*) OVER s AS events
    FROM (
      SELECT position, stream_id, version, type, recorded_at, ok, opens, reason, t_found,
        t_balance, t_expected, state,
        CASE WHEN type IN ('MoneyWithdrawn', 'TransferSent') THEN -amount
          WHEN type = 'AccountClosed' THEN 0 ELSE amount END AS delta,
        (t_same AND t_amount = amount AND t_description IS NOT DISTINCT FROM description
          AND t_transfer IS NOT DISTINCT FROM transfer_id) IS TRUE AS t_same
      FROM (
        SELECT i.*, CASE WHEN ok AND type <> 'AccountClosed' THEN amount_text::numeric END
          AS amount
        FROM (
          SELECT e.position, e.stream_id, e.version, e.type, e.recorded_at, {_valid()} AS ok,
            (e.version = 1) = (e.type = 'AccountCreated') AS opens,
            CASE e.type WHEN 'AccountCreated' THEN e.data->>'initial_balance'
              ELSE e.data->>'amount' END AS amount_text,
            CASE WHEN e.type <> 'AccountCreated' THEN e.data->>'description' END
              AS description,
            CASE WHEN e.type IN ('TransferSent', 'TransferReceived')
              THEN e.data->>'transfer_id' END AS transfer_id,
            CASE WHEN e.type = 'AccountClosed' THEN coalesce(e.data->>'reason', '') END
              AS reason,
            t.account_id IS NOT NULL AS t_found, t.balance_after AS t_balance,
            t.id = e.event_id AND t.position = e.position AND t.occurred_at = e.recorded_at
              AND t.type = {_ROW_TYPE} AND t.status IS NULL AND t.settled_position IS NULL
              AS t_same, t.amount AS t_amount,
            t.description AS t_description, t.transfer_id AS t_transfer,
            {_ROW_TYPE} IS NOT NULL AND e.position <= $2 AS t_expected, s.state
          FROM events e
          LEFT JOIN transactions t ON t.account_id = e.stream_id AND t.version = e.version
          LEFT JOIN snapshots s ON s.stream_id = e.stream_id AND s.version = e.version
          -- OFFSET 0 keeps each level a subquery: its columns are computed once, below
          -- the sort and in the parallel workers, instead of once per use above it.
          OFFSET 0
        ) i
      ) k
      OFFSET 0
    ) j
    WINDOW s AS (PARTITION BY stream_id COLLATE "C" ORDER BY position ROWS UNBOUNDED PRECEDING)
  ) x
) w
LEFT JOIN events o ON (w.state IS NOT NULL OR w.summary) AND o.stream_id = w.stream_id
  AND o.version = 1
LEFT JOIN account_summaries a ON w.summary AND a.account_id = w.stream_id
WHERE w.irregular OR w.bad_version OR w.bad_balance OR w.t_problem IS NOT NULL
  OR w.state IS NOT NULL OR w.summary OR w.next IS NULL
ORDER BY w.position"""

_LEG = "max({col}) FILTER (WHERE type = '{type}') AS {name}"
_LEGS = ", ".join(
    _LEG.format(col=col, type=type_, name=f"{side}_{col}")
    for side, type_ in (("out", "TransferSent"), ("into", "TransferReceived"))
    for col in ("stream_id", "other", "amount", "currency", "position")
)
#: The transfers of the regular accounts ($1: the others) that are not one clean pair, and
#: how many are (`transfer_id` NULL). Amounts SQL cannot read are NULL (never equal).
TRANSFERS = f"""
WITH g AS (
  SELECT transfer_id, count(*) AS n, count(*) FILTER (WHERE type = 'TransferSent') AS sent,
    {_LEGS}
  FROM (
    SELECT e.data->>'transfer_id' AS transfer_id, e.type, e.stream_id,
      coalesce(e.data->>'to_account_id', e.data->>'from_account_id') AS other,
      CASE WHEN e.data->>'amount' ~ {_MONEY} THEN (e.data->>'amount')::numeric END AS amount,
      o.currency, e.position
      -- (not a join on `type`: its plan reads every event of each account)
    FROM events e JOIN (SELECT stream_id, version, data->>'currency' AS currency FROM events)
      o ON o.stream_id = e.stream_id AND o.version = 1
    WHERE e.type IN ('TransferSent', 'TransferReceived') AND e.stream_id <> ALL($1::text[])
  ) l
  GROUP BY transfer_id
)
SELECT * FROM g WHERE (n = 2 AND sent = 1 AND out_other = into_stream_id
  AND into_other = out_stream_id AND out_amount = into_amount
  AND out_currency = into_currency) IS NOT TRUE
UNION ALL
SELECT NULL, count(*), NULL, {", ".join(["NULL"] * 10)} FROM g WHERE n = 2 AND sent = 1"""

#: The legs of the transfers in $1 (not of the accounts in $2), for the Python fold to match.
LEGS = f"""
SELECT e.position, e.stream_id, e.type, e.data->>'transfer_id' AS transfer_id,
  coalesce(e.data->>'to_account_id', e.data->>'from_account_id') AS other,
  CASE WHEN e.data->>'amount' ~ {_MONEY} THEN (e.data->>'amount')::numeric END AS amount,
  o.data->>'currency' AS currency
FROM events e JOIN events o ON o.stream_id = e.stream_id AND o.version = 1
WHERE e.type IN ('TransferSent', 'TransferReceived') AND e.data->>'transfer_id' = ANY($1::text[])
  AND e.stream_id <> ALL($2::text[])
ORDER BY e.position"""

#: Each event row of the outbox ($1: the events topic) that is wrong: `previous` is the
#: greatest event position of the good rows before it (by id).
OUTBOX = """
SELECT id, topic, key, event_position, stream_id, previous FROM (
  SELECT o.id, o.topic, o.key, o.event_position, e.stream_id,
    max(o.event_position) FILTER (WHERE o.topic = $1) OVER (ORDER BY o.id
      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS previous
  FROM outbox o LEFT JOIN events e ON e.position = o.event_position
  WHERE o.event_position IS NOT NULL OR o.topic = $1
) x
WHERE event_position IS NULL OR topic <> $1 OR stream_id IS NULL OR stream_id <> key
  OR event_position <= previous OR event_position > previous + 1
ORDER BY id"""
OUTBOX_ROWS = "SELECT count(*) FROM outbox WHERE event_position IS NOT NULL OR topic = $1"
#: Each event whose position does not follow the one before it.
GAPS = """
SELECT previous, position FROM (
  SELECT position, lag(position, 1, 0::bigint) OVER (ORDER BY position) AS previous FROM events
) p WHERE position <> previous + 1 ORDER BY position"""
#: Accounts with an `account_summaries` row but no `AccountCreated` up to $1 ($2: the
#: irregular accounts, compared by the Python fold).
SUMMARY_ORPHANS = """
SELECT a.account_id FROM account_summaries a
WHERE a.account_id <> ALL($2::text[]) AND NOT EXISTS (SELECT 1 FROM events o
  WHERE o.stream_id = a.account_id AND o.version = 1 AND o.position <= $1)
ORDER BY a.account_id"""
