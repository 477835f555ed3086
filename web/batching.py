"""Requests scored together: the images of concurrent uploads go to the model as one batch.

A model answers a batch of 32 images in far less than 32 times one image's time (ONNX
Runtime's kernels and the out-of-distribution gate's distances both gain), so under load
the server gathers what has arrived while the previous batch ran and scores it at once.
Nothing waits on purpose: a lone request is scored alone, at once. Each request gets
its own slice of the outputs back; when a batch fails (an output that is not finite),
its requests are scored one by one, so one bad image fails only its own request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

Scores = tuple[dict[str, np.ndarray], np.ndarray | None]


class Batcher:
    def __init__(self, score: Callable[[np.ndarray], Scores], max_images: int = 32) -> None:
        self.score_fn, self.max_images = score, max_images
        self.waiting: list[tuple[np.ndarray, asyncio.Future[Scores]]] = []
        self.worker: asyncio.Task[None] | None = None
        self.batches = 0  # how many model calls were made (for tests and the load benchmark)

    async def score(self, images: np.ndarray) -> Scores:
        """This request's outputs and distances, scored with whatever else is waiting."""
        future: asyncio.Future[Scores] = asyncio.get_running_loop().create_future()
        self.waiting.append((images, future))
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._work())
        return await future

    async def _work(self) -> None:
        while self.waiting:
            taken, count = [], 0
            while self.waiting and (not taken or count + len(self.waiting[0][0]) <= self.max_images):
                taken.append(self.waiting.pop(0))
                count += len(taken[-1][0])
            await self._run(taken)

    async def _run(self, taken: list[tuple[np.ndarray, asyncio.Future[Scores]]]) -> None:
        self.batches += 1
        try:
            outputs, distances = await run_in_threadpool(self.score_fn, np.concatenate([x for x, _ in taken]))
        except Exception as err:
            if len(taken) == 1:
                _fail(taken[0][1], err)
                return
            for entry in taken:  # one bad image must not fail the others
                await self._run([entry])
            return
        start = 0
        for images, future in taken:
            end = start + len(images)
            if not future.done():
                future.set_result(({k: v[start:end] for k, v in outputs.items()},
                                   None if distances is None else distances[start:end]))
            start = end


def _fail(future: asyncio.Future[Any], err: Exception) -> None:
    if not future.done():
        future.set_exception(err)
