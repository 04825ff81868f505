"""A serving worker tunes the garbage collector once its services have started."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.api_support import make_settings

from banking_es import logging_setup
from banking_es.api.app import GC_THRESHOLDS
from banking_es.asgi import build_app


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def test_the_lifespan_freezes_startup_objects_and_raises_the_thresholds(
    tmp_path: Path, restored_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's logging setup would replace this test process's handlers.
    monkeypatch.setattr(logging_setup, "configure_logging", lambda settings: None)
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    app = build_app(make_settings(tmp_path))  # builds and starts its own services
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 10_000  # modules, the app, the services
        assert app.state.services.store is not None
