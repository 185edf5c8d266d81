"""Cross-request dynamic batching: many HTTP requests, one ``rank_many`` call.

Requests wait in a bounded queue; one worker thread per served model takes as many as fit a token budget
(or the oldest has waited ``max_wait_ms``), ranks them with a single ``rank_many`` call, and hands each
result back to the event loop.  Model work never runs on the event loop, so health checks, metrics and
load shedding keep answering while a batch computes.  A full queue sheds new requests at once
(:class:`OverloadedError`, answered 429 + Retry-After) instead of letting latency grow without bound.

Named scheduler, not engine: :mod:`surerank.engine` is the ONNX model engine the rankers run on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from surerank.errors import SureRankError
from surerank.ranker import Ranker
from surerank.serve.config import Batching
from surerank.types import Query, RankedList

logger = logging.getLogger(__name__)


class ClientGoneError(Exception):
    """The client disconnected while its request waited; ``dropped`` says whether it was taken out of the
    queue (not ranked) or was already in a batch (ranked, the answer thrown away)."""

    def __init__(self, dropped: bool) -> None:
        super().__init__("the client closed the connection before the answer")
        self.dropped = dropped


class OverloadedError(Exception):
    """The queue is full; the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int, status: int = 429) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


@dataclass(eq=False)  # identity: withdraw() finds this very request in the queue
class _Work:
    query: Query
    tokens: int
    future: asyncio.Future[RankedList]
    loop: asyncio.AbstractEventLoop
    ranker: Ranker | None = None  # a per-request variant of the engine's ranker (max_chunks_per_doc)
    enqueued: float = field(default_factory=time.monotonic)


def _post(work: _Work, result: Any, error: BaseException | None) -> None:
    try:
        work.loop.call_soon_threadsafe(_deliver, work.future, result, error)
    except RuntimeError:  # the event loop is closed: nobody is waiting any more
        logger.debug("dropping a result for a closed event loop")


