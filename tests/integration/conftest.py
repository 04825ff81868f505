"""Fixtures of the integration suite: the Kafka-protocol broker (see `kafka_broker.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.kafka_broker import TansuBroker


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One broker for the session; tests keep apart by using topic prefixes of their own."""
    log: Path = tmp_path_factory.mktemp("tansu") / "broker.log"
    broker = TansuBroker(log_path=log)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_kafka_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A broker of this test alone (it may stop, pause or restart it)."""
    broker = TansuBroker(log_path=tmp_path / "broker.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
