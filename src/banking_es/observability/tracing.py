"""OpenTelemetry traces: on when OTEL_EXPORTER_OTLP_ENDPOINT is set, free when it is not.

Call sites use one helper, `with span("command Deposit", {"account.id": id}) as current:`.
Without tracing `span` returns one shared no-op context manager (no provider, no context
switch, no allocation); with it, spans go to an OTLP/HTTP exporter through a batch processor,
or to the exporter a test passes to `configure_tracing`. The HTTP server span (`server_span`,
api/middleware.py) continues an incoming W3C `traceparent`; `inject_headers`/`extract_context`
carry it through Kafka headers. Span names: docs/observability.md.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSequence, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind
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
    return tracer.start_as_current_span(
        method,
        context=extract_context(headers),
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


# ---- propagation (HTTP headers, Kafka headers) ---------------------------------------------


class _HeaderListGetter(Getter[Sequence[tuple[Any, Any]]]):
    """Reads `(name, value)` pairs: ASGI scope headers and Kafka headers (bytes or str)."""

    def get(self, carrier: Sequence[tuple[Any, Any]], key: str) -> list[str] | None:
        found = [_text(value) for name, value in carrier if _text(name).lower() == key]
        return found or None

    def keys(self, carrier: Sequence[tuple[Any, Any]]) -> list[str]:
        return [_text(name) for name, _ in carrier]


class _HeaderListSetter(Setter[MutableSequence[tuple[str, bytes]]]):
    def set(self, carrier: MutableSequence[tuple[str, bytes]], key: str, value: str) -> None:
        carrier.append((key, value.encode()))


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)


_GETTER = _HeaderListGetter()
_SETTER = _HeaderListSetter()


def extract_context(headers: Sequence[tuple[Any, Any]]) -> otel_context.Context | None:
    """The trace context carried by `headers` (ASGI or Kafka pairs); None when off or absent."""
    if _state.tracer is None:
        return None
    return _PROPAGATOR.extract(headers, getter=_GETTER)


def inject_headers(headers: MutableSequence[tuple[str, bytes]]) -> None:
    """Append `traceparent` (and `tracestate`) of the current span to Kafka-style headers."""
    if _state.tracer is not None:
        _PROPAGATOR.inject(headers, setter=_SETTER)


def kafka_publish_span(topic: str, key: str | None = None) -> AbstractContextManager[Span]:
    """A producer span; call `inject_headers` inside it so consumers continue the trace."""
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
    }
    if key is not None:
        attributes["messaging.kafka.message.key"] = key
    return span(f"send {topic}", attributes, kind=SpanKind.PRODUCER)


def kafka_consume_span(
    topic: str,
    partition: int,
    offset: int,
    headers: Sequence[tuple[Any, Any]] = (),
    *,
    group: str | None = None,
) -> AbstractContextManager[Span]:
    """A consumer span, a child of the producer's span when the headers carry one."""
    if _state.tracer is None:
        return _NOOP
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
    }
    if group is not None:
        attributes["messaging.consumer.group.name"] = group
    return span(
        f"process {topic}", attributes, kind=SpanKind.CONSUMER, context=extract_context(headers)
    )


def cache_span(operation: str, level: str, key: str | None = None) -> AbstractContextManager[Span]:
    """A span around one cache call, e.g. `cache_span("get", "l2", account_id)`."""
    if _state.tracer is None:
        return _NOOP
    attributes: dict[str, AttributeValue] = {"cache.level": level, "cache.operation": operation}
    if key is not None:
        attributes["cache.key"] = key
    return span(f"cache.{operation}", attributes)
