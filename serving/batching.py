"""Micro-batching: concurrent HTTP requests share one Recommender call.

Each Recommender call pays a fixed cost that does not grow with the number of users in it (one Feast
get_online_features, ~7.5-10 ms of Python here, one history query, one matmul), and the GIL lets only one
thread run that Python at a time. So instead of one worker thread per request, a few worker threads each
take every request waiting in the queue (up to `max_instances` instances) and answer them with one call:
under load the fixed cost is paid once per batch instead of once per request; alone, a request goes
straight through.

One member's failure stays its own: when a merged batch fails, each member is answered again alone, unless the
failure is shared by construction (`shared_failure`, e.g. the database is down), in which case every member gets it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Request = TypeVar("Request")


@dataclass
class _Pending(Generic[Request]):
    requests: Sequence[Request]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class MicroBatcher(Generic[Request]):
    """Runs `handle(requests) -> results` (one result per request, same order) on merged batches."""

    def __init__(
        self,
        handle: Callable[[list[Request]], list[Any]],
        workers: int = 2,
        max_instances: int = 64,
        shared_failure: Callable[[Exception], bool] = lambda _: False,
        on_batch: Callable[[int], None] = lambda _: None,
    ):
        self._handle = handle
        self._max_instances = max_instances
        self._shared_failure = shared_failure
        self._on_batch = on_batch  # called with the number of instances of each merged call (metrics)
        self._queue: deque[_Pending[Request]] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"recsys-batcher-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    async def submit(self, requests: Sequence[Request]) -> list[Any]:
        loop = asyncio.get_running_loop()
        pending = _Pending(requests, loop.create_future(), loop)
        with self._ready:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.append(pending)
            self._ready.notify()
        return await pending.future

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _take(self) -> list[_Pending[Request]] | None:
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            if self._closed and not self._queue:
                return None
            batch = [self._queue.popleft()]
            size = len(batch[0].requests)
            while self._queue and size + len(self._queue[0].requests) <= self._max_instances:
                size += len(self._queue[0].requests)
                batch.append(self._queue.popleft())
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            merged = [request for pending in batch for request in pending.requests]
            self._on_batch(len(merged))
            try:
                results = self._handle(merged)
            except Exception as exc:
                if len(batch) == 1 or self._shared_failure(exc):
                    for pending in batch:
                        pending.loop.call_soon_threadsafe(_fail, pending.future, exc)
                else:  # it may be one member's fault: answer each alone
                    for pending in batch:
                        self._answer_alone(pending)
                continue
            start = 0
            for pending in batch:
                part = results[start : start + len(pending.requests)]
                start += len(pending.requests)
                pending.loop.call_soon_threadsafe(_resolve, pending.future, part)

    def _answer_alone(self, pending: _Pending[Request]) -> None:
        if pending.future.done():  # its caller gave up (deadline)
            return
        try:
            result = self._handle(list(pending.requests))
        except Exception as exc:
            pending.loop.call_soon_threadsafe(_fail, pending.future, exc)
        else:
            pending.loop.call_soon_threadsafe(_resolve, pending.future, result)


def _resolve(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future, exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
