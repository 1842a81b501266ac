"""What produced an output directory: package version, git commit, data checksums.

Every run directory gets a ``provenance.json`` so a number in a report can be traced to the code,
recipe and data that made it.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import medvlm
from medvlm.io import sha256_file

# Bumped whenever a metric's definition changes, so old and new scores are never compared blindly.
METRIC_VERSION = "medvlm-metrics-1"


def git_commit(start: str | os.PathLike | None = None) -> str | None:
    """The commit of the medvlm checkout, with ``+dirty`` when it has uncommitted changes."""
    where = Path(start) if start else Path(medvlm.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def file_checksums(paths: list[str | os.PathLike], limit_bytes: int = 2 << 30) -> dict[str, str]:
    """sha256 of each data file (directories: of each file inside, sorted), skipping huge files."""
    sums: dict[str, str] = {}
    for raw in paths:
        path = Path(raw)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        if path.is_dir() and len(files) > 200:  # image folders: record the count, not 10^5 hashes
            sums[str(path)] = f"directory with {len(files)} files"
            continue
        for file in files:
            if file.is_file():
                size = file.stat().st_size
                sums[str(file)] = sha256_file(file) if size <= limit_bytes else f"skipped ({size} bytes)"
    return sums


def provenance(data_files: list[str | os.PathLike] | None = None, **extra: Any) -> dict[str, Any]:
    import torch
    import transformers

    record: dict[str, Any] = {
        "medvlm_version": medvlm.__version__,
        "git_commit": git_commit(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "metric_version": METRIC_VERSION,
    }
    if data_files:
        record["data_checksums"] = file_checksums(data_files)
    record.update(extra)
    return record
