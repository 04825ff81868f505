"""HTTP requests counted per worker in plain dicts, published by `Metrics.export_requests`."""

from __future__ import annotations

from bisect import bisect_left

#: Seconds; from a cached read (~1 ms) to the command retry budget (5 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestCounts:
    """HTTP requests counted by this worker since the last export, in plain dicts: a request
    costs two dict updates, not two writes under the multiprocess files' lock."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        #: Per (route, method): a count per latency bucket (the last one +Inf), then the sum.
        self.durations: dict[tuple[str, str], list[float]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        counts = self.durations.get((route, method))
        if counts is None:
            counts = self.durations[(route, method)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def drain(self) -> RequestCounts:
        drained = RequestCounts()
        drained.requests, self.requests = self.requests, {}
        drained.durations, self.durations = self.durations, {}
        return drained
