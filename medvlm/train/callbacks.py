"""Training logs as JSONL: one line per logging step, flushed, so a killed run keeps its history."""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from medvlm.io import append_jsonl


class JsonlLogger(TrainerCallback):
    """Writes loss, learning rate, grad norm and tokens/s to ``path`` on every log event."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._last_time: float | None = None
        self._last_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time = time.perf_counter()
        self._last_tokens = state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.perf_counter()
        row = {"step": state.global_step, "epoch": state.epoch, **logs}
        tokens = state.num_input_tokens_seen
        if self._last_time is not None and now > self._last_time and tokens > self._last_tokens:
            row["tokens_per_second"] = round((tokens - self._last_tokens) / (now - self._last_time), 1)
        self._last_time, self._last_tokens = now, tokens
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            append_jsonl(handle, row)
