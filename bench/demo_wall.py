"""Wall time of ``medvlm demo`` (what ``scripts/demo.sh`` runs), alone and beside one CPU-bound process.

Each run is a fresh ``python -m medvlm demo`` in a new output directory, timed from process start to
exit (interpreter start, imports, synthetic data generation, training, evaluation, report), with its
strict accuracies. The loaded run starts ``python -c 'while True: pass'`` first and stops it after.
The machine is shared, so the load average before and after each run is recorded, and the
scheduling group this bench ran in (``/proc/self/autogroup``: a raised priority against other
sessions approximates an otherwise idle machine).

    python bench/demo_wall.py [--conditions idle loaded] [--from-scratch]

Writes bench/results/demo_wall.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "demo_wall.json"
COMPETITOR = [sys.executable, "-c", "while True: pass"]


def scheduling() -> str | None:
    try:
        return Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        return None


def run(condition: str, from_scratch: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TQDM_DISABLE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        load_before = os.getloadavg()
        competitor = subprocess.Popen(COMPETITOR) if condition == "loaded" else None
        started = time.perf_counter()
        try:
            subprocess.run([sys.executable, "-m", "medvlm", "demo", "--output", str(out),
                            *(["--from-scratch"] if from_scratch else [])],
                           env=env, cwd=REPO, check=True, capture_output=True, text=True)
        finally:
            wall = time.perf_counter() - started
            if competitor is not None:
                competitor.kill()
                competitor.wait()
        summary = json.loads((out / "summary.json").read_text())
    results = {f"{r['model']}/{r['dataset']}": {k: r[k] for k in ("closed_accuracy", "open_exact_match")}
               for r in summary["results"]}
    row = {"condition": condition, "from_scratch": from_scratch, "wall_seconds": round(wall, 1),
           "demo_seconds": summary["wall_seconds"], "stage_seconds": summary["stage_seconds"], "strict": results,
           "load_average_before": [round(x, 2) for x in load_before],
           "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conditions", nargs="+", default=["idle", "loaded"], choices=["idle", "loaded"])
    parser.add_argument("--from-scratch", action="store_true")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    runs = [run(condition, args.from_scratch) for condition in args.conditions]
    result = {"what": "wall time of a fresh `python -m medvlm demo` (scripts/demo.sh without the bootstrap), "
                      "alone ('idle') and beside one `python -c 'while True: pass'` ('loaded')",
              "runs": runs,
              "setup": {"cpus": os.cpu_count(), "autogroup": scheduling(), "python": platform.python_version(),
                        "machine": platform.processor() or platform.machine()}}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
