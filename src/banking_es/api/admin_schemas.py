"""Bodies of the operations routes (/admin/projections, /admin/jobs, /admin/cache,
/admin/outbox, /admin/dead-letters, /admin/shards), for validation and the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from msgspec import Meta, Struct

from banking_es.api.ranges import INT8_MAX
from banking_es.domain.events import EVENT_TYPES

if TYPE_CHECKING:
    EventType = str
else:  # the types the store knows, as an enum in the OpenAPI document
    EventType = Literal[tuple(EVENT_TYPES)]


class RebuildRequest(Struct, forbid_unknown_fields=True, frozen=True):
    from_position: Annotated[
        int,
        Meta(
            ge=0,
            le=INT8_MAX,
            description="Replay the events after this global position only (default: all)",
        ),
    ] = 0
    types: (
        Annotated[
            list[EventType],
            Meta(
                min_length=1,
                max_length=64,
                description="Replay only events of these types: their rows are rebuilt, the"
                " checkpoint does not move",
            ),
        ]
        | None
    ) = None


class RebuildStarted(Struct):
    job_id: str


class ProjectionOut(Struct):
    name: str
    checkpoint: Annotated[int, Meta(description="Every event up to this position is applied")]
    lag_events: int
    lag_seconds: Annotated[float, Meta(description="Age of the oldest event not yet applied")]
    leader: Annotated[
        str | None,
        Meta(
            description="The process holding the projections' lease; null with Kafka (a"
            " consumer group shares the partitions) or when nobody holds it"
        ),
    ]
    status: Literal["ok", "lagging", "stalled", "rebuilding"]


class ProjectionList(Struct):
    data: list[ProjectionOut]


class JobOut(Struct):
    id: str
    kind: str
    status: Literal["running", "done", "failed"]
    done: Annotated[int, Meta(description="Events replayed so far (positions)")]
    total: int
    started_at: datetime
    finished_at: datetime | None
    error: str | None


class CacheLevel(Struct):
    entries: int | None
    hits: int
    misses: int
    evictions: int | None
    approx_bytes: int | None


class CacheOut(Struct):
    l1: CacheLevel
    l2: Annotated[CacheLevel | None, Meta(description="null without REDIS_URL")]
    hit_ratio: Annotated[
        float | None, Meta(description="(L1 + L2 hits) / reads; null before any read")
    ]


class OutboxOut(Struct):
    backlog: int
    oldest_age_seconds: float
    relay_leader: str | None


class LetterPage(Struct):
    data: list[dict[str, Any]]
    has_more: bool
    next_cursor: str | None


class ShardOut(Struct):
    shard: int
    status: Literal["available", "assigned", "rebalancing", "failed"]
    owner: str | None
    epoch: Annotated[int, Meta(description="Grows with every new owner; appends carry it")]
    load: Annotated[
        float,
        Meta(description="Commands per second its owner executed, decayed over about a minute"),
    ]


class InstanceOut(Struct):
    id: str
    url: str
    shards: list[int]
    last_seen: datetime | None
    status: Literal["alive", "gone"]


class ShardsOut(Struct):
    shard_count: int
    shards: list[ShardOut]
    instances: list[InstanceOut]


class RebalanceStarted(Struct):
    moves: list[dict[str, Any]]
