"""The per-stream queue of commands, inside the process.

The first command of a quiet stream runs in its caller's task; a drain task takes every
command queued behind it, a chunk at a time, under the stream's lock. What a chunk's
commands become is decided by the executor it is given (`handlers.AccountHandlers`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from banking_es.application.context import CommandContext, CommandOutcomes, Replayed
from banking_es.application.errors import as_unavailable
from banking_es.application.locks import StreamLocks
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account
from banking_es.observability.tracing import span, trace_carrier

MAX_CHUNK = 256


@dataclass(slots=True)
class Pending:
    """A queued command, the future its caller awaits, and its outcome once decided."""

    command: cmd.StreamCommand
    context: CommandContext
    future: asyncio.Future[Account | Replayed]
    outcome: Exception | Account | None = field(default=None)
    #: The W3C context of the command's span: the chunk may run in another command's task.
    trace: dict[str, str] | None = None


#: Decides and appends a chunk of one stream's commands, settling their futures; returns
#: those to run again in the stream's next chunk.
ChunkExecutor = Callable[[str, list[Pending]], Awaitable[Sequence[Pending]]]


class StreamQueue:
    """Commands queued per stream, executed a chunk at a time under the stream's lock."""

    def __init__(
        self, locks: StreamLocks, execute: ChunkExecutor, outcomes: CommandOutcomes
    ) -> None:
        self._locks = locks
        self._execute = execute
        self._outcomes = outcomes
        self._pending: dict[str, deque[Pending]] = {}
        self._draining: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(
        self, stream_id: str, command: cmd.StreamCommand, context: CommandContext
    ) -> Account | Replayed:
        future: asyncio.Future[Account | Replayed] = asyncio.get_running_loop().create_future()
        with span(f"command {type(command).__name__}", {"account.id": stream_id}):
            queued = Pending(command, context, future, trace=trace_carrier())
            self._pending.setdefault(stream_id, deque()).append(queued)
            del queued  # only the queue holds it (see `del future` below)
            if stream_id not in self._draining:
                # Nobody drains the stream, so its queue holds just this command: the caller
                # runs it as the first chunk itself (no task of its own per quiet command),
                # and hands what queues meanwhile to a drain task.
                self._draining.add(stream_id)
                try:
                    await self._run_chunk(stream_id)
                finally:
                    self._hand_off(stream_id)
            try:
                return await future
            finally:
                del future  # a refused command's error must not hold it (`Grouper.submit`)

    def _hand_off(self, stream_id: str) -> None:
        """After a caller's own chunk: a drain task for the commands queued meanwhile."""
        if stream_id not in self._pending:
            self._draining.discard(stream_id)
            return
        task = asyncio.create_task(self._drain(stream_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, stream_id: str) -> None:
        try:
            while stream_id in self._pending:
                await self._run_chunk(stream_id)
        finally:
            self._draining.discard(stream_id)

    async def _run_chunk(self, stream_id: str) -> None:
        """Take the next chunk of the stream's queue, once the stream's lock is held (what
        queues while a transfer holds it joins the chunk), and execute it; a failure that is
        not a command's outcome (the store unavailable, a bug) fails each of its commands."""
        async with self._locks.hold(stream_id):
            queue = self._pending[stream_id]
            chunk = [queue.popleft() for _ in range(min(len(queue), MAX_CHUNK))]
            if not queue:
                del self._pending[stream_id]
            try:
                again = await self._execute(stream_id, chunk)
            except Exception as exc:
                failure = as_unavailable(exc)
                for pending in chunk:
                    if not pending.future.done():
                        self._outcomes.failed(type(pending.command).__name__, stream_id, exc)
                        pending.future.set_exception(failure)
                return
            if again:
                self._pending.setdefault(stream_id, deque()).extendleft(reversed(again))

    async def drain(self, which: Callable[[str], bool] | None = None) -> None:
        """Wait until no command of the streams `which` selects (default: all) is queued or
        running, multi-stream ones (they hold the same locks) included: a graceful shutdown,
        or a shard handed over to another instance."""
        while True:
            streams = (*self._draining, *self._locks.in_use())
            if not any(which is None or which(stream_id) for stream_id in streams):
                return
            await asyncio.sleep(0.002)  # chunks take milliseconds; this runs only when stopping


def succeed(pending: Pending, result: Account | Replayed) -> None:
    # A caller may have gone away (client disconnected): its command still happened.
    if not pending.future.done():
        pending.future.set_result(result)


def fail(pending: Pending, exc: Exception) -> None:
    if not pending.future.done():
        pending.future.set_exception(exc)
