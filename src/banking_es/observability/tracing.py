"""OpenTelemetry traces: on when OTEL_EXPORTER_OTLP_ENDPOINT is set, free when it is not.

Call sites use `with span("command Deposit", {"account.id": id}) as current:`; without
tracing every helper returns one shared no-op (no provider, no context switch, no
allocation); with it, spans go to an OTLP/HTTP exporter through a batch processor, or to the
exporter a test passes to `configure_tracing`. The HTTP server span is `server_span`
(api/middleware.py). A command's span is stored with its events (`trace_carrier`, in their
metadata), the relay's `send` span continues it and puts it in the Kafka headers, the
consumer's `process` span continues those. Span names and the path of a trace:
docs/observability.md.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSequence, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

SERVICE_NAME = "banking-es"
Attributes = Mapping[str, AttributeValue]

_NOOP: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)
_PROPAGATOR = TraceContextTextMapPropagator()


class _State:
    provider: TracerProvider | None = None
    tracer: trace.Tracer | None = None


_state = _State()


def configure_tracing(
    endpoint: str | None,
    *,
    exporter: SpanExporter | None = None,
    service_name: str = SERVICE_NAME,
    batch: bool = True,
) -> bool:
    """Turn tracing on (OTLP/HTTP to `endpoint`, or `exporter`); False when it stays off.

    `endpoint` is OTEL_EXPORTER_OTLP_ENDPOINT, the collector's base URL; spans go to
    `<endpoint>/v1/traces` as the OpenTelemetry specification says.
    """
    if exporter is None:
        if not endpoint:
            return False
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    shutdown_tracing()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    processor: SpanProcessor = (
        BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    )
    provider.add_span_processor(processor)
    _state.provider = provider
    _state.tracer = provider.get_tracer("banking_es")
    return True


def shutdown_tracing() -> None:
    """Flush and stop the exporter; tracing is off afterwards."""
    provider, _state.provider, _state.tracer = _state.provider, None, None
    if provider is not None:
        provider.shutdown()


def tracing_enabled() -> bool:
    return _state.tracer is not None


def server_span(
    method: str, path: str, headers: Sequence[tuple[Any, Any]]
) -> AbstractContextManager[Span]:
    """The HTTP server span of a request, continuing the caller's `traceparent`; the
    middleware names it `METHOD route` once the route is known."""
    tracer = _state.tracer
    if tracer is None:
        return _NOOP
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name in (b"traceparent", b"tracestate")
    }
    return tracer.start_as_current_span(
        method,
        context=_stored_context(carrier),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path},
    )


def span(
    name: str,
    attributes: Attributes | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: otel_context.Context | None = None,
) -> AbstractContextManager[Span]:
    """A span around a block (records an exception and marks the span as an error)."""
    tracer = _state.tracer
    if tracer is None:
        return _NOOP
    return tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes)


# ---- propagation: events (metadata) and Kafka (headers) -------------------------------------


class _HeaderListSetter(Setter[MutableSequence[tuple[str, bytes]]]):
    def set(self, carrier: MutableSequence[tuple[str, bytes]], key: str, value: str) -> None:
        carrier.append((key, value.encode()))


_SETTER = _HeaderListSetter()


def inject_headers(headers: MutableSequence[tuple[str, bytes]], producer: Span) -> None:
    """Append `traceparent` (and `tracestate`) of `producer` to Kafka-style headers."""
    _PROPAGATOR.inject(headers, context=trace.set_span_in_context(producer), setter=_SETTER)


def trace_carrier() -> dict[str, str] | None:
    """The W3C fields (`traceparent`, `tracestate`) of the current span, to be stored with
    what it causes (an event's metadata); None when tracing is off or no span is current."""
    if _state.tracer is None:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier or None


def _stored_context(carrier: Mapping[str, Any] | None) -> otel_context.Context:
    """The context of a stored carrier; an empty one (a new trace) when it holds none."""
    if not carrier or "traceparent" not in carrier:
        return otel_context.Context()
    return _PROPAGATOR.extract(carrier, context=otel_context.Context())


def start_send_span(topic: str, key: str, parent: Mapping[str, Any] | None) -> Span:
    """A producer span for one message, a child of `parent` (a `trace_carrier` stored with
    the message's event); the caller ends it once the broker answered (`end_send_spans`)."""
    tracer = _state.tracer
    if tracer is None:
        return trace.INVALID_SPAN
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
        "messaging.kafka.message.key": key,
    }
    return tracer.start_span(
        f"send {topic}", _stored_context(parent), SpanKind.PRODUCER, attributes
    )


def end_send_spans(
    spans: Sequence[Span], acks: Sequence[Any] = (), error: BaseException | None = None
) -> None:
    """End the spans of `start_send_span`, with the partition and offset of each
    acknowledgement (aiokafka's RecordMetadata), or marked failed with `error`."""
    for index, current in enumerate(spans):
        if index < len(acks):
            current.set_attribute("messaging.destination.partition.id", str(acks[index].partition))
            current.set_attribute("messaging.kafka.offset", acks[index].offset)
        if error is not None:
            current.record_exception(error)
            current.set_status(Status(StatusCode.ERROR, type(error).__name__))
        current.end()


def kafka_process_span(
    topic: str,
    partition: int,
    offset: int,
    carriers: Sequence[Mapping[str, Any]],
    *,
    group: str | None = None,
) -> AbstractContextManager[Span]:
    """A consumer span around one partition's batch starting at `offset`; `carriers` are the
    messages' headers. Its parent is the first message's producer span; the producer spans
    of the others, when they belong to other traces, are links."""
    if _state.tracer is None:
        return _NOOP
    parent: otel_context.Context | None = None
    links: list[trace.Link] = []
    for carrier in carriers:
        context = _stored_context(carrier)
        found = trace.get_current_span(context).get_span_context()
        if not found.is_valid:
            continue
        if parent is None:
            parent = context
        else:
            links.append(trace.Link(found))
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
        "messaging.batch.message_count": len(carriers),
    }
    if group is not None:
        attributes["messaging.consumer.group.name"] = group
    return _state.tracer.start_as_current_span(
        f"process {topic}",
        parent or otel_context.Context(),
        SpanKind.CONSUMER,
        attributes,
        links,
    )


def cache_span(operation: str, level: str, key: str) -> AbstractContextManager[Span]:
    """A span around one cache call that leaves the process, e.g. `cache_span("get", "l2",
    redis_key)`; the caller may set `cache.hit` on it."""
    if _state.tracer is None:
        return _NOOP
    attributes: dict[str, AttributeValue] = {
        "cache.level": level,
        "cache.operation": operation,
        "cache.key": key,
    }
    return _state.tracer.start_as_current_span(f"cache.{operation}", attributes=attributes)
