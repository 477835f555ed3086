"""Concurrent requests scored as one batch: each gets its own slice, in order; a batch that
fails is scored again one request at a time, so one bad image fails only its own request."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from web.batching import Batcher


def _score(batch: np.ndarray):
    time.sleep(0.02)  # a model call takes a while: requests arriving meanwhile wait for the next batch
    if np.isnan(batch).any():
        raise ValueError("not finite")
    return {"probabilities": batch[:, :2] * 2}, batch[:, 0] + 1


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer() -> None:
    batcher = Batcher(_score, max_images=8)

    async def many() -> list:
        return await asyncio.gather(*[batcher.score(np.full((1, 3), k, np.float32)) for k in range(20)])

    answers = asyncio.run(many())
    for k, (outputs, distances) in enumerate(answers):
        assert outputs["probabilities"].tolist() == [[2 * k, 2 * k]] and distances.tolist() == [k + 1]
    assert batcher.batches < 20 and batcher.batches >= 3  # at most 8 images a batch


def test_a_failing_image_fails_only_its_own_request() -> None:
    batcher = Batcher(_score)

    async def mixed() -> list:
        images = [np.zeros((1, 3), np.float32), np.full((1, 3), np.nan, np.float32), np.ones((2, 3), np.float32)]
        return await asyncio.gather(*[batcher.score(x) for x in images], return_exceptions=True)

    good, bad, two = asyncio.run(mixed())
    assert isinstance(bad, ValueError)
    assert good[1].tolist() == [1.0] and two[0]["probabilities"].shape == (2, 2)


def test_a_lone_request_is_scored_at_once() -> None:
    batcher = Batcher(_score)
    began = time.perf_counter()
    outputs, _ = asyncio.run(batcher.score(np.ones((1, 3), np.float32)))
    assert outputs["probabilities"].tolist() == [[2.0, 2.0]] and batcher.batches == 1
    assert time.perf_counter() - began < 5  # no waiting for company (the call itself sleeps 0.02 s)
    with pytest.raises(ValueError):
        asyncio.run(Batcher(_score).score(np.full((1, 3), np.nan, np.float32)))
