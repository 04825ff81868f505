"""The shard map in the database: one lease per shard, the shard count, the instances seen.

A lease has an owner, an expiry and an epoch. Every claim adds one to the epoch in the same
UPDATE that takes the row, so two owners never share an epoch, and the event store refuses
an append whose writer's epoch is no longer the shard's (eventstore `Fence`). Expiry is
judged by the database's clock (`now()` on PostgreSQL), never an instance's; SQLite is one
machine, whose clock is the only one. Claims that race for one row are serialized by its
row lock; `claim_free` skips rows another claimer is taking (`SKIP LOCKED`).

    ShardCountMismatch   the database was set up with another SHARD_COUNT
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from banking_es.config import SettingsError
from banking_es.db.base import Connection, Database, Row

ShardStatus = Literal["available", "assigned", "rebalancing", "failed"]

_CLOCK = re.compile(r"\{(now|later|earlier)\}")
_COLUMNS = "shard, owner, epoch, expires_at, handover_to, load"


class ShardCountMismatch(SettingsError):
    """The server's SHARD_COUNT is not the one stored with the database: a setting the
    server cannot run with (it would map accounts to other shards)."""

    def __init__(self, configured: int, stored: int) -> None:
        super().__init__(
            f"SHARD_COUNT is {configured} but this database was set up with {stored} shards;"
            f" start with SHARD_COUNT={stored}"
        )
        self.configured = configured
        self.stored = stored


@dataclass(frozen=True, slots=True)
class Lease:
    """A shard held by `owner` as of its epoch, until `expires_at` (the database's time)."""

    shard: int
    owner: str
    epoch: int
    expires_at: datetime
    #: The instance a move hands this shard to: drain, then `release`.
    handover_to: str | None = None
    #: The load last recorded for the shard (by this owner or the one before).
    load: float = 0.0


@dataclass(frozen=True, slots=True)
class ShardState:
    """A row of the shard map with its status judged by the database's clock."""

    shard: int
    status: ShardStatus
    owner: str | None
    epoch: int
    expires_at: datetime | None
    handover_to: str | None
    load: float


@dataclass(frozen=True, slots=True)
class Instance:
    """An instance that registered; `alive` while it was seen within one lease ttl."""

    id: str
    url: str
    started_at: datetime
    last_seen: datetime
    alive: bool


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _lease(row: Row) -> Lease:
    return Lease(
        row["shard"], row["owner"], int(row["epoch"]), _time(row["expires_at"]),
        row["handover_to"], float(row["load"]),
    )  # fmt: skip


class ShardLeases:
    """Claims, renewals and releases of shard leases, and the registry of instances."""

    def __init__(self, db: Database, *, ttl: float) -> None:
        self.db = db
        self.ttl = ttl

    def _sql(self, template: str, args: Sequence[Any]) -> tuple[str, list[Any]]:
        """`template` with its clock markers filled in: `{now}`, `{later}` (now + ttl),
        `{earlier}` (now - ttl), as the database's clock on PostgreSQL, as this machine's
        (passed in) on SQLite. The markers take placeholders after the statement's own."""
        values = list(args)
        postgres = self.db.dialect == "postgres"
        now = datetime.now(UTC)
        shift = {"now": 0.0, "later": self.ttl, "earlier": -self.ttl}

        def fill(match: re.Match[str]) -> str:
            offset = shift[match[1]]
            if postgres:
                if not offset:
                    return "now()"
                values.append(offset)
                return f"(now() + ${len(values)}::float8 * interval '1 second')"
            values.append(now + timedelta(seconds=offset))
            return f"${len(values)}"

        return _CLOCK.sub(fill, template), values

    async def _fetch(self, conn: Connection, template: str, *args: Any) -> list[Row]:
        sql, values = self._sql(template, args)
        return await conn.fetch(sql, *values)

    # ---- the shard count ----------------------------------------------------------------

    async def ensure_shard_count(self, count: int) -> None:
        """Store `count` with a database that has none yet and make its lease rows; raise
        `ShardCountMismatch` if the database holds another."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO shard_config (id, shard_count) VALUES (1, $1)"
                " ON CONFLICT (id) DO NOTHING",
                count,
            )
            stored = int(await conn.fetchval("SELECT shard_count FROM shard_config"))
            if stored != count:
                raise ShardCountMismatch(count, stored)
            await conn.executemany(
                "INSERT INTO shard_leases (shard) VALUES ($1) ON CONFLICT (shard) DO NOTHING",
                [(shard,) for shard in range(count)],
            )

    async def shard_count(self) -> int | None:
        value = await self.db.fetchval("SELECT shard_count FROM shard_config")
        return int(value) if value is not None else None

    # ---- leases -------------------------------------------------------------------------

    async def claim(self, shard: int, owner: str) -> Lease | None:
        """Take `shard` for `owner` with the next epoch, if it is free, expired, handed over
        to `owner`, or `owner`'s already (a new term: in-flight writes of the old one are
        fenced off). None when another holds it."""
        # A handover taken stamps `moved_at` (`moved_within`); on PostgreSQL by the clock
        # after any wait for the row, so the cooldown never starts before the claim.
        stamp = "clock_timestamp()" if self.db.dialect == "postgres" else "{now}"
        async with self.db.transaction() as conn:
            rows = await self._fetch(
                conn,
                "UPDATE shard_leases SET owner = $2, epoch = epoch + 1, expires_at = {later},"
                f" moved_at = CASE WHEN owner IS NULL AND handover_to = $2 THEN {stamp}"
                " ELSE moved_at END,"
                " handover_to = NULL, released_by = NULL WHERE shard = $1 AND (expires_at IS NULL"
                " OR expires_at <= {now} OR owner = $2 OR (owner IS NULL AND handover_to = $2))"
                f" RETURNING {_COLUMNS}",
                shard,
                owner,
            )
        return _lease(rows[0]) if rows else None

    async def claim_free(self, owner: str, limit: int) -> list[Lease]:
        """Take up to `limit` shards that nobody holds (free or expired, not being handed to
        another), lowest numbers first; concurrent claimers get disjoint shards."""
        skip = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgres" else ""
        free = "(expires_at IS NULL OR expires_at <= {now})"  # a handover's reservation too
        async with self.db.transaction() as conn:
            rows = await self._fetch(
                conn,
                "UPDATE shard_leases SET owner = $1, epoch = epoch + 1, expires_at = {later},"
                f" handover_to = NULL, released_by = NULL WHERE {free} AND shard IN"
                " (SELECT shard FROM shard_leases"
                f" WHERE {free} ORDER BY shard LIMIT $2{skip}) RETURNING {_COLUMNS}",
                owner,
                limit,
            )
        return sorted((_lease(row) for row in rows), key=lambda lease: lease.shard)

    async def renew(self, lease: Lease, load: float | None = None) -> Lease | None:
        """Push the lease's expiry one ttl ahead (and record the shard's load); None when it
        is no longer this term's (another claimed it: its epoch moved on)."""
        async with self.db.transaction() as conn:
            rows = await self._fetch(
                conn,
                "UPDATE shard_leases SET expires_at = {later}, load = coalesce($4, load)"
                f" WHERE shard = $1 AND owner = $2 AND epoch = $3 RETURNING {_COLUMNS}",
                lease.shard,
                lease.owner,
                lease.epoch,
                load,
            )
        return _lease(rows[0]) if rows else None

    async def release(self, lease: Lease) -> bool:
        """Give the shard up at once (a graceful shutdown, the end of a handover); False if
        it was no longer this term's. A shard being handed over stays reserved for its
        target for one ttl, and remembers who released it (`leave`)."""
        async with self.db.transaction() as conn:
            rows = await self._fetch(
                conn,
                "UPDATE shard_leases SET owner = NULL, expires_at = CASE WHEN handover_to IS NULL"
                " THEN NULL ELSE {later} END, released_by = CASE WHEN handover_to IS NULL"
                " THEN NULL ELSE owner END WHERE shard = $1 AND owner = $2 AND epoch = $3"
                " RETURNING shard",
                lease.shard,
                lease.owner,
                lease.epoch,
            )
        return bool(rows)

    async def hand_over(self, shard: int, target: str) -> bool:
        """Ask the shard's owner to hand it to `target` (it sees `handover_to` when it next
        renews); False if nobody holds it or `target` is not alive. The target's row stays
        locked until the handover is written, so an instance that is leaving (`leave`) is
        either seen gone here or has the handover called off there."""
        share = " FOR SHARE" if self.db.dialect == "postgres" else ""  # SQLite: one writer
        async with self.db.transaction() as conn:
            alive = await self._fetch(
                conn,
                "SELECT id FROM cluster_instances WHERE id = $1 AND last_seen > {earlier}" + share,
                target,
            )
            if not alive:
                return False
            rows = await conn.fetch(
                "UPDATE shard_leases SET handover_to = $2 WHERE shard = $1 AND owner IS NOT NULL"
                " RETURNING shard",
                shard,
                target,
            )
        return bool(rows)

    async def moved_within(self, seconds: float) -> set[int]:
        """The shards whose owner took them by a handover (a move between live instances)
        less than `seconds` ago, by the database's clock."""
        if self.db.dialect == "postgres":
            since: Any = seconds
            bound = "now() - $1::float8 * interval '1 second'"
        else:
            since, bound = datetime.now(UTC) - timedelta(seconds=seconds), "$1"
        rows = await self.db.fetch(
            f"SELECT shard FROM shard_leases WHERE moved_at > {bound} ORDER BY shard", since
        )
        return {row["shard"] for row in rows}

    async def epochs(self, shards: Sequence[int]) -> dict[int, int]:
        rows = await self.db.fetch(
            "SELECT shard, epoch FROM shard_leases ORDER BY shard",
        )
        wanted = set(shards)
        return {row["shard"]: int(row["epoch"]) for row in rows if row["shard"] in wanted}

    async def states(self) -> list[ShardState]:
        """Every shard with its status: `assigned` (held), `failed` (its owner's lease
        lapsed), `rebalancing` (being handed over), `available` (nobody's)."""
        sql, values = self._sql(
            f"SELECT {_COLUMNS}, CASE WHEN expires_at <= {{now}} THEN 1 ELSE 0 END AS lapsed"
            " FROM shard_leases ORDER BY shard",
            (),
        )
        states = []
        for row in await self.db.fetch(sql, *values):
            lapsed = bool(row["lapsed"])
            status: ShardStatus
            if row["owner"] is not None and lapsed:
                status = "failed"
            elif row["handover_to"] is not None and not lapsed:
                status = "rebalancing"
            else:
                status = "assigned" if row["owner"] is not None else "available"
            expires = row["expires_at"]
            states.append(
                ShardState(
                    row["shard"], status, row["owner"], int(row["epoch"]),
                    _time(expires) if expires is not None else None, row["handover_to"],
                    float(row["load"]),
                )
            )  # fmt: skip
        return states

    # ---- instances ----------------------------------------------------------------------

    async def register(self, instance_id: str, url: str) -> None:
        """Record that `instance_id` (at `url`) is alive now; call it with every renewal."""
        async with self.db.transaction() as conn:
            await self._fetch(
                conn,
                "INSERT INTO cluster_instances (id, url, started_at, last_seen)"
                " VALUES ($1, $2, {now}, {now}) ON CONFLICT (id) DO UPDATE"
                " SET url = excluded.url, last_seen = excluded.last_seen RETURNING id",
                instance_id,
                url,
            )

    async def leave(self, instance_id: str) -> None:
        """Record that `instance_id` stopped (it shows `gone` at once, not one ttl later), and
        call off the moves to it: a shard not yet released stays with its owner; one released
        for it goes back to the live instance that released it (reserved for one ttl), else
        is free at once. Either way it stays where it was, not on whoever claims first."""
        back = (
            "owner IS NULL AND released_by IN (SELECT id FROM cluster_instances"
            " WHERE last_seen > {earlier} AND id <> $1)"
        )
        async with self.db.transaction() as conn:
            await self._fetch(
                conn,
                "UPDATE cluster_instances SET last_seen = {earlier} WHERE id = $1 RETURNING id",
                instance_id,
            )
            await self._fetch(
                conn,
                f"UPDATE shard_leases SET handover_to = CASE WHEN {back} THEN released_by END,"
                f" expires_at = CASE WHEN owner IS NOT NULL THEN expires_at WHEN {back}"
                " THEN {later} END, released_by = NULL WHERE handover_to = $1 RETURNING shard",
                instance_id,
            )

    async def instances(self) -> list[Instance]:
        sql, values = self._sql(
            "SELECT id, url, started_at, last_seen,"
            " CASE WHEN last_seen > {earlier} THEN 1 ELSE 0 END AS alive"
            " FROM cluster_instances ORDER BY id",
            (),
        )
        return [
            Instance(
                row["id"], row["url"], _time(row["started_at"]), _time(row["last_seen"]),
                bool(row["alive"]),
            )
            for row in await self.db.fetch(sql, *values)
        ]  # fmt: skip