def _deliver(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away or timed out
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class BatchingEngine:
    """Queue + worker thread around one ranker."""

    def __init__(
        self,
        ranker: Ranker,
        batching: Batching,
        name: str = "",
        on_batch: Callable[[int, int, float], None] | None = None,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self.ranker = ranker
        self.batching = batching
        self.name = name or getattr(ranker, "name", "ranker")
        self._on_batch = on_batch
        self._on_drop = on_drop
        self._queue: deque[_Work] = deque()
        self._queued_tokens = 0
        self._busy = 0  # requests in the batch being computed
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._tokens_per_s = 0.0  # moving estimate, for Retry-After

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"surerank-batcher-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish every queued request, then stop the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    @property
    def in_flight(self) -> int:
        return self._busy

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in the model: a draining server may close its listener."""
        with self._cond:
            return not self._queue and self._busy == 0

    def retry_after(self) -> int:
        """Seconds until the current backlog should be cleared, from the recent token rate (1..60)."""
        if self._tokens_per_s <= 0:
            return 1
        return int(min(60, max(1, math.ceil(self._queued_tokens / self._tokens_per_s))))

    # -- submission (event loop side) --------------------------------------------------------------

    async def submit(self, query: Query, tokens: int, ranker: Ranker | None = None,
                     gone: Callable[[], Awaitable[Any]] | None = None) -> RankedList:
        """Queue one query; ``ranker`` (a variant of the engine's, e.g. another passage cap) ranks it
        instead, batched with the other requests that use the same variant.

        ``gone`` returns when the client has disconnected: the request is then taken out of the queue
        (counted as dropped, never ranked) and :class:`ClientGoneError` raised; a request already in a
        batch is ranked and its answer thrown away.
        """
        loop = asyncio.get_running_loop()
        work = _Work(query=query, tokens=tokens, future=loop.create_future(), loop=loop, ranker=ranker)
        b = self.batching
        with self._cond:
            if self._stopping:
                raise OverloadedError("the server is shutting down", retry_after=5, status=503)
            if len(self._queue) >= b.max_queue_requests:
                raise OverloadedError(
                    f"queue full: {len(self._queue)} requests waiting (max_queue_requests="
                    f"{b.max_queue_requests})", retry_after=self.retry_after())
            if self._queue and self._queued_tokens + tokens > b.max_queue_tokens:
                raise OverloadedError(
                    f"queue full: {self._queued_tokens} estimated tokens waiting (max_queue_tokens="
                    f"{b.max_queue_tokens})", retry_after=self.retry_after())
            self._queue.append(work)
            self._queued_tokens += tokens
            self._cond.notify()
        watcher = asyncio.ensure_future(gone()) if gone is not None else None
        try:
            waiting: set[asyncio.Future[Any]] = {work.future} if watcher is None else {work.future, watcher}
            await asyncio.wait(waiting, timeout=b.request_timeout_s, return_when=asyncio.FIRST_COMPLETED)
            if work.future.done():
                return work.future.result()
            if watcher is not None and watcher.done():
                raise ClientGoneError(self.withdraw(work, "client_gone"))
            self.withdraw(work, "timeout")
            raise OverloadedError(
                f"not answered within request_timeout_s={b.request_timeout_s:g}",
                retry_after=self.retry_after(), status=503)
        except asyncio.CancelledError:
            self.withdraw(work, "cancelled")
            raise
        finally:
            if watcher is not None:
                watcher.cancel()

    def withdraw(self, work: _Work, reason: str) -> bool:
        """Take a request out of the queue if it is still there (True: it will not be ranked, and is
        counted as dropped); one already in a batch is ranked and its result ignored (False)."""
        with self._cond:  # under the lock the worker takes batches with: queued or in a batch, not both
            try:
                self._queue.remove(work)
            except ValueError:
                work.future.cancel()  # in a batch (or answered): the result is thrown away
                return False
            self._queued_tokens -= work.tokens
        work.future.cancel()
        if self._on_drop is not None:
            try:
                self._on_drop(reason, len(work.query.candidates))
            except Exception:  # metrics must never fail a request
                logger.exception("drop metrics callback failed")
        return True

    # -- worker thread -----------------------------------------------------------------------------

    def _take_batch(self) -> list[_Work] | None:
        b = self.batching
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            # wait for company until the oldest request has waited max_wait_ms or the budget is full
            deadline = self._queue[0].enqueued + b.max_wait_ms / 1000.0
            while (not self._stopping and self._queued_tokens < b.max_batch_tokens
                   and len(self._queue) < b.max_batch_requests):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Work] = []
            tokens = 0
            while self._queue and len(batch) < b.max_batch_requests:
                work = self._queue[0]
                if batch and tokens + work.tokens > b.max_batch_tokens:
                    break
                self._queue.popleft()
                self._queued_tokens -= work.tokens
                if work.future.cancelled():
                    continue
                batch.append(work)
                tokens += work.tokens
            self._busy = len(batch)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if not batch:
                continue
            start = time.perf_counter()
            self._rank(batch)
            elapsed = time.perf_counter() - start
            tokens = sum(w.tokens for w in batch)
            rate = tokens / elapsed if elapsed > 0 else 0.0
            self._tokens_per_s = rate if self._tokens_per_s <= 0 else 0.8 * self._tokens_per_s + 0.2 * rate
            self._busy = 0
            if self._on_batch is not None:
                try:
                    self._on_batch(len(batch), sum(len(w.query.candidates) for w in batch), elapsed)
                except Exception:  # metrics must never stop the worker
                    logger.exception("batch metrics callback failed")

    def _rank(self, batch: list[_Work]) -> None:
        groups: dict[int, list[_Work]] = {}
        for work in batch:  # one rank_many per ranker variant, in arrival order
            groups.setdefault(id(work.ranker), []).append(work)
        for group in groups.values():
            self._rank_group(group)

    def _rank_group(self, batch: list[_Work]) -> None:
        ranker = batch[0].ranker or self.ranker
        try:
            ranked = ranker.rank_many([w.query for w in batch])
        except Exception as error:
            if len(batch) > 1:
                # one bad request must not fail its neighbours: rank each alone to find it
                for work in batch:
                    self._rank_group([work])
                return
            if not isinstance(error, SureRankError):
                logger.exception("ranker %s failed", self.name)
            _post(batch[0], None, error)
            return
        for work, result in zip(batch, ranked, strict=True):
            _post(work, result, None)
