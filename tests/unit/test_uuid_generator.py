"""`UuidGenerator`: random version 4 UUIDs for accounts, time-ordered version 7 for events."""

from __future__ import annotations

import time
import uuid

from banking_es.application.ports import UuidGenerator

#: The version nibble and the variant bits, the same place in versions 4 and 7.
FIXED = (0xF << 76) | (0x3 << 62)


def _canonical(text: str, version: int) -> uuid.UUID:
    parsed = uuid.UUID(text)
    assert str(parsed) == text  # lowercase, hyphenated, 36 characters
    assert parsed.version == version
    assert parsed.variant == uuid.RFC_4122
    return parsed


def _vary(values: list[int], bits: int) -> None:
    """Every bit of `bits` takes both values somewhere in `values`."""
    seen_one = 0
    seen_zero = 0
    for value in values:
        seen_one |= value
        seen_zero |= ~value
    assert seen_one & bits == bits
    assert seen_zero & bits == bits


def test_account_ids_are_canonical_random_version_4_uuids() -> None:
    ids = [UuidGenerator().new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    values = [_canonical(text, 4).int for text in ids]
    _vary(values, ((1 << 128) - 1) & ~FIXED)  # all 122 random bits


def test_event_ids_are_version_7_uuids_ordered_by_millisecond() -> None:
    generator = UuidGenerator()
    before = time.time_ns() // 1_000_000
    ids = [generator.new_event_id() for _ in range(2000)]
    time.sleep(0.002)
    later = generator.new_event_id()
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    values = [_canonical(text, 7).int for text in ids]
    stamps = [value >> 80 for value in values]  # the first 48 bits: Unix milliseconds
    assert all(before <= stamp <= after for stamp in stamps)
    assert stamps == sorted(stamps)
    assert all(later > text for text in ids)  # a later millisecond sorts after, as text too
    _vary(values, ((1 << 80) - 1) & ~FIXED)  # the 74 random bits after the time
