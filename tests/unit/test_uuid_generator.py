"""`UuidGenerator`: canonical, random version 4 UUID strings."""

from __future__ import annotations

import uuid

from banking_es.application.ports import UuidGenerator


def test_ids_are_canonical_random_version_4_uuids() -> None:
    ids = [UuidGenerator().new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lowercase, hyphenated, 36 characters
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    # Every one of the 122 random bits takes both values somewhere in the sample.
    values = [uuid.UUID(text).int for text in ids]
    fixed = (0xF << 76) | (0x3 << 62)  # the version nibble and the variant bits
    seen_one = 0
    seen_zero = 0
    for value in values:
        seen_one |= value
        seen_zero |= ~value
    random_bits = ((1 << 128) - 1) & ~fixed
    assert seen_one & random_bits == random_bits
    assert seen_zero & random_bits == random_bits
