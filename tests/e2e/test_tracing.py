"""OpenTelemetry spans: HTTP, command, event-store append, the Kafka and cache helpers, the
context stored with each event, and tracing off or its exporter down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN, SpanKind, StatusCode
from tests.api_support import running_app
from tests.auth import bearer, login, register, sign_up
from tests.redis_support import SHARED_REDIS_URL, redis_prefix  # noqa: F401
from tests.server import free_port

from banking_es.application.accounts import CommandContext
from banking_es.application.context import event_metadata
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account
from banking_es.observability import tracing
from banking_es.observability.tracing import (
    cache_span,
    configure_tracing,
    end_send_spans,
    inject_headers,
    kafka_process_span,
    shutdown_tracing,
    span,
    start_send_span,
    trace_carrier,
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


def test_the_kafka_helpers_carry_a_stored_context_from_send_to_process(
    exporter: InMemorySpanExporter,
) -> None:
    with span("command Deposit") as command:
        stored = trace_carrier()
    with span("another command"):
        other = trace_carrier()
    assert stored is not None
    assert other is not None
    assert stored["traceparent"].split("-")[2] == format(command.get_span_context().span_id, "016x")
    sends = [start_send_span("banking-es.events", "acc-1", c) for c in (stored, other)]
    headers: list[list[tuple[str, bytes]]] = [[("event_type", b"MoneyDeposited")], []]
    for message, sent in zip(headers, sends, strict=True):
        inject_headers(message, sent)
    assert [name for name, _ in headers[0]] == ["event_type", "traceparent"]
    end_send_spans(sends, [SimpleNamespace(partition=3, offset=42)] * 2)
    unrelated = start_send_span("banking-es.notifications", "u-1", None)  # no stored context
    end_send_spans([unrelated], error=RuntimeError("broker away"))
    carriers = [{k: v.decode() for k, v in message} for message in headers]
    with (
        kafka_process_span("banking-es.events", 3, 42, carriers, group="projections"),
        cache_span("get", "l2", "banking-es:acct:acc-1") as cached,
    ):
        cached.set_attribute("cache.hit", True)
    spans = exporter.get_finished_spans()
    send = [s for s in spans if s.name == "send banking-es.events"]
    process = by_name(spans, "process banking-es.events")
    cache = by_name(spans, "cache.get")
    assert [s.kind for s in send] == [SpanKind.PRODUCER] * 2
    assert send[0].parent is not None
    assert send[0].parent.span_id == command.get_span_context().span_id
    assert send[0].attributes is not None
    assert send[0].attributes["messaging.kafka.offset"] == 42
    assert send[0].attributes["messaging.destination.partition.id"] == "3"
    failed = by_name(spans, "send banking-es.notifications")
    assert failed.parent is None  # a new trace
    assert failed.status.status_code is StatusCode.ERROR
    # The batch's span continues the first message's trace and links the other one.
    assert process.kind is SpanKind.CONSUMER
    assert process.parent is not None
    assert process.parent.span_id == send[0].context.span_id
    assert [link.context.span_id for link in process.links] == [send[1].context.span_id]
    assert process.attributes is not None
    assert process.attributes["messaging.batch.message_count"] == 2
    assert process.attributes["messaging.consumer.group.name"] == "projections"
    assert cache.parent is not None
    assert cache.parent.span_id == process.context.span_id
    assert cache.attributes == {
        "cache.level": "l2",
        "cache.operation": "get",
        "cache.key": "banking-es:acct:acc-1",
        "cache.hit": True,
    }


async def test_each_event_stores_its_own_commands_context_when_commands_share_a_chunk(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    """Deposits queued behind each other are appended together, in the first one's task;
    each event still continues the trace of its own command."""
    async with running_app(tmp_path, f"sqlite:///{tmp_path / 'c.db'}") as (_client, services):
        opened = await services.accounts.open_account(
            cmd.OpenAccount("Ada", Decimal("1"), "USD"), CommandContext()
        )
        assert isinstance(opened, Account)

        async def deposit(n: int) -> None:
            with span(f"caller {n}"):
                await services.accounts.deposit(
                    cmd.Deposit(opened.id, Decimal("1")), CommandContext()
                )

        await asyncio.gather(*(deposit(n) for n in range(4)))
        events = await services.store.read_stream(opened.id, 1)
    spans = exporter.get_finished_spans()
    commands = {s.context.span_id: s.context.trace_id for s in spans if s.name == "command Deposit"}
    appends = [s for s in spans if s.name == "eventstore.append" and s.parent is not None]
    assert len(appends) < 4  # some deposits were appended together
    stored = [e.metadata["traceparent"].split("-") for e in events]
    assert len(stored) == 4
    assert {int(span_id, 16) for _, _, span_id, _ in stored} == set(commands)
    for _, trace_id, span_id, _ in stored:
        assert commands[int(span_id, 16)] == int(trace_id, 16)
    assert len({trace_id for _, trace_id, _, _ in stored}) == 4


@pytest.mark.redis
async def test_redis_lookups_of_the_caches_are_cache_spans_of_the_request(
    tmp_path: Path,
    exporter: InMemorySpanExporter,
    redis_prefix: str,  # noqa: F811
) -> None:
    async with running_app(
        tmp_path,
        f"sqlite:///{tmp_path / 'k.db'}",
        redis_url=SHARED_REDIS_URL,
        redis_key_prefix=redis_prefix,
    ) as (client, services):
        client.headers.update(await sign_up(client))
        opened = await client.post("/accounts", json={"owner_name": "Ada", "initial_balance": "1"})
        account = opened.json()["id"]
        deposit = await client.post(f"/accounts/{account}/deposit", json={"amount": "2"})
        assert deposit.status_code == 200  # two events: a full page of the history read
        await services.cache.flush()  # the state is in Redis (L2) ...
        services.cache.local.invalidate(account)  # ... and no longer in this process (L1)
        exporter.clear()
        assert (await client.get(f"/accounts/{account}")).status_code == 200
        assert (await client.get(f"/accounts/{account}/events?limit=1")).status_code == 200
        spans = exporter.get_finished_spans()
    read = by_name(spans, "GET /accounts/{account_id}")
    history = by_name(spans, "GET /accounts/{account_id}/events")
    gets = [s for s in spans if s.name == "cache.get"]
    assert len(gets) == 2
    account_get, page_get = sorted(gets, key=lambda s: s.start_time or 0)
    put = by_name(spans, "cache.put")
    assert account_get.parent is not None
    assert account_get.parent.span_id == read.context.span_id
    assert account_get.attributes == {
        "cache.level": "l2",
        "cache.operation": "get",
        "cache.key": f"{redis_prefix}:acct:{account}",
        "cache.hit": True,
    }
    assert page_get.parent is not None
    assert page_get.parent.span_id == history.context.span_id
    assert page_get.attributes is not None
    assert page_get.attributes["cache.hit"] is False
    assert put.parent is not None
    assert put.parent.span_id == history.context.span_id
    assert put.attributes is not None
    assert put.attributes["cache.key"] == page_get.attributes["cache.key"]


def test_without_an_endpoint_tracing_stays_off_and_spans_are_shared_no_ops() -> None:
    assert configure_tracing(None) is False
    assert configure_tracing("") is False
    assert not tracing_enabled()
    first, second = span("a"), span("b", {"x": 1})
    assert first is second  # nothing is allocated per call
    assert kafka_process_span("t", 0, 1, [{"traceparent": "00-x"}]) is first
    assert cache_span("get", "l2", "k") is first
    with first as current:
        current.set_attribute("ignored", True)
        assert not current.is_recording()
    assert trace_carrier() is None
    assert event_metadata(CommandContext(), "Deposit", trace_carrier()) == {"command": "Deposit"}
    assert start_send_span("t", "k", {"traceparent": "00-x"}) is INVALID_SPAN


async def test_an_exporter_that_is_down_never_fails_or_delays_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spans go to a port where nothing listens: requests answer as without tracing, and the
    last flush gives up after the export timeout (the standard variable, 10 s by default)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    assert configure_tracing(f"http://127.0.0.1:{free_port()}")
    try:
        async with running_app(tmp_path, f"sqlite:///{tmp_path / 'd.db'}") as (client, _services):
            client.headers.update(await sign_up(client))
            opened = await client.post(
                "/accounts", json={"owner_name": "Ada", "initial_balance": "1"}
            )
            account = opened.json()["id"]
            started = time.perf_counter()
            for _ in range(20):
                deposit = await client.post(f"/accounts/{account}/deposit", json={"amount": "1"})
                assert deposit.status_code == 200
            assert time.perf_counter() - started < 10  # not one export timeout per request
            final = await client.get(f"/accounts/{account}")
            assert final.json()["balance"] == "21.00"
    finally:
        stopping = time.perf_counter()
        shutdown_tracing()
    assert time.perf_counter() - stopping < 5


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
