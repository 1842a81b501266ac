"""Server throughput: 8 concurrent clients against one, on the loopback interface, tiny model on CPU.

``medvlm serve``'s engine batches concurrent requests into one ``generate`` call (dynamic batching).
This script serves a random-init ``tiny-clip-llama`` (or ``--model DIR``) from a background thread
on 127.0.0.1 and sends the same synthetic VQA questions (images as data URLs, greedy, a fixed
``max_tokens``) twice per repeat: one client sending them one after another, then ``--clients``
clients sharing the list. It reports requests/s of each and their ratio (target >= 3x), p50/p95
latency, the batches the engine formed, and checks that both runs gave identical answers and that
no request failed. Runs alternate ``--repeats`` times and medians are compared.

Traffic goes only to the in-process server on 127.0.0.1; every request has a timeout and the run
has a fixed number of requests, so it always ends.

    python bench/serve_throughput.py [--questions 48] [--clients 8] [--max-tokens 16] [--repeats 2]

Writes bench/results/serve_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import httpx  # noqa: E402
import torch  # noqa: E402

from medvlm.data.sources import read_source  # noqa: E402
from medvlm.data.synthetic import SyntheticSpec, materialise  # noqa: E402
from medvlm.eval.endpoint import sample_messages  # noqa: E402
from medvlm.eval.generation import Generator  # noqa: E402
from medvlm.io import write_json  # noqa: E402
from medvlm.model.build import load_pretrained  # noqa: E402
from medvlm.model.tiny import build_tiny  # noqa: E402
from medvlm.serve.server import ServerThread, ServeSettings, build_app  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SPEC = SyntheticSpec(general_images={"train": 4, "test": 30}, medical_images={"train": 4, "test": 30})
REQUEST_TIMEOUT_S = 120.0


def requests_for(data_dir: Path, count: int, max_tokens: int) -> list[dict]:
    options = {"general_images": SPEC.general_images, "medical_images": SPEC.medical_images}
    samples, _ = read_source("synthetic", str(data_dir), "test", subset="medical_vqa", limit=count, **options)
    if len(samples) < count:
        raise SystemExit(f"only {len(samples)} synthetic questions; ask for fewer")
    return [{"model": "bench", "messages": sample_messages(sample), "max_tokens": max_tokens, "temperature": 0}
            for sample in samples]


async def run_clients(url: str, bodies: list[dict], clients: int) -> dict:
    """``clients`` workers take requests from one shared list until it is empty."""
    queue: asyncio.Queue = asyncio.Queue()
    for index, body in enumerate(bodies):
        queue.put_nowait((index, body))
    answers: dict[int, str] = {}
    latencies: list[float] = []
    errors: list[str] = []

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            index, body = queue.get_nowait()
            started = time.perf_counter()
            try:
                response = await http.post(f"{url}/chat/completions", json=body)
                response.raise_for_status()
                answers[index] = response.json()["choices"][0]["message"]["content"]
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                errors.append(f"{index}: {type(exc).__name__}")
                continue
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(bodies),
        "errors": len(errors),
        "error_examples": errors[:5],
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(answers) / wall, 3),
        "latency_p50_s": round(statistics.median(ordered), 3) if ordered else None,
        "latency_p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3) if ordered else None,
        "answers": answers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-window-ms", type=float, default=5.0)
    parser.add_argument("--model", help="a Hugging Face llava directory (default: random-init tiny-clip-llama)")
    args = parser.parse_args()
    load_start = os.getloadavg()
    model, processor = load_pretrained(args.model) if args.model else build_tiny("tiny-clip-llama", seed=0)
    settings = ServeSettings(model="bench", max_batch_size=args.max_batch_size,
                             batch_window_ms=args.batch_window_ms)
    app, engine = build_app(Generator(model, processor), settings)
    runs: dict[str, list[dict]] = {"single": [], "concurrent": []}
    with tempfile.TemporaryDirectory() as tmp, ServerThread(app) as server:
        bodies = requests_for(materialise(Path(tmp) / "synthetic", SPEC), args.questions, args.max_tokens)
        asyncio.run(run_clients(server.url, bodies[:2], 1))  # warm-up: first calls allocate and compile
        for repeat in range(args.repeats):
            for name, clients in (("single", 1), ("concurrent", args.clients)):
                before = engine.stats.to_dict()
                result = asyncio.run(run_clients(server.url, bodies, clients))
                after = engine.stats.to_dict()
                batches = after["batches"] - before["batches"]
                result["batches"] = batches
                result["mean_batch"] = round((after["requests"] - before["requests"]) / max(batches, 1), 2)
                runs[name].append(result)
                print(f"repeat {repeat} {name:10} {result['requests_per_s']:7.2f} req/s  p50 "
                      f"{result['latency_p50_s']} s  p95 {result['latency_p95_s']} s  mean batch "
                      f"{result['mean_batch']}  errors {result['errors']}", flush=True)
    engine.close()
    reference = runs["single"][0]["answers"]
    identical = all(run["answers"] == reference for group in runs.values() for run in group)
    errors = sum(run["errors"] for group in runs.values() for run in group)

    def summary(group: list[dict]) -> dict:
        keep = ("clients", "requests", "errors", "wall_s", "requests_per_s", "latency_p50_s", "latency_p95_s",
                "batches", "mean_batch")
        return {"median_requests_per_s": round(statistics.median(r["requests_per_s"] for r in group), 3),
                "median_latency_p50_s": round(statistics.median(r["latency_p50_s"] for r in group), 3),
                "median_latency_p95_s": round(statistics.median(r["latency_p95_s"] for r in group), 3),
                "runs": [{key: run[key] for key in keep} for run in group]}

    single, concurrent = summary(runs["single"]), summary(runs["concurrent"])
    ratio = concurrent["median_requests_per_s"] / single["median_requests_per_s"]
    result = {
        "benchmark": "serve_throughput",
        "model": args.model or "tiny-clip-llama (random init, seed 0)",
        "questions": args.questions,
        "max_tokens": args.max_tokens,
        "decoding": "greedy",
        "server": {"engine": "medvlm dynamic batching", "max_batch_size": args.max_batch_size,
                   "batch_window_ms": args.batch_window_ms, "address": "127.0.0.1 (in-process, background thread)"},
        "single_client": single,
        f"{args.clients}_clients": concurrent,
        "throughput_ratio": round(ratio, 2),
        "target_ratio": 3.0,
        "meets_target": ratio >= 3.0,
        "identical_answers": identical,
        "errors": errors,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "serve_throughput.json", result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("single_client", f"{args.clients}_clients")},
                     indent=2))
    if not identical or errors:
        raise SystemExit("answers differ between runs or requests failed")


if __name__ == "__main__":
    main()
