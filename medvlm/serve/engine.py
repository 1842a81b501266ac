"""Dynamic batching: concurrent requests share one ``generate`` call instead of queueing one by one.

One worker thread owns the model. It takes the oldest waiting request, then every other waiting
request with the same decoding settings (up to ``max_batch_size``), waiting at most
``batch_window_s`` for more to arrive when the batch is not full, and runs them as one left-padded
batch through :class:`~medvlm.eval.generation.Generator`. Requests that arrive while a batch runs
form the next batch. Each row ends at its own token budget or stop string and streams as it goes,
so a short answer is not held back by a long one in its batch's text, only in its wall time.
Greedy answers do not depend on the batch a request lands in (the batch-invariance
:mod:`medvlm.eval.predict` is tested for), so a served answer at temperature 0 equals the local one.

On a GPU, ``medvlm serve --engine vllm`` hands the whole job to vLLM instead (continuous batching,
paged attention); this engine is the portable one for CPUs and small deployments.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from medvlm.eval.generation import Generated, GenerationItem, Generator, Sampling

log = logging.getLogger("medvlm.serve")


@dataclass(eq=False)  # identity: the queue removes exactly this job
class Job:
    """One request for the worker: ``on_delta`` gets text as it is final, ``on_result`` the answer or error."""

    item: GenerationItem
    sampling: Sampling
    on_delta: Callable[[str], None]
    on_result: Callable[[Generated | BaseException], None]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.item.cancelled = self.cancelled.is_set


@dataclass
class EngineStats:
    batches: int = 0
    requests: int = 0
    largest_batch: int = 0

    def to_dict(self) -> dict[str, float]:
        mean = self.requests / self.batches if self.batches else 0.0
        return {"batches": self.batches, "requests": self.requests, "largest_batch": self.largest_batch,
                "mean_batch": round(mean, 2)}


class BatchEngine:
    def __init__(self, generator: Generator, max_batch_size: int = 8, batch_window_s: float = 0.005) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.generator = generator
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_s
        self.stats = EngineStats()
        self._queue: deque[Job] = deque()
        self._ready = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._work, name="medvlm-batch-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._ready:
            if not self._running:
                raise RuntimeError("the engine is closed")
            self._queue.append(job)
            self._ready.notify()

    def close(self, timeout: float = 30.0) -> None:
        with self._ready:
            self._running = False
            self._ready.notify_all()
        self._thread.join(timeout)

    def _take_batch(self) -> list[Job]:
        with self._ready:
            while self._running and not self._queue:
                self._ready.wait()
            if not self._running:
                return []
            first = self._queue.popleft()
            batch = [first]
            deadline = time.monotonic() + self.batch_window_s
            while len(batch) < self.max_batch_size:
                for job in [job for job in self._queue if job.sampling == first.sampling]:
                    if len(batch) == self.max_batch_size:
                        break
                    self._queue.remove(job)
                    batch.append(job)
                remaining = deadline - time.monotonic()
                if len(batch) == self.max_batch_size or remaining <= 0:
                    break
                self._ready.wait(remaining)
            return [job for job in batch if not job.cancelled.is_set()]

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                if not self._running:
                    return
                continue
            self.stats.batches += 1
            self.stats.requests += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            listeners = [_forward(job) for job in batch]
            try:
                answers = self.generator.generate([job.item for job in batch], batch[0].sampling, listeners)
            except Exception as exc:  # noqa: BLE001 - every waiting client must hear about it
                log.error("generation failed for a batch of %d: %s", len(batch), type(exc).__name__)
                for job in batch:
                    job.on_result(exc)
                continue
            for job, answer in zip(batch, answers, strict=True):
                job.on_result(answer)


def _forward(job: Job) -> Callable[[str, bool], None]:
    def listener(delta: str, done: bool) -> None:
        if delta:
            job.on_delta(delta)

    return listener
