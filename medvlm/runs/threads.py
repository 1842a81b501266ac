"""How many intra-op CPU threads the embedded runs (the demo, the general-base build) use: one.

Measured on the project's 2-core machines (``bench/contention.py``, ``bench/results/contention.json``):
with torch's default of one OpenMP thread per core, one other CPU-bound process on the machine made
the tiny model's training steps 4–6× slower (and 25× beside several), because every parallel region
waits at its barrier for the thread the scheduler parked, while the waiting thread spins. Passive
waiting (``OMP_WAIT_POLICY=PASSIVE``) removes the spinning but pays a futex wake-up per region and was
slower than one thread even on an idle machine; a shorter spin (``GOMP_SPINCOUNT``) only halves the
loss. One thread costs about 1.4× on an idle machine — the tiny model's operations are too small to
split well — and keeps its speed beside a competing process, which then has the other core.

A fixed count also makes these runs reproducible bit for bit: how a matrix product is split across
threads decides the order of its floating-point sums, so the shipped general base is rebuilt exactly
only with the thread count it was built with.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

CPU_THREADS = 1


@contextmanager
def cpu_threads(count: int = CPU_THREADS) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads, then restore the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
