"""One deposit is one trace from the HTTP request to the Kafka consumer's projections, as an
OTLP collector receives it: the service runs with PostgreSQL and a Kafka-protocol broker and
exports over OTLP/HTTP to a collector in this process."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from tests.api_support import running_app
from tests.auth import sign_up
from tests.integration.kafka_broker import TansuBroker

from banking_es.bootstrap import Services
from banking_es.observability import tracing

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@dataclass(frozen=True)
class Received:
    """A span as the collector decoded it (ids in hex, as W3C headers write them)."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    service: str


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class Collector:
    """An OTLP/HTTP trace receiver on loopback: `POST /v1/traces` with protobuf bodies."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.requests = 0
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                collector.receive(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def receive(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource in request.resource_spans:
            service = {a.key: _value(a.value) for a in resource.resource.attributes}
            for scope in resource.scope_spans:
                for span in scope.spans:
                    found.append(
                        Received(
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            service=service["service.name"],
                        )
                    )
        with self._lock:
            self.requests += 1
            self.spans.extend(found)

    def trace(self, trace_id: str) -> list[Received]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def named(self, name: str) -> list[Received]:
        with self._lock:
            return [s for s in self.spans if s.name == name]

    def __enter__(self) -> Collector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector() as running:
        # The production set-up: OTLP/HTTP exporter, batch processor.
        assert tracing.configure_tracing(running.url)
        try:
            yield running
        finally:
            tracing.shutdown_tracing()


async def projected(services: Services, account: str, version: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = await services.db.fetchval(
            "SELECT version FROM account_summaries WHERE account_id = $1", account
        )
        if found is not None and found >= version:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"account {account} never reached version {version} in the view")


def only(spans: list[Received], name: str) -> Received:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, sorted(s.name for s in spans)
    return found[0]


async def test_one_deposit_is_one_trace_from_request_to_projection(
    collector: Collector, kafka_broker: TansuBroker, pg_url: str, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    topic = f"{prefix}.events"
    async with running_app(
        tmp_path,
        pg_url,
        kafka_bootstrap_servers=kafka_broker.bootstrap,
        kafka_topic_prefix=prefix,
        kafka_topic_partitions=2,
        kafka_relay_lease_ttl=2.0,
    ) as (client, services):
        client.headers.update(await sign_up(client))
        opened = await client.post("/accounts", json={"owner_name": "Ada", "initial_balance": "5"})
        assert opened.status_code == 201, opened.text
        account = opened.json()["id"]
        # Once the opening is projected the consumer is assigned and idle, so the deposit's
        # message is a batch of its own (a batch continues its first message's trace).
        await projected(services, account, 1)
        deposit = await client.post(f"/accounts/{account}/deposit", json={"amount": "7"})
        assert deposit.status_code == 200, deposit.text
        provider = tracing._state.provider
        assert provider is not None
        deadline = time.monotonic() + 30
        spans: list[Received] = []
        while time.monotonic() < deadline:
            provider.force_flush()  # what the batch processor would send within 5 s
            requests = collector.named("POST /accounts/{account_id}/deposit")
            if requests:
                spans = collector.trace(requests[0].trace_id)
                # The process span ends after its projections: a flush may hold them without it.
                names = [s.name for s in spans]
                projections = [n for n in names if n.startswith("projection ")]
                if f"process {topic}" in names and len(projections) == 2:
                    break
            await asyncio.sleep(0.1)
        summary = await services.db.fetchrow(
            "SELECT version, balance FROM account_summaries WHERE account_id = $1", account
        )
    assert summary is not None
    assert summary["version"] == 2
    assert collector.requests >= 1  # really over HTTP, as protobuf
    request = only(spans, "POST /accounts/{account_id}/deposit")
    command = only(spans, "command Deposit")
    append = only(spans, "eventstore.append")
    send = only(spans, f"send {topic}")
    process = only(spans, f"process {topic}")
    summaries = only(spans, "projection account_summaries")
    transactions = only(spans, "projection transactions")
    # request -> command -> append; command -> send (the relay, later) -> process ->
    # projections: every link is a parent link of one trace.
    assert request.parent_id == ""  # the trace starts at the request
    assert command.parent_id == request.span_id
    assert append.parent_id == command.span_id
    assert send.parent_id == command.span_id
    assert process.parent_id == send.span_id
    assert summaries.parent_id == process.span_id
    assert transactions.parent_id == process.span_id
    assert {s.service for s in spans} == {"banking-es"}
    assert sorted(s.name for s in spans) == sorted(
        s.name for s in (request, command, append, send, process, summaries, transactions)
    )
    kinds = (request.kind, send.kind, process.kind, command.kind)
    assert kinds == (
        SpanProto.SPAN_KIND_SERVER,
        SpanProto.SPAN_KIND_PRODUCER,
        SpanProto.SPAN_KIND_CONSUMER,
        SpanProto.SPAN_KIND_INTERNAL,
    )
    # The consumer processed the very message the relay sent.
    assert send.attributes["messaging.kafka.message.key"] == account
    assert process.attributes["messaging.destination.name"] == topic
    for name in ("messaging.destination.partition.id", "messaging.kafka.offset"):
        assert process.attributes[name] == send.attributes[name]
    assert process.attributes["messaging.consumer.group.name"] == f"{prefix}.projections"
    assert summaries.attributes["projection.events"] == 1
    # The account's opening is a trace of its own, sent and processed the same way.
    opening = only(collector.named("command OpenAccount"), "command OpenAccount")
    assert opening.trace_id != request.trace_id
    assert {s.name for s in collector.trace(opening.trace_id)} >= {
        "POST /accounts",
        f"send {topic}",
        f"process {topic}",
    }
