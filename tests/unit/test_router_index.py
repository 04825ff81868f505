"""The router's index by first path segment finds the route Starlette's full scan finds."""

from __future__ import annotations

import re

from starlette.routing import Match, Route

from banking_es.api.app import create_app
from banking_es.api.middleware import new_request_id
from banking_es.config import load_settings

ID = "6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c01"


def _first_full(routes: list, scope: dict) -> object | None:
    return next((r for r in routes if r.matches(scope)[0] is Match.FULL), None)


def test_every_route_and_method_is_found_as_the_full_scan_finds_it() -> None:
    router = create_app(load_settings()).router
    checked = 0
    for route in router.routes:
        assert isinstance(route, Route)
        path = re.sub(r"\{[^}]+\}", ID, route.path)
        for method in sorted(route.methods or ()):
            scope = {"type": "http", "path": path, "method": method, "root_path": ""}
            assert _first_full(router.candidates(path), scope) is _first_full(router.routes, scope)
            checked += 1
    assert checked > 50


def test_a_route_added_after_the_first_request_is_indexed() -> None:
    router = create_app(load_settings()).router
    assert router.candidates("/extra/x") == []

    async def extra(request: object) -> None: ...

    router.add_route("/extra/{name}", extra, methods=["GET"])
    router.add_route("/{anything}/live", extra, methods=["GET"])  # may match any first segment
    paths = [r.path for r in router.candidates("/extra/x")]  # type: ignore[attr-defined]
    assert paths == ["/extra/{name}", "/{anything}/live"]
    health = [r.path for r in router.candidates("/health/live")]  # type: ignore[attr-defined]
    assert health[-1] == "/{anything}/live"
    assert health.index("/health/live") < health.index("/{anything}/live")  # the table's order
    assert [r.path for r in router.candidates("/zzz/live")] == ["/{anything}/live"]  # type: ignore[attr-defined]


def test_request_ids_are_32_hex_digits_and_differ() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
