"""Training overhead of medvlm's Trainer against a bare PyTorch loop, and padding saved by grouping.

Both loops train the same tiny model (same initial weights) on the same batches: one DataLoader
(dataset, modality/length-grouped sampler, collator) feeds each, so the ratio measures what the
Trainer layer costs — loss-plugin hook, logging, scheduler, grad clipping, token counting — not data
loading or one-off set-up (the Trainer side is timed from ``on_train_begin`` to ``on_train_end``).
Each side runs ``--repeats`` times, alternating, and the median tokens/s is compared.

The second measurement is the share of padded token positions with LLaVA's modality- and
length-grouped batching versus random batching on the synthetic data mix.

    python bench/train_overhead.py [--steps 120] [--repeats 3]

Writes bench/results/train_overhead.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from machine import machine  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import TrainerCallback, TrainingArguments, get_cosine_schedule_with_warmup  # noqa: E402

from medvlm.data.collate import (  # noqa: E402
    Collator,
    ConversationEncoder,
    ModalityLengthGroupedSampler,
    SupervisedDataset,
    padded_fraction,
    random_batches,
)
from medvlm.data.images import ImagePreparer, PixelCache  # noqa: E402
from medvlm.data.sources import read_source  # noqa: E402
from medvlm.data.synthetic import SyntheticSpec, materialise  # noqa: E402
from medvlm.data.templates import get_template  # noqa: E402
from medvlm.io import write_json  # noqa: E402
from medvlm.model.build import apply_freeze_plan, num_image_tokens  # noqa: E402
from medvlm.model.tiny import build_tiny  # noqa: E402
from medvlm.train.trainer import MedvlmTrainer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SPEC = SyntheticSpec(general_images={"train": 300, "test": 10}, medical_images={"train": 300, "test": 10})
SUBSETS = ("medical_vqa", "medical_instruct", "medical_caption", "general_instruct")


def build_dataset(data_dir: Path, processor, model) -> SupervisedDataset:
    samples = []
    for subset in SUBSETS:
        found, _ = read_source("synthetic", str(data_dir), "train", subset=subset,
                               general_images=SPEC.general_images, medical_images=SPEC.medical_images)
        samples.extend(found)
    encoder = ConversationEncoder(processor.tokenizer, get_template("vicuna_v1"), num_image_tokens(model.config),
                                  256, system_prompt="")
    dataset = SupervisedDataset(samples, encoder, ImagePreparer(processor.image_processor, "pad"),
                                PixelCache(1 << 30))
    for index in range(len(dataset)):  # warm the pixel cache so neither side pays image decoding
        dataset[index]
    return dataset


def loader(dataset: SupervisedDataset, processor, batch_size: int) -> DataLoader:
    sampler = ModalityLengthGroupedSampler(dataset.lengths, dataset.has_image, batch_size, seed=0)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                      collate_fn=Collator(processor.tokenizer.pad_token_id))


def fresh_model():
    model, processor = build_tiny("tiny-clip-llama", seed=0)
    apply_freeze_plan(model, ("projector", "language_model"))
    return model, processor


def bare_loop(dataset, steps: int, batch_size: int) -> float:
    model, processor = fresh_model()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, int(0.03 * steps), steps)
    tokens, step = 0, 0
    started = time.perf_counter()
    while step < steps:
        for batch in loader(dataset, processor, batch_size):
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
            step += 1
            if step == steps:
                break
    return tokens / (time.perf_counter() - started)


class LoopTimer(TrainerCallback):
    """Times the training loop itself: from the first step's start to the last step's end."""

    def __init__(self) -> None:
        self.started = self.ended = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.ended = time.perf_counter()


def trainer_loop(dataset, steps: int, batch_size: int, workdir: Path) -> float:
    model, processor = fresh_model()
    args = TrainingArguments(
        output_dir=str(workdir), per_device_train_batch_size=batch_size, max_steps=steps, learning_rate=1e-3,
        warmup_steps=0.03, lr_scheduler_type="cosine", max_grad_norm=1.0, logging_steps=10, save_strategy="no",
        report_to="none", remove_unused_columns=False, include_num_input_tokens_seen="non_padding",
        disable_tqdm=True, seed=0, data_seed=0)
    timer = LoopTimer()
    trainer = MedvlmTrainer(model=model, args=args, train_dataset=dataset, callbacks=[timer],
                            data_collator=Collator(processor.tokenizer.pad_token_id), processing_class=processor)
    trainer.train()
    return trainer.state.num_input_tokens_seen / (timer.ended - timer.started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = materialise(Path(tmp) / "synthetic", SPEC)
        model, processor = fresh_model()
        dataset = build_dataset(data_dir, processor, model)
        bare, ours = [], []
        for _ in range(args.repeats):
            bare.append(bare_loop(dataset, args.steps, args.batch_size))
            ours.append(trainer_loop(dataset, args.steps, args.batch_size, Path(tmp) / "trainer"))
        grouped = ModalityLengthGroupedSampler(dataset.lengths, dataset.has_image, args.batch_size, seed=0).batches()
        shuffled = random_batches(len(dataset), args.batch_size, seed=0)
        result = {
            "benchmark": "train_overhead",
            "machine": machine(),
            "model": "tiny-clip-llama (projector + language model trainable)",
            "samples": len(dataset), "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
            "bare_tokens_per_second": [round(x, 1) for x in bare],
            "trainer_tokens_per_second": [round(x, 1) for x in ours],
            "ratio_trainer_over_bare": round(statistics.median(ours) / statistics.median(bare), 4),
            "target_ratio": 0.85,
            "padded_fraction": {
                "modality_length_grouped": round(padded_fraction(dataset.lengths, grouped), 4),
                "random": round(padded_fraction(dataset.lengths, shuffled), 4),
            },
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "train_overhead.json", result)
    print(f"trainer/bare tokens/s ratio {result['ratio_trainer_over_bare']:.3f} (target >= 0.85); "
          f"padded fraction grouped {result['padded_fraction']['modality_length_grouped']:.3f} vs random "
          f"{result['padded_fraction']['random']:.3f}")


if __name__ == "__main__":
    main()
