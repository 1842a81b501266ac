"""Input-pipeline throughput: raw image files to model-ready batches, JPEG versus CT DICOM.

Four image sets go through the same path training uses — a LLaVA JSON read by the ``llava``
source, pre-tokenised by ``SupervisedDataset``, then per sample: path resolution, decoding
(Pillow / pydicom + modality LUT + window), LLaVA's pad-to-square, resize and normalisation to the
vision tower's input size, and the collator — through a ``DataLoader`` with 0 and 2 workers:

* ``vqa_rad_jpeg``: the real VQA-RAD JPEGs under ``MEDVLM_REAL_DATA`` (synthetic 512² JPEGs if unset);
* ``ct_jpeg``: a real 512² head CT slice (pydicom's bundled CQ500 file) rendered once to JPEG;
* ``ct_dicom``: the same slice as uncompressed DICOM (int16, rescale slope/intercept, file window);
* ``ct_dicom_j2k``: the same slice as published, JPEG 2000 compressed.

The CT sets hold identical pixels, so their ratios are the cost of the DICOM path itself. The pixel
cache is off (every sample decodes, as in a first epoch or a data set larger than the cache). Each
configuration runs ``--repeats`` times, interleaved, and medians are reported; ``decode_ms`` times
``load_image`` alone and ``preprocess_ms`` the shared pad/resize/normalise step. Ratios are taken within
this run, so they stay meaningful on a busy machine.

    python bench/data_throughput.py [--samples 192] [--repeats 3] [--image-size 336]

Writes bench/results/data_throughput.json.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import torch  # noqa: E402
from machine import machine  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from medvlm.data.collate import Collator, ConversationEncoder, SupervisedDataset  # noqa: E402
from medvlm.data.images import ImagePreparer, load_image  # noqa: E402
from medvlm.data.sources import read_source  # noqa: E402
from medvlm.data.templates import get_template  # noqa: E402
from medvlm.io import write_json  # noqa: E402
from medvlm.model.build import num_image_tokens  # noqa: E402
from medvlm.model.tiny import build_tiny  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CT_SLICE = "693_J2KI.dcm"  # a real 512x512 head CT (CQ500), JPEG 2000, bundled with pydicom
COPIES = 32  # distinct files per set


def make_sets(root: Path) -> dict[str, tuple[list[Path], str]]:
    """Image files per set, with a note on where they come from."""
    sets: dict[str, tuple[list[Path], str]] = {}
    real = os.environ.get("MEDVLM_REAL_DATA")
    folder = Path(real) / "vqa_rad" / "osf_original" / "VQA_RAD Image Folder" if real else None
    if folder is not None and folder.is_dir():
        sets["vqa_rad_jpeg"] = (sorted(folder.glob("*.jpg")), f"real VQA-RAD JPEGs ({folder})")
    else:
        rng = np.random.default_rng(0)
        files = []
        for index in range(COPIES):
            path = root / "vqa" / f"synpic{index}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (512, 512), dtype=np.uint8), "L").save(path, quality=90)
            files.append(path)
        sets["vqa_rad_jpeg"] = (files, "synthetic 512x512 grey JPEGs (MEDVLM_REAL_DATA unset)")

    source = get_testdata_file(CT_SLICE)
    native = pydicom.dcmread(source)
    native.decompress()  # same pixels, uncompressed transfer syntax
    rendered = load_image(source)  # the file's own window, as training would see it
    for name in ("ct_jpeg", "ct_dicom", "ct_dicom_j2k"):
        (root / name).mkdir()
    for index in range(COPIES):
        rendered.save(root / "ct_jpeg" / f"ct{index}.jpg", quality=95)
        native.save_as(root / "ct_dicom" / f"ct{index}.dcm")
        shutil.copy(source, root / "ct_dicom_j2k" / f"ct{index}.dcm")
    note = f"pydicom's {CT_SLICE} (512x512 CT)"
    sets["ct_jpeg"] = (sorted((root / "ct_jpeg").iterdir()), f"{note} rendered to JPEG (quality 95)")
    sets["ct_dicom"] = (sorted((root / "ct_dicom").iterdir()), f"{note}, uncompressed DICOM")
    sets["ct_dicom_j2k"] = (sorted((root / "ct_dicom_j2k").iterdir()), f"{note}, JPEG 2000 DICOM as published")
    return sets


def image_processor(size: int):
    """The tiny preset's processor at a real vision tower's input size (CLIP ViT-L/14-336 by default)."""
    _, processor = build_tiny("tiny-clip-llama", seed=0)
    images = copy.deepcopy(processor.image_processor)
    images.size = {"shortest_edge": size}
    images.crop_size = {"height": size, "width": size}
    return processor.tokenizer, images


def build_dataset(files: list[Path], root: Path, name: str, count: int, tokenizer, images, config_tokens: int):
    data = [{"id": f"{name}-{i}", "image": files[i % len(files)].name, "answer_type": "CLOSED", "conversations": [
        {"from": "human", "value": "<image>\nIs there evidence of an aortic aneurysm?"},
        {"from": "gpt", "value": "yes"}]} for i in range(count)]
    json_path = root / f"{name}.json"
    write_json(json_path, data)
    started = time.perf_counter()
    samples, _ = read_source("llava", str(json_path), "train", image_root=str(files[0].parent))
    encoder = ConversationEncoder(tokenizer, get_template("vicuna_v1"), config_tokens, 512, system_prompt="")
    dataset = SupervisedDataset(samples, encoder, ImagePreparer(images, "pad"), cache=None)
    return dataset, time.perf_counter() - started


def epoch_rate(dataset, pad_id: int, workers: int, batch_size: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=Collator(pad_id))
    started = time.perf_counter()
    seen = 0
    for batch in loader:
        seen += batch["input_ids"].shape[0]
        assert batch["pixel_values"].shape[0] == batch["input_ids"].shape[0]
    return seen / (time.perf_counter() - started)


def decode_ms(files: list[Path], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        for path in files:
            started = time.perf_counter()
            load_image(path)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def preprocess_ms(files: list[Path], preparer: ImagePreparer, repeats: int) -> float:
    """Pad, resize and normalise one decoded image (the part every format shares)."""
    decoded = [load_image(path) for path in files]
    times = []
    for _ in range(repeats):
        for image in decoded:
            started = time.perf_counter()
            preparer([image])
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=192, help="samples per set and epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=336)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    torch.manual_seed(0)
    model, _ = build_tiny("tiny-clip-llama", seed=0)
    tokens = num_image_tokens(model.config)
    tokenizer, images = image_processor(args.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sets = make_sets(root)
        datasets, setup, sizes = {}, {}, {}
        for name, (files, _) in sets.items():
            datasets[name], setup[name] = build_dataset(files, root, name, args.samples, tokenizer, images, tokens)
            sizes[name] = sorted(load_image(path).size for path in files)[len(files) // 2]
        rates: dict[str, dict[int, list[float]]] = {name: {w: [] for w in args.workers} for name in sets}
        for _ in range(args.repeats):  # interleaved, so load on the machine hits every configuration alike
            for name, dataset in datasets.items():
                for workers in args.workers:
                    rates[name][workers].append(epoch_rate(dataset, tokenizer.pad_token_id, workers, args.batch_size))
        decode = {name: decode_ms(files, args.repeats) for name, (files, _) in sets.items()}
        preparer = ImagePreparer(images, "pad")
        preprocess = {name: preprocess_ms(files, preparer, args.repeats) for name, (files, _) in sets.items()}

    median = {name: {w: statistics.median(values) for w, values in by.items()} for name, by in rates.items()}
    first = args.workers[0]
    formats = {
        name: {"files": note, "median_image_size": list(sizes[name]), "decode_ms": round(decode[name], 3),
               "preprocess_ms": round(preprocess[name], 3),
               "setup_seconds_read_and_tokenise": round(setup[name], 3),
               "samples_per_second": {f"workers_{w}": [round(x, 2) for x in rates[name][w]] for w in args.workers},
               "median_samples_per_second": {f"workers_{w}": round(median[name][w], 2) for w in args.workers}}
        for name, (_, note) in sets.items()}
    result = {
        "benchmark": "data_throughput",
        "machine": machine(pydicom=pydicom.__version__),
        "pipeline": "llava JSON -> SupervisedDataset -> DataLoader(Collator); per sample: resolve, decode, "
                    f"pad to square, resize to {args.image_size}, normalise; pixel cache off",
        "samples_per_epoch": args.samples, "batch_size": args.batch_size, "repeats": args.repeats,
        "image_size": args.image_size, "formats": formats,
        "ratios": {
            "ct_dicom_decode_over_ct_jpeg_decode": round(decode["ct_dicom"] / decode["ct_jpeg"], 3),
            "ct_dicom_j2k_decode_over_ct_jpeg_decode": round(decode["ct_dicom_j2k"] / decode["ct_jpeg"], 3),
            f"ct_jpeg_over_ct_dicom_samples_per_second_workers_{first}":
                round(median["ct_jpeg"][first] / median["ct_dicom"][first], 3),
            f"ct_jpeg_over_ct_dicom_j2k_samples_per_second_workers_{first}":
                round(median["ct_jpeg"][first] / median["ct_dicom_j2k"][first], 3),
            **{f"workers_{w}_over_{first}": {name: round(median[name][w] / median[name][first], 3) for name in sets}
               for w in args.workers[1:]},
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "data_throughput.json", result)
    for name, entry in formats.items():
        print(f"{name:14s} decode {entry['decode_ms']:7.2f} ms  preprocess {entry['preprocess_ms']:6.2f} ms  "
              f"samples/s {entry['median_samples_per_second']}")
    print("ratios:", result["ratios"])


if __name__ == "__main__":
    main()
