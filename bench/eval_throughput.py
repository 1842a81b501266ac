"""Evaluation throughput: batched prediction against a batch-size-1 loop, and scoring 10,000 items.

1. Prediction. The same tiny model answers the same synthetic VQA questions (images and text)
   once per question — how LLaVA-Med's ``model_vqa`` evaluates — and in left-padded batches with a
   KV cache, through the same :func:`medvlm.eval.predict.generate_answers`. Every run must give the
   same answers as the batch-size-1 run (the script fails otherwise). Runs alternate and repeat
   ``--repeats`` times; the medians are compared. Target: >= 5x questions/s.
   The default model is a random-init ``tiny-clip-llama``: it rarely emits end-of-sequence, so
   every answer runs to ``--max-new-tokens`` (uniform lengths favour batching a little); pass
   ``--model DIR`` (e.g. outputs/demo/finetune/model) for a trained model with short answers.
2. Scoring. 10,000 generated items (open and closed, five breakdown fields, realistic answer
   lengths, 1 % missing) scored from an answer file on disk to scores.json + items file, with 1,000
   bootstrap resamples per breakdown cell. Target: < 10 s.

    python bench/eval_throughput.py [--questions 96] [--repeats 3] [--batch-sizes 16 32 64]

Writes bench/results/eval_throughput.json. Timings on a shared machine are noisy; the ratios are
measured within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from medvlm.data.records import SampleMeta, vqa_sample  # noqa: E402
from medvlm.data.sources import read_source  # noqa: E402
from medvlm.data.synthetic import SyntheticSpec, materialise  # noqa: E402
from medvlm.eval.answers import read_answers  # noqa: E402
from medvlm.eval.normalize import _normalize as normalize_cache  # noqa: E402
from medvlm.eval.predict import PredictSettings, generate_answers  # noqa: E402
from medvlm.eval.score import score_answers  # noqa: E402
from medvlm.io import write_json, write_jsonl  # noqa: E402
from medvlm.model.build import load_pretrained  # noqa: E402
from medvlm.model.tiny import build_tiny  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SPEC = SyntheticSpec(general_images={"train": 10, "test": 40}, medical_images={"train": 10, "test": 40})


def questions(data_dir: Path, count: int) -> list:
    options = {"general_images": SPEC.general_images, "medical_images": SPEC.medical_images}
    medical, _ = read_source("synthetic", str(data_dir), "test", subset="medical_vqa", **options)
    general, _ = read_source("synthetic", str(data_dir), "test", subset="general_vqa", **options)
    text_only = [
        vqa_sample(
            id=f"text-{i}",
            question=f"Is statement number {i} about anatomy true?",
            answer="yes",
            meta=SampleMeta(dataset="text", split="test", answer_type="CLOSED"),
        )
        for i in range(8)
    ]
    mixed = (
        medical[: count * 2 // 3]
        + general[: count // 3 - len(text_only) // 2]
        + text_only[: len(text_only) // 2]
    )
    return mixed[:count]


def timed_predict(model, processor, samples, batch_size: int, max_new_tokens: int) -> tuple[float, dict]:
    settings = PredictSettings(batch_size=batch_size, max_new_tokens=max_new_tokens)
    started = time.perf_counter()
    rows = generate_answers(model, processor, samples, settings, show_progress=False)
    return time.perf_counter() - started, {row["question_id"]: row["text"] for row in rows}


def bench_prediction(args: argparse.Namespace, data_dir: Path) -> dict:
    if args.model:
        model, processor = load_pretrained(args.model)
        model_name = str(args.model)
    else:
        model, processor = build_tiny("tiny-clip-llama", seed=0)
        model_name = "tiny-clip-llama (random init, seed 0)"
    samples = questions(data_dir, args.questions)
    timed_predict(model, processor, samples[:4], 4, args.max_new_tokens)  # warm-up
    times: dict[int, list[float]] = {1: [], **{b: [] for b in args.batch_sizes}}
    reference: dict | None = None
    identical = True
    for repeat in range(args.repeats):
        order = [1, *args.batch_sizes] if repeat % 2 == 0 else [*args.batch_sizes, 1]
        for batch_size in order:
            seconds, texts = timed_predict(model, processor, samples, batch_size, args.max_new_tokens)
            times[batch_size].append(seconds)
            reference = reference or texts
            identical &= texts == reference
            print(
                f"  batch size {batch_size:3d}: {seconds:7.2f} s ({len(samples) / seconds:6.1f} q/s)",
                flush=True,
            )

    def summary(values: list[float]) -> dict:
        median = statistics.median(values)
        return {"seconds": [round(v, 3) for v in values], "median_s": round(median, 3),
                "questions_per_s": round(len(samples) / median, 2)}

    single = summary(times[1])
    batched = {str(b): summary(times[b]) for b in args.batch_sizes}
    best = max(batched, key=lambda b: batched[b]["questions_per_s"])
    speedup = batched[best]["questions_per_s"] / single["questions_per_s"]
    return {"model": model_name, "questions": len(samples), "with_image": sum(s.has_image for s in samples),
            "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "batch_size_1": single,
            "batched": batched, "best_batch_size": int(best), "speedup": round(speedup, 2),
            "speedup_by_batch_size": {b: round(v["questions_per_s"] / single["questions_per_s"], 2)
                                      for b, v in batched.items()},
            "target_speedup": 5.0, "meets_target": speedup >= 5.0, "identical_outputs": identical}


OPEN_ANSWERS = ["left lung", "right kidney", "ct with contrast", "3.5 cm", "axial", "brain", "liver", "mri",
                "pulmonary nodules", "free air", "x-ray", "two"]
FILLER = "the image shows a finding in the region that is consistent with the answer given".split()


def scoring_items(count: int, seed: int) -> tuple[list, list[dict]]:
    """``count`` references with varied metadata and answers of realistic variety and length."""
    rng = np.random.default_rng(seed)
    samples, rows = [], []
    for index in range(count):
        closed = rng.random() < 0.55
        reference = str(rng.choice(["yes", "no"])) if closed else str(rng.choice(OPEN_ANSWERS))
        meta = SampleMeta(
            dataset="bench",
            split="test",
            answer_type="CLOSED" if closed else "OPEN",
            modality=str(rng.choice(["CT", "MRI", "X-Ray"])),
            organ=str(rng.choice(["HEAD", "CHEST", "ABD", "PELVIS", "NECK"])),
            question_type=str(
                rng.choice(["PRES", "POS", "ABN", "MODALITY", "SIZE", "PLANE", "ORGAN", "COUNT"])
            ),
            language="zh" if rng.random() < 0.1 else "en",
            source_id=str(index),
        )
        samples.append(vqa_sample(id=str(index), question=f"Question {index}?", answer=reference, meta=meta))
        kind = rng.random()
        if kind < 0.01:
            continue  # missing prediction
        if kind < 0.4:
            text = reference.capitalize() + "."
        elif kind < 0.55:
            text = "Not sure."
        elif kind < 0.8:
            words = list(rng.choice(FILLER, size=int(rng.integers(6, 20))))
            words.insert(int(rng.integers(0, len(words))), reference)
            text = ("Yes, " if rng.random() < 0.5 else "") + " ".join(words) + "."
        else:
            text = str(rng.choice(OPEN_ANSWERS + ["yes", "no"]))
        rows.append(
            {
                "question_id": index,
                "prompt": f"Question {index}?",
                "text": text,
                "answer_id": str(index),
                "model_id": "bench",
                "metadata": {},
            }
        )
    return samples, rows


def bench_scoring(args: argparse.Namespace, work: Path) -> dict:
    samples, rows = scoring_items(args.items, seed=0)
    answers_file = work / "answers.jsonl"
    write_jsonl(answers_file, rows)
    seconds = []
    for repeat in range(args.repeats + 1):
        normalize_cache.cache_clear()  # every repeat starts cold, as a fresh `medvlm score` does
        started = time.perf_counter()
        result = score_answers(samples, read_answers(answers_file), bootstrap=args.bootstrap, seed=0)
        result.write(work / f"scores-{repeat}.json")
        seconds.append(time.perf_counter() - started)
        print(f"  scoring {args.items} items: {seconds[-1]:.2f} s", flush=True)
    cells = sum(len(cells) for groups in result.scores["breakdown"].values() for cells in groups.values())
    median = statistics.median(seconds)
    return {
        "items": args.items,
        "open": result.scores["metrics"]["strict"]["n_open"],
        "closed": result.scores["metrics"]["strict"]["n_closed"],
        "missing": result.scores["missing_predictions"]["count"],
        "bootstrap": args.bootstrap,
        "breakdown_cells": cells,
        "includes": "read answer file, join, all metrics (nltk BLEU x4 per open item), "
        "breakdowns with bootstrap CIs, confusion matrix, write scores.json + items file",
        "seconds": [round(s, 3) for s in seconds],
        "median_s": round(median, 3),
        "target_s": 10.0,
        "meets_target": median < 10.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=96)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--model", help="a Hugging Face llava directory (default: random-init tiny-clip-llama)"
    )
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = materialise(work / "synthetic", SPEC)
        print("prediction:", flush=True)
        prediction = bench_prediction(args, data_dir)
        print("scoring:", flush=True)
        scoring = bench_scoring(args, work)
    result = {
        "benchmark": "eval_throughput",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        },
        "prediction": prediction,
        "scoring": scoring,
    }
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "eval_throughput.json", result)
    print(json.dumps(result, indent=2))
    if not prediction["identical_outputs"]:
        raise SystemExit("batched outputs differ from batch size 1")


if __name__ == "__main__":
    main()
