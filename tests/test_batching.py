"""The predictor's micro-batcher: concurrent submissions share calls, keep their order, and one member's failure
stays its own (only a failure shared by construction, e.g. the database down, fails the whole batch)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.batching import MicroBatcher

pytestmark = pytest.mark.unit


def test_concurrent_submissions_are_merged_and_answered_in_order() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def handle(requests: list[int]) -> list[int]:
        calls.append(list(requests))
        gate.wait(2)  # the first call blocks until everything else has queued up
        return [r * 10 for r in requests]

    async def scenario() -> list[list[int]]:
        batcher = MicroBatcher(handle, workers=1, max_instances=64)
        try:
            first = asyncio.ensure_future(batcher.submit([0]))
            await asyncio.sleep(0.05)
            rest = [asyncio.ensure_future(batcher.submit([i, i + 100])) for i in range(1, 6)]
            await asyncio.sleep(0.05)
            gate.set()
            return await asyncio.gather(first, *rest)
        finally:
            batcher.close()

    results = asyncio.run(scenario())
    assert results[0] == [0]
    assert results[1:] == [[i * 10, (i + 100) * 10] for i in range(1, 6)]
    assert len(calls) == 2 and len(calls[1]) == 10  # the five waiting submissions went in one call


def test_batches_respect_max_instances() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def handle(requests: list[int]) -> list[int]:
        sizes.append(len(requests))
        gate.wait(2)
        return requests

    async def scenario() -> None:
        batcher = MicroBatcher(handle, workers=1, max_instances=4)
        try:
            first = asyncio.ensure_future(batcher.submit([0]))
            await asyncio.sleep(0.05)
            rest = [asyncio.ensure_future(batcher.submit([1, 2, 3])) for _ in range(3)]
            await asyncio.sleep(0.05)
            gate.set()
            await asyncio.gather(first, *rest)
        finally:
            batcher.close()

    asyncio.run(scenario())
    assert sizes == [1, 3, 3, 3]


def test_one_members_failure_is_its_own() -> None:
    """A merged call that fails is answered member by member: only the member that fails alone gets the error."""
    calls: list[list[int]] = []
    gate = threading.Event()

    def handle(requests: list[int]) -> list[int]:
        calls.append(list(requests))
        gate.wait(2)
        if 13 in requests:
            raise RuntimeError("the database rejected a query")
        return [r * 10 for r in requests]

    async def scenario() -> list:
        batcher = MicroBatcher(handle, workers=1)
        try:
            first = asyncio.ensure_future(batcher.submit([0]))
            await asyncio.sleep(0.05)
            rest = [asyncio.ensure_future(batcher.submit(r)) for r in ([1], [2, 13], [3])]
            await asyncio.sleep(0.05)
            gate.set()
            return await asyncio.gather(first, *rest, return_exceptions=True)
        finally:
            batcher.close()

    results = asyncio.run(scenario())
    assert results[0] == [0] and results[1] == [10] and results[3] == [30]
    assert isinstance(results[2], RuntimeError)
    assert calls[1] == [1, 2, 13, 3] and calls[2:] == [[1], [2, 13], [3]]  # merged, then each alone


def test_a_shared_failure_fails_the_whole_batch_at_once() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def handle(requests: list[int]) -> list[int]:
        calls.append(list(requests))
        gate.wait(2)
        raise ConnectionError("database down")

    async def scenario() -> list:
        batcher = MicroBatcher(handle, workers=1, shared_failure=lambda exc: isinstance(exc, ConnectionError))
        try:
            first = asyncio.ensure_future(batcher.submit([0]))
            await asyncio.sleep(0.05)
            rest = [asyncio.ensure_future(batcher.submit([i])) for i in range(1, 4)]
            await asyncio.sleep(0.05)
            gate.set()
            return await asyncio.gather(first, *rest, return_exceptions=True)
        finally:
            batcher.close()

    results = asyncio.run(scenario())
    assert all(isinstance(r, ConnectionError) for r in results)
    assert calls == [[0], [1, 2, 3]]  # not retried member by member
