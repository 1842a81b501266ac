"""How many intra-op CPU threads the embedded runs (the demo, the general-base build) use: one.

Measured on the project's 2-core machine (``bench/contention.py``, ``bench/results/contention.json``;
the machine was shared, so the figures are noisy): with torch's default of one OpenMP thread per
core, one other CPU-bound process made the demo's training steps 4.5–5.7× slower (11× in a noisier
rerun; 25× was seen beside several), far beyond a fair share: every parallel region waits at its
barrier for the thread the scheduler parked, while the waiting thread spins. Passive waiting
(``OMP_WAIT_POLICY=PASSIVE``) removes the spinning but pays a wake-up per region (1.4–3× slower on
the idle machine); a shorter spin (``GOMP_SPINCOUNT=10000``) only halves the loss. One thread is
1.4–1.6× slower on an idle machine — the tiny model's operations are too small to split well — and
kept its speed beside a competing process, which then has the other core (steps 1.06–1.14× its idle
time; the whole demo 1.04×, ``bench/results/demo_wall.json``).

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
