"""OpenTelemetry spans: HTTP, command, event-store append, Kafka and cache helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tests.api_support import running_app
from tests.auth import bearer, login, register, sign_up

from banking_es.observability import tracing
from banking_es.observability.tracing import (
    cache_span,
    configure_tracing,
    inject_headers,
    kafka_consume_span,
    kafka_publish_span,
    shutdown_tracing,
    span,
    tracing_enabled,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    assert configure_tracing(None, exporter=memory, batch=False)
    try:
        yield memory
    finally:
        shutdown_tracing()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def test_a_deposit_is_one_trace_http_command_append(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    async with running_app(tmp_path, f"sqlite:///{tmp_path / 't.db'}") as (client, _services):
        user = await register(client)
        client.headers.update(bearer((await login(client, user["username"]))["access_token"]))
        opened = await client.post("/accounts", json={"owner_name": "Ada", "initial_balance": "1"})
        account = opened.json()["id"]
        exporter.clear()
        response = await client.post(
            f"/accounts/{account}/deposit",
            json={"amount": "2"},
            headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        )
        assert response.status_code == 200
        spans = exporter.get_finished_spans()
    http = by_name(spans, "POST /accounts/{account_id}/deposit")
    command = by_name(spans, "command Deposit")
    append = by_name(spans, "eventstore.append")
    assert http.kind is SpanKind.SERVER
    assert http.attributes is not None
    assert http.attributes["http.route"] == "/accounts/{account_id}/deposit"
    assert http.attributes["http.request.method"] == "POST"
    assert http.attributes["http.response.status_code"] == 200
    assert http.attributes["banking.request_id"] == response.headers["x-request-id"]
    assert http.attributes["enduser.id"] == user["id"]  # from the real bearer token
    # The caller's trace continues: same trace id, the caller's span as parent.
    assert format(http.context.trace_id, "032x") == TRACE_ID
    assert http.parent is not None
    assert format(http.parent.span_id, "016x") == PARENT_ID
    assert command.parent is not None
    assert command.parent.span_id == http.context.span_id
    assert command.attributes == {"account.id": account}
    assert append.context.trace_id == http.context.trace_id
    assert append.attributes == {"eventstore.streams": 1}


async def test_a_refused_command_and_a_bug_mark_their_spans(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    async with running_app(tmp_path, f"sqlite:///{tmp_path / 'r.db'}") as (client, _services):
        client.headers.update(await sign_up(client))
        opened = await client.post("/accounts", json={"owner_name": "Ada", "initial_balance": "1"})
        account = opened.json()["id"]
        exporter.clear()
        refused = await client.post(f"/accounts/{account}/withdraw", json={"amount": "5"})
        assert refused.status_code == 422
        spans = exporter.get_finished_spans()
    command = by_name(spans, "command Withdraw")
    assert command.status.status_code is StatusCode.ERROR
    assert [e.name for e in command.events] == ["exception"]
    http = by_name(spans, "POST /accounts/{account_id}/withdraw")
    assert http.attributes is not None
    assert http.attributes["http.response.status_code"] == 422
    assert http.status.status_code is StatusCode.UNSET  # a 4xx is the client's, not ours


def test_kafka_consume_span_continues_the_publish_trace(exporter: InMemorySpanExporter) -> None:
    headers: list[tuple[str, bytes]] = [("event_type", b"MoneyDeposited")]
    with kafka_publish_span("banking-es.events", key="acc-1") as publish:
        inject_headers(headers)
    assert [name for name, _ in headers] == ["event_type", "traceparent"]
    with (
        kafka_consume_span("banking-es.events", 3, 42, headers, group="projections"),
        cache_span("get", "l2", "acc-1"),
    ):
        pass
    spans = exporter.get_finished_spans()
    consume = by_name(spans, "process banking-es.events")
    send = by_name(spans, "send banking-es.events")
    cache = by_name(spans, "cache.get")
    assert send.kind is SpanKind.PRODUCER
    assert consume.kind is SpanKind.CONSUMER
    assert consume.parent is not None
    assert consume.parent.span_id == publish.get_span_context().span_id
    assert consume.attributes is not None
    assert consume.attributes["messaging.destination.partition.id"] == "3"
    assert consume.attributes["messaging.kafka.offset"] == 42
    assert consume.attributes["messaging.consumer.group.name"] == "projections"
    assert cache.parent is not None
    assert cache.parent.span_id == consume.context.span_id
    assert cache.attributes == {"cache.level": "l2", "cache.operation": "get", "cache.key": "acc-1"}


def test_without_an_endpoint_tracing_stays_off_and_spans_are_shared_no_ops() -> None:
    assert configure_tracing(None) is False
    assert configure_tracing("") is False
    assert not tracing_enabled()
    first, second = span("a"), span("b", {"x": 1})
    assert first is second  # nothing is allocated per call
    with first as current:
        current.set_attribute("ignored", True)
        assert not current.is_recording()
    headers: list[tuple[str, bytes]] = []
    inject_headers(headers)
    assert headers == []
    assert tracing.extract_context([("traceparent", b"00-" + TRACE_ID.encode() + b"-x-01")]) is None


def test_an_endpoint_turns_on_the_otlp_exporter() -> None:
    try:
        assert configure_tracing("http://127.0.0.1:4318/")
        assert tracing_enabled()
        provider = tracing._state.provider
        assert provider is not None
        processor = provider._active_span_processor._span_processors[0]
        exporter = processor._batch_processor._exporter  # type: ignore[attr-defined]
        assert exporter._endpoint == "http://127.0.0.1:4318/v1/traces"
    finally:
        shutdown_tracing()
    assert not tracing_enabled()
