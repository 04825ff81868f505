"""The stream notices' format: what a PostgreSQL batch sends on `STREAMS_CHANNEL` and how
another process reads it (`eventstore/stream_notices.py`).

A payload is `<origin> {"at": <recorded_at>, "s": [entry, ...]}`; an entry is
`[stream_id, version, [[version, event_id, type, data, metadata], ...]]` with the stream's
new events, or `[stream_id, version]` when those do not fit in one payload. Notices carry
no global positions: their readers fold events into account states, which need none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from banking_es.eventstore.base import AppendedElsewhere, NoticedEvent

STREAMS_CHANNEL = "banking_es_streams"
#: PostgreSQL refuses notify payloads of 8,000 bytes or more.
NOTICE_BYTES = 7_000

#: Room for a notice's head: the origin, `{"at":"<ISO time>","s":[` and `]}`.
_NOTICE_HEAD = 100


def notice_entries(appended: dict[str, list[list[Any]]]) -> list[bytes | None]:
    """One notice entry (UTF-8 JSON) per stream of `appended` (stream -> its new events), in
    its order: the stream's new version and events, or only the version when the events do
    not fit in one payload beside its head; None for a stream without new events."""
    room = NOTICE_BYTES - _NOTICE_HEAD
    entries: list[bytes | None] = []
    for stream_id, events in appended.items():
        if not events:
            entries.append(None)
            continue
        version = events[-1][0]
        entry = orjson.dumps([stream_id, version, events])
        if len(entry) > room:
            entry = orjson.dumps([stream_id, version])
        entries.append(entry)
    return entries


@dataclass(slots=True)
class NoticeBodies:
    """Notice entries joined into payload bodies (`entry,entry,...`) that fit in a payload
    beside its head, and where each entry is in them: [body (1-based), its first byte in
    the body's UTF-8 (1-based), its length in bytes], or None for a missing entry.

    The batch function sends the bodies as they are when it writes every append, and cuts
    the entries of the written streams out of them when it refuses some (leaving entries
    out only makes a payload smaller)."""

    bodies: list[str]
    entries: list[tuple[int, int, int] | None]

    @classmethod
    def of(cls, entries: list[bytes | None]) -> NoticeBodies:
        room = NOTICE_BYTES - _NOTICE_HEAD
        joined = cls([], [])
        body: list[bytes] = []
        size = 0  # of the body so far, commas included
        for entry in entries:
            if entry is None:
                joined.entries.append(None)
                continue
            if body and size + 1 + len(entry) > room:
                joined.bodies.append(b",".join(body).decode())
                body, size = [], 0
            if body:
                size += 1
            joined.entries.append((len(joined.bodies) + 1, size + 1, len(entry)))
            body.append(entry)
            size += len(entry)
        if body:
            joined.bodies.append(b",".join(body).decode())
        return joined


def parse_notice(payload: str, *, unless_from: str | None = None) -> list[AppendedElsewhere]:
    """The appends a notice tells of; none when it comes from `unless_from` (checked before
    anything is decoded) or is malformed (a malformed entry is skipped on its own)."""
    origin, _, body = payload.partition(" ")
    if origin == unless_from:
        return []
    try:
        notice = orjson.loads(body)
        at = datetime.fromisoformat(notice["at"])
        entries = notice["s"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return []
    appended: list[AppendedElsewhere] = []
    for entry in entries if isinstance(entries, list) else ():
        try:
            stream_id, version, *rest = entry
            events = tuple(
                NoticedEvent(v, event_id, type_, data, metadata, at)
                for v, event_id, type_, data, metadata in (rest[0] if rest else ())
            )
        except (TypeError, ValueError):
            continue
        if isinstance(stream_id, str) and isinstance(version, int):
            appended.append(AppendedElsewhere(stream_id, version, events))
    return appended
