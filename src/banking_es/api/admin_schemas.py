"""Bodies of the operations routes (/admin/projections, /admin/jobs, /admin/cache,
/admin/outbox, /admin/dead-letters), for validation and the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from banking_es.api.ranges import INT8_MAX
from banking_es.domain.events import EVENT_TYPES

if TYPE_CHECKING:
    EventType = str
else:  # the types the store knows, as an enum in the OpenAPI document
    EventType = Literal[tuple(EVENT_TYPES)]


class RebuildRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    from_position: Annotated[StrictInt, Field(ge=0, le=INT8_MAX)] = Field(
        0, description="Replay the events after this global position only (default: all)"
    )
    types: Annotated[list[EventType], Field(min_length=1, max_length=64)] | None = Field(
        None,
        description="Replay only events of these types: their rows are rebuilt, the"
        " checkpoint does not move",
    )


class RebuildStarted(BaseModel):
    job_id: str


class ProjectionOut(BaseModel):
    name: str
    checkpoint: int = Field(description="Every event up to this position is applied")
    lag_events: int
    lag_seconds: float = Field(description="Age of the oldest event not yet applied")
    leader: str | None = Field(
        description="The process holding the projections' lease; null with Kafka (a"
        " consumer group shares the partitions) or when nobody holds it"
    )
    status: Literal["ok", "lagging", "stalled", "rebuilding"]


class ProjectionList(BaseModel):
    data: list[ProjectionOut]


class JobOut(BaseModel):
    id: str
    kind: str
    status: Literal["running", "done", "failed"]
    done: int = Field(description="Events replayed so far (positions)")
    total: int
    started_at: datetime
    finished_at: datetime | None
    error: str | None


class CacheLevel(BaseModel):
    entries: int | None
    hits: int
    misses: int
    evictions: int | None
    approx_bytes: int | None


class CacheOut(BaseModel):
    l1: CacheLevel
    l2: CacheLevel | None = Field(description="null without REDIS_URL")
    hit_ratio: float | None = Field(description="(L1 + L2 hits) / reads; null before any read")


class OutboxOut(BaseModel):
    backlog: int
    oldest_age_seconds: float
    relay_leader: str | None


class LetterPage(BaseModel):
    data: list[dict[str, Any]]
    has_more: bool
    next_cursor: str | None
