"""The ``medvlm`` command. Thin: parse arguments, call a library function, print the outcome.

Every user error (bad recipe key, bad data record, missing file) is a
:class:`~medvlm.errors.MedvlmError`: it prints one ``medvlm: error: ...`` line naming the file,
record and key, and exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from medvlm import __version__
from medvlm.errors import MedvlmError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def decorator(function: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = function
        return function

    return decorator


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    logging.getLogger("medvlm").setLevel(logging.DEBUG if verbose else logging.INFO)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    for noisy in ("DeepSpeed", "torch.distributed", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parse_options(pairs: list[str] | None) -> dict:
    """``--option key=value`` pairs, values parsed as YAML (so lists and numbers work)."""
    import yaml

    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise MedvlmError(f"--option '{pair}': expected KEY=VALUE")
        options[key] = yaml.safe_load(value)
    return options


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


@command("train")
def _train(args: argparse.Namespace) -> int:
    from medvlm.recipe import load_recipe
    from medvlm.train.stage import run_stage

    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.stages:
        raise MedvlmError(f"{args.recipe}: this is a pipeline recipe (it lists stages); run it with "
                          "'medvlm pipeline'")
    result = run_stage(recipe, resume=args.resume)
    print(f"model: {result.model_dir}")
    print(json.dumps({k: result.summary[k] for k in ("global_step", "train_loss", "wall_seconds")}))
    return 0


@command("pipeline")
def _pipeline(args: argparse.Namespace) -> int:
    from medvlm.train.continual import is_continual_recipe, run_continual
    from medvlm.train.pipeline import load_pipeline, run_pipeline

    if is_continual_recipe(args.recipe, args.overrides):
        from medvlm.recipe import load_recipe

        continual = run_continual(load_recipe(args.recipe, args.overrides), resume=args.resume)
        print(f"output: {continual.output_dir}")
        print(json.dumps(continual.record["metrics"]))
        return 0
    result = run_pipeline(load_pipeline(args.recipe, args.overrides), resume=args.resume)
    print(f"output: {result.output_dir}")
    return 0


@command("consolidate")
def _consolidate(args: argparse.Namespace) -> int:
    from medvlm.continual import ConsolidationConfig
    from medvlm.continual.checkpoints import consolidate_checkpoints

    summary = consolidate_checkpoints(args.method, args.previous, args.current, args.output,
                                      ConsolidationConfig(ratio=args.ratio, alpha=args.alpha))
    print(json.dumps(summary))
    return 0


@command("demo")
def _demo(args: argparse.Namespace) -> int:
    from medvlm.demo import run_demo

    summary = run_demo(args.output, overrides=args.overrides, recipe=args.recipe)
    print(summary)
    return 0


@command("predict")
def _predict(args: argparse.Namespace) -> int:
    from medvlm.data.sources import read_source
    from medvlm.eval.predict import PredictSettings, generate_answers
    from medvlm.model.build import load_pretrained

    samples, report = read_source(args.dataset, args.path, args.split, policy=args.on_bad_record,
                                  limit=args.limit, image_root=args.image_root, **_parse_options(args.option))
    if report.skipped:
        print(f"skipped {report.skipped} bad record(s): {report.summary()['skip_reasons']}", file=sys.stderr)
    model, processor = load_pretrained(args.model)
    settings = PredictSettings(template=args.template, prompt_style=args.prompt_style,
                               batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                               system_prompt=args.system_prompt, model_id=args.model_id or args.model)
    rows = generate_answers(model, processor, samples, settings, output=args.output)
    print(f"wrote {len(rows)} answer(s) to {args.output} ({len(samples)} questions)")
    return 0


@command("score")
def _score(args: argparse.Namespace) -> int:
    from medvlm.data.sources import read_source
    from medvlm.eval.score import read_answers, score
    from medvlm.io import write_json

    samples, report = read_source(args.dataset, args.path, args.split, policy=args.on_bad_record,
                                  image_root=args.image_root, **_parse_options(args.option))
    result = score(samples, read_answers(args.predictions), answers_file=args.predictions,
                   provenance={"dataset": args.dataset, "data_path": args.path, "split": args.split,
                               "predictions": args.predictions, "skipped_records": report.skipped})
    write_json(args.output, result)
    print(json.dumps(result["metrics"], indent=2))
    return 0


@command("data preview")
def _data_preview(args: argparse.Namespace) -> int:
    from medvlm.data.preview import preview

    print(preview(args.recipe, args.overrides, count=args.n))
    return 0


@command("data synth")
def _data_synth(args: argparse.Namespace) -> int:
    from medvlm.data.synthetic import SyntheticSpec, materialise

    root = materialise(args.output, SyntheticSpec(seed=args.seed, image_size=args.image_size))
    print(f"synthetic data in {root}")
    return 0


# --------------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------------


def _add_dataset_args(parser: argparse.ArgumentParser, *, required_split: bool = False) -> None:
    parser.add_argument("--dataset", required=True, help="source name: llava, llava_med, vqa_rad, slake, "
                        "pathvqa, roco, hf, synthetic")
    parser.add_argument("--path", help="data file or directory, as the source expects")
    parser.add_argument("--split", default="test")
    parser.add_argument("--image-root", help="directory image paths are relative to (and confined to)")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE", help="source option, repeatable")
    parser.add_argument("--on-bad-record", choices=("error", "skip"), default="error",
                        help="stop at the first bad record (default) or skip and count it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medvlm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"medvlm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="run one training stage from a recipe")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.learning_rate=1e-4")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")

    p = sub.add_parser("pipeline", help="run several stages (and evaluation), or a continual task sequence "
                       "(recipe with a 'continual' section)")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="pipeline keys, STAGE.key=value for one stage, '*.key=value' for every stage")
    p.add_argument("--resume", action="store_true", help="continue an interrupted stage from its checkpoint")

    p = sub.add_parser("consolidate", help="merge a model and its finetuned successor (SAC or model mix)")
    p.add_argument("--method", choices=("sac", "mix"), required=True)
    p.add_argument("--previous", required=True, help="θ_{t-1}: Hugging Face llava model directory")
    p.add_argument("--current", required=True,
                   help="θ̂_t: llava model directory, or a LoRA adapter directory trained on --previous "
                        "(exact low-rank SAC path)")
    p.add_argument("--ratio", type=float, default=0.2, help="SAC ratio r (default 0.2)")
    p.add_argument("--alpha", type=float, default=0.5, help="mix weight of --current (default 0.5)")
    p.add_argument("--output", required=True, help="directory for θ_t (a llava model directory)")

    p = sub.add_parser("demo", help="the embedded demo: tiny model, synthetic data, all stages, scores")
    p.add_argument("--output", default="outputs/demo")
    p.add_argument("--recipe", help="pipeline recipe to run (default: recipes/demo/pipeline.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")

    p = sub.add_parser("predict", help="batched greedy answers for a dataset, as a LLaVA answer file")
    p.add_argument("--model", required=True, help="Hugging Face llava model directory")
    _add_dataset_args(p)
    p.add_argument("--output", required=True, help="answer file (JSONL); resumes if it exists")
    p.add_argument("--template", default="vicuna_v1")
    p.add_argument("--system-prompt")
    p.add_argument("--prompt-style", choices=("plain", "short_answer", "llava_med_closed"), default="plain")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--limit", type=int)
    p.add_argument("--model-id")

    p = sub.add_parser("score", help="score an answer file against a dataset")
    _add_dataset_args(p)
    p.add_argument("--predictions", required=True)
    p.add_argument("--output", required=True)

    data = sub.add_parser("data", help="inspect, convert, preview data").add_subparsers(
        dest="data_command", required=True, metavar="DATA_COMMAND")
    p = data.add_parser("preview", help="rendered prompts and label text of a recipe's first samples")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("-n", type=int, default=3)
    p = data.add_parser("synth", help="generate the synthetic data set")
    p.add_argument("--output", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=32)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    name = args.command if args.command != "data" else f"data {args.data_command}"
    try:
        return COMMANDS[name](args)
    except MedvlmError as exc:
        print(f"medvlm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("medvlm: interrupted", file=sys.stderr)
        return 130


def resources_dir() -> Path:
    """The repository's ``recipes/`` directory (medvlm is installed from a checkout)."""
    return Path(__file__).resolve().parent.parent / "recipes"


if __name__ == "__main__":
    raise SystemExit(main())
