"""What metrics, logs and traces cost per request, measured on a trivial endpoint.

Drives the ASGI app directly (no sockets, so the numbers are the middleware's own cost)
with GET /health/live, and times the `span()` helper alone and what one write adds to carry
its trace through Kafka (`time_propagation`):

    .venv/bin/python -m bench.observability_overhead [--requests 20000] [--rounds 5]

(As a module: run as a file, `bench/http.py` would shadow the standard library's `http`.)

Modes: tracing off (the default: no OTEL_EXPORTER_OTLP_ENDPOINT), tracing on with every
span recorded and handed to an exporter that drops it (the SDK's full cost without the
network), and tracing off without the metrics hook (what metrics cost).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time

from banking_es.observability import tracing
from banking_es.observability.metrics import Metrics
from banking_es.observability.tracing import (
    configure_tracing,
    end_send_spans,
    kafka_process_span,
    span,
    start_send_span,
    trace_carrier,
)
from bench.common import positive_int
from bench.layers import DropExporter, drive, stack


def time_span(count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        with span("bench", {"a": 1}):
            pass
    return (time.perf_counter() - started) / count


def time_propagation(count: int) -> float:
    """What a write adds to carry its trace to Kafka: the command's context stored with its
    event, the relay's send span, the consumer's process span with one projection span."""
    headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    started = time.perf_counter()
    for _ in range(count):
        with span("command Deposit"):
            stored = trace_carrier()
        sent = start_send_span("bench.events", "acc", stored)
        end_send_spans([sent])
        with kafka_process_span("bench.events", 0, 1, [headers]), span("projection bench"):
            pass
    return (time.perf_counter() - started) / count


async def main(requests: int, rounds: int) -> None:
    logging.getLogger().setLevel(logging.WARNING)  # access lines are INFO: not written
    app = stack(Metrics(), None)  # the real route and middleware (bench/layers.py)
    configure_tracing(None, exporter=DropExporter(), batch=False)
    on = (tracing._state.provider, tracing._state.tracer)
    results: dict[str, list[float]] = {
        "off": [],
        "on": [],
        "no-metrics": [],
        "span-off": [],
        "span-on": [],
        "propagation-off": [],
        "propagation-on": [],
    }
    for _ in range(rounds):
        tracing._state.provider, tracing._state.tracer = None, None
        results["off"].append(await drive(app, requests))
        results["span-off"].append(time_span(requests * 5))
        results["propagation-off"].append(time_propagation(requests * 5))
        tracing._state.provider, tracing._state.tracer = on
        results["on"].append(await drive(app, requests))
        results["span-on"].append(time_span(requests))
        results["propagation-on"].append(time_propagation(requests))
        tracing._state.provider, tracing._state.tracer = None, None
        results["no-metrics"].append(await drive(stack(None, None), requests))
    med = {k: statistics.median(v) * 1e6 for k, v in results.items()}
    print(f"GET /health/live, in-process ASGI, median of {rounds} rounds of {requests} requests")
    print(f"  tracing off (default)        {med['off']:8.1f} us/request")
    print(
        f"  tracing on (spans recorded)  {med['on']:8.1f} us/request"
        f"  (+{med['on'] - med['off']:.1f} us)"
    )
    print(
        f"  tracing off, no metrics      {med['no-metrics']:8.1f} us/request"
        f"  (metrics cost {med['off'] - med['no-metrics']:.1f} us)"
    )
    print(f"  span() helper, tracing off   {med['span-off'] * 1000:8.0f} ns/call")
    print(f"  span() helper, tracing on    {med['span-on']:8.1f} us/call")
    print(f"  one write's trace to Kafka, tracing off {med['propagation-off'] * 1000:8.0f} ns")
    print(f"  one write's trace to Kafka, tracing on  {med['propagation-on']:8.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.observability_overhead", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--requests", type=positive_int, default=20000, help="per round and mode")
    parser.add_argument("--rounds", type=positive_int, default=5, help="the median is reported")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
