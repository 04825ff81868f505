"""Each shard's load on this instance: the commands executed under its fence per second,
an exponentially decayed rate over about a minute (`HORIZON`), so a burst fades and a
steady rate r reads r. It is what the owner records with each lease renewal and what the
rebalancer compares (`assignment.plan_moves`). Counting is a dict update per append."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

#: Seconds over which commands count (the decay's time constant).
HORIZON = 60.0


class ShardLoads:
    """Decayed per-second command rates by shard (module docstring)."""

    def __init__(
        self, horizon: float = HORIZON, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.horizon = horizon
        self._clock = clock
        #: shard -> (decayed count, when it was last brought up to date)
        self._counts: dict[int, tuple[float, float]] = {}

    def add(self, shard: int, commands: int = 1) -> None:
        """`commands` were executed for `shard` just now."""
        now = self._clock()
        count, at = self._counts.get(shard, (0.0, now))
        self._counts[shard] = (count * math.exp((at - now) / self.horizon) + commands, now)

    def rate(self, shard: int) -> float:
        """Commands per second for `shard`, recently."""
        count, at = self._counts.get(shard, (0.0, 0.0))
        if not count:
            return 0.0
        return count * math.exp((at - self._clock()) / self.horizon) / self.horizon

    def seed(self, shard: int, rate: float) -> None:
        """Start `shard` at `rate` (the load its previous owner recorded), so a shard that
        just moved does not look idle until its own commands add up."""
        self._counts[shard] = (max(0.0, rate) * self.horizon, self._clock())

    def forget(self, shard: int) -> None:
        self._counts.pop(shard, None)
