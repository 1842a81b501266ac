"""The machine a benchmark ran on, as every result file records it (figures are only comparable
within one run, but a reader needs to know what "one run" was: cores, threads, load)."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def machine(**extra: Any) -> dict[str, Any]:
    """Cores, platform, torch version and threads, load average now, plus ``extra`` (library versions)."""
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "load_average": [round(x, 2) for x in os.getloadavg()], **extra}
