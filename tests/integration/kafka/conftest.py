"""Fixtures of the Kafka tests: `env`, a migrated SQLite database (PostgreSQL when parametrised
indirectly) with its store, and a topic prefix of its own on the session's broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.integration.kafka.kafka_support import Env, env_for
from tests.integration.kafka_broker import TansuBroker


@pytest.fixture
async def env(
    kafka_broker: TansuBroker, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Env]:
    backend = getattr(request, "param", "sqlite")
    async with env_for(kafka_broker, tmp_path, request, backend) as made:
        yield made
