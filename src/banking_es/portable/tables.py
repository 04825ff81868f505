"""What an export holds: the tables, their columns, and which rows are still worth moving.

Events, users, the role and unlock logs and the mail queue (sent mail is deleted) move
whole. Logins, revocations, reset tokens, idempotency records and outbox rows move only while
they still mean something at export time. Snapshots, read models, checkpoints, leases and
Kafka consumer state are rebuilt on the target; lock-out state (`login_attempts`) and the
admin API's jobs (`jobs`) are transient and stay behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

#: How a column travels: `json` as its JSON text, `ts` as an ISO 8601 text.
Kind = Literal["int", "text", "json", "ts"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One exported table: columns in file order, the key it is paged and sorted by, and
    the condition (`$1` is the export's cutoff time) a row must meet to be exported."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    #: SQL condition on `$1`; None: every row.
    keep: str | None = None
    #: The column a sequence fills on PostgreSQL: moved past the imported ids.
    serial: str | None = None

    @property
    def uses_cutoff(self) -> bool:
        return self.keep is not None and "$1" in self.keep

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _cols(spec: str) -> tuple[Column, ...]:
    """`"id:int name:text"` -> columns."""
    found = []
    for item in spec.split():
        name, kind = item.split(":")
        assert kind in ("int", "text", "json", "ts"), kind
        found.append(Column(name, kind))  # type: ignore[arg-type]
    return tuple(found)


#: In import order: users before the rows that reference them.
TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "events",
        _cols(
            "position:int stream_id:text version:int event_id:text type:text data:json"
            " metadata:json recorded_at:ts"
        ),
        key=("position",),
    ),
    TableSpec(
        "users",
        _cols(
            "id:text username:text username_key:text email:text email_key:text"
            " password_hash:text roles:text failed_logins:int locked_until:ts"
            " created_at:ts updated_at:ts"
        ),
        key=("id",),
    ),
    TableSpec(
        "role_changes",
        _cols("id:int user_id:text old_roles:text new_roles:text changed_by:text changed_at:ts"),
        key=("id",),
        serial="id",
    ),
    TableSpec(
        "login_unlocks",
        _cols("id:int name_key:text user_id:text locked_until:ts unlocked_by:text unlocked_at:ts"),
        key=("id",),
        serial="id",
    ),
    TableSpec(
        "logins",
        _cols(
            "id:text user_id:text refresh_jti:text created_at:ts refreshed_at:ts expires_at:ts"
            " revoked_at:ts revoked_reason:text"
        ),
        key=("id",),
        keep="revoked_at IS NULL AND expires_at > $1",
    ),
    TableSpec(
        "revocations",
        _cols("seq:int login_id:text expires_at:ts revoked_at:ts"),
        key=("seq",),
        # Kept as long as the revocation list keeps them (`RevocationList`'s grace): the
        # cutoff of this table is moved back by the access tokens' lifetime.
        keep="expires_at > $1",
        serial="seq",
    ),
    TableSpec(
        "password_resets",
        _cols("token_hash:text user_id:text created_at:ts expires_at:ts used_at:ts"),
        key=("token_hash",),
        keep="used_at IS NULL AND expires_at > $1",
    ),
    TableSpec(
        "idempotency_keys",
        _cols(
            "scope:text key:text fingerprint:text status:int body:text created_at:ts expires_at:ts"
        ),
        key=("scope", "key"),
        keep="expires_at > $1",
    ),
    TableSpec(
        "outbox",
        _cols(
            "id:int topic:text key:text payload:json event_position:int created_at:ts"
            " published_at:ts"
        ),
        key=("id",),
        keep="published_at IS NULL",
        serial="id",
    ),
    TableSpec(
        "dead_letters",
        _cols(
            "id:int consumer:text topic:text partition:int offset:int key:text value:text"
            " headers:json error:text attempts:int status:text created_at:ts updated_at:ts"
        ),
        key=("id",),
        serial="id",
    ),
    TableSpec(
        "mail_queue",
        _cols(
            "id:int kind:text user_id:text recipient:text subject:text body:text status:text"
            " attempts:int next_attempt_at:ts last_error:text created_at:ts updated_at:ts"
        ),
        key=("id",),
        serial="id",  # sent mail is deleted: every row is still to send (or dead)
    ),
)

BY_NAME = {spec.name: spec for spec in TABLES}

#: Tables a target must have empty too, though they are rebuilt rather than imported.
REBUILT = ("snapshots", "account_summaries", "transactions")


def cutoff(spec: TableSpec, now: datetime, access_token_expiry_s: int) -> datetime:
    """The `$1` of `spec.keep` for an export made at `now`."""
    if spec.name == "revocations":
        return now - timedelta(seconds=access_token_expiry_s)
    return now


def quoted(name: str) -> str:
    """A column name as SQL (`offset` is a reserved word on both backends)."""
    return f'"{name}"'
