"""The predictor's micro-batcher: concurrent submissions share calls, keep their order, share failures."""

from __future__ import annotations

import asyncio
import threading
import time

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


def test_a_failing_call_fails_every_request_of_its_batch() -> None:
    def handle(requests: list[int]) -> list[int]:
        time.sleep(0.01)
        raise RuntimeError("database down")

    async def scenario() -> None:
        batcher = MicroBatcher(handle, workers=2)
        try:
            results = await asyncio.gather(*(batcher.submit([i]) for i in range(4)), return_exceptions=True)
        finally:
            batcher.close()
        assert all(isinstance(r, RuntimeError) and str(r) == "database down" for r in results)

    asyncio.run(scenario())
