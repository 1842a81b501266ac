"""Shared tools of the hostile-input suite: run the CLI in-process and hold it to the promises.

Every hostile input must end in one ``medvlm: error:`` line and exit status 2, quickly, with bounded
output, and without touching files that were there before.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from medvlm.cli import main


@dataclass
class Outcome:
    status: int
    out: str
    err: str
    seconds: float

    def refused(self, *fragments: str, within: float = 10.0, max_chars: int = 2000) -> str:
        """Exit 2 with one error line holding every fragment, in time and in bounded output."""
        assert self.status == 2, (self.status, self.err[-2000:])
        assert "Traceback" not in self.err
        assert self.seconds < within, self.seconds
        assert len(self.err) + len(self.out) < max_chars, len(self.err) + len(self.out)
        line = next(line for line in self.err.splitlines() if "error:" in line)
        for fragment in fragments:
            assert fragment in line, (fragment, line)
        return line


@pytest.fixture()
def cli(capsys):
    """``cli(*argv)`` → :class:`Outcome` (argparse's own exit 2 included)."""
    def run(*argv: str) -> Outcome:
        started = time.perf_counter()
        try:
            status = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse rejects a value
            status = int(exc.code or 0)
        seconds = time.perf_counter() - started
        captured = capsys.readouterr()
        return Outcome(status, captured.out, captured.err, seconds)

    return run


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (to show pre-existing files survive)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory) -> Path:
    """A saved micro llava model directory (tiny random weights)."""
    from medvlm.model.export import save_llava_dir
    from medvlm.model.tiny import build_tiny

    model, processor = build_tiny("micro-clip-llama", seed=0)
    return save_llava_dir(model, processor, tmp_path_factory.mktemp("micro") / "model")


@pytest.fixture(scope="session", autouse=True)
def _warm_imports() -> None:
    """Import torch/transformers once, so the time bounds measure the work on the input, not imports."""
    import medvlm.continual.checkpoints  # noqa: F401
    import medvlm.eval.run  # noqa: F401
    import medvlm.model.plan  # noqa: F401
    import medvlm.runs.pipeline  # noqa: F401
