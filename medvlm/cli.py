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
from typing import Any

from medvlm import __version__
from medvlm.errors import MedvlmError
from medvlm.registry import CONSOLIDATORS, PROMPT_STYLES, SOURCES, TEMPLATES, Registry

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


def registered(registry: Registry) -> Callable[[str], str]:
    """An argparse type for a registered name: an unknown one is refused naming the nearest (exit 2)."""

    def check(value: str) -> str:
        if value not in registry:
            raise argparse.ArgumentTypeError(registry.unknown(value))
        return value

    check.__name__ = registry.kind  # argparse names the type in its messages
    return check


def _parse_options(pairs: list[str] | None) -> dict:
    """``--option key=value`` pairs, values parsed as recipe overrides are (YAML; ``1e-4`` a number)."""
    from medvlm.recipe import parse_override

    options = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise MedvlmError(f"--option '{pair}': expected KEY=VALUE")
        keys, value = parse_override(pair)
        options[".".join(keys)] = value
    return options


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


@command("train")
def _train(args: argparse.Namespace) -> int:
    from medvlm.runs import train_recipe

    result = train_recipe(args.recipe, args.overrides, resume=args.resume)
    print(f"model: {result.model_dir}")
    print(json.dumps({k: result.summary[k] for k in ("global_step", "train_loss", "wall_seconds")}))
    return 0


@command("pipeline")
def _pipeline(args: argparse.Namespace) -> int:
    from medvlm.runs import run_recipe

    outcome = run_recipe(args.recipe, args.overrides, resume=args.resume)
    print(f"output: {outcome.output_dir}")
    if outcome.metrics is not None:
        print(json.dumps(outcome.metrics))
    return 0


@command("consolidate")
def _consolidate(args: argparse.Namespace) -> int:
    from medvlm.continual import ConsolidationConfig
    from medvlm.continual.checkpoints import consolidate_checkpoints

    summary = consolidate_checkpoints(args.method, args.previous, args.current, args.output,
                                      ConsolidationConfig(ratio=args.ratio, alpha=args.alpha), overwrite=args.overwrite)
    print(json.dumps(summary))
    return 0


@command("demo")
def _demo(args: argparse.Namespace) -> int:
    from medvlm.runs.demo import run_demo

    summary = run_demo(args.output, overrides=args.overrides, recipe=args.recipe, from_scratch=args.from_scratch,
                       guarded=args.guarded)
    print(summary)
    return 0


@command("predict")
def _predict(args: argparse.Namespace) -> int:
    from medvlm.eval.run import predict_dataset

    if args.endpoint:
        return _predict_endpoint(args)
    written, total = predict_dataset(
        args.model, args.dataset, args.path, args.split, args.output, image_root=args.image_root,
        options=_parse_options(args.option), policy=args.on_bad_record, limit=args.limit,
        template=args.template, prompt_style=args.prompt_style, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, system_prompt=args.system_prompt,
        image_aspect_ratio=args.image_aspect_ratio, model_id=args.model_id, dtype=args.dtype)
    print(f"wrote {written} answer(s) to {args.output} ({total} questions; "
          f"{total - written} already answered)")
    return 0


@command("score")
def _score(args: argparse.Namespace) -> int:
    from medvlm.eval.run import score_dataset

    scores = score_dataset(args.dataset, args.path, args.split, args.predictions, args.output,
                           image_root=args.image_root, options=_parse_options(args.option),
                           policy=args.on_bad_record, baseline=args.baseline, bootstrap=args.bootstrap,
                           seed=args.seed, overwrite=args.overwrite)
    print(json.dumps(scores["metrics"], indent=2))
    missing, problems = scores["missing_predictions"]["count"], scores["input_problems"]["count"]
    if missing or problems:
        print(f"warning: {missing} question(s) without a prediction (scored wrong), {problems} answer-file "
              f"problem(s) skipped; both are listed in {args.output}", file=sys.stderr)
    for name, test in scores.get("comparison", {}).get("tests", {}).items():
        low, high, p = (test[key] for key in ("ci_low", "ci_high", "p_value"))
        interval = "n/a" if low is None else f"{low:.2f} to {high:.2f}"
        print(f"{name}: {test['difference']:+.2f} points vs baseline (95% CI {interval}; {test['test']} "
              f"p={'n/a' if p is None else f'{p:.3g}'})")
    return 0


@command("report")
def _report(args: argparse.Namespace) -> int:
    from medvlm.eval.report import build_report

    report = build_report(args.inputs, args.output, baseline=args.baseline, title=args.title,
                          overwrite=args.overwrite)
    print(f"report: {args.output} ({len(report['entries'])} evaluation(s), "
          f"{len(report['continual'])} continual run(s)); data: {report['json_file']}")
    return 0


@command("export")
def _export(args: argparse.Namespace) -> int:
    from medvlm.model.export import export_model

    exported = export_model(args.source, args.destination, merge_lora=args.merge_lora, overwrite=args.overwrite)
    print(f"exported: {exported}")
    return 0


@command("convert-llava")
def _convert_llava(args: argparse.Namespace) -> int:
    from medvlm.model.convert import convert_llava

    report = convert_llava(args.source, args.destination, vision_tower=args.vision_tower, template=args.template,
                           dtype=args.dtype)
    print(f"converted {report.model_type} ({report.projector_type} projector, vision tower from "
          f"{report.vision_tower_from}; added tokens: {', '.join(report.added_tokens) or 'none'}) → "
          f"{args.destination}")
    return 0


@command("plan")
def _plan(args: argparse.Namespace) -> int:
    from medvlm.runs.planning import plan_run

    plans = plan_run(args.recipe, args.overrides, gpus=args.gpus, gpu_memory_gb=args.gpu_memory,
                     reference=args.shapes)
    if len(plans) == 1 and plans[0][0] is None:
        print(json.dumps(plans[0][1].to_dict(), indent=2) if args.json else plans[0][1].describe())
    elif args.json:
        print(json.dumps({name: plan.to_dict() for name, plan in plans}, indent=2))
    else:
        print("\n\n".join(f"[{name}] {plan.describe()}" for name, plan in plans))
    return 0


@command("data preview")
def _data_preview(args: argparse.Namespace) -> int:
    from medvlm.runs.preview import preview

    print(preview(args.recipe, args.overrides, count=args.n))
    return 0


@command("data inspect")
def _data_inspect(args: argparse.Namespace) -> int:
    from medvlm.data.inspect import format_inspection, inspect_dataset, raise_first_problem

    result = inspect_dataset(args.dataset, args.path, args.split, image_root=args.image_root,
                             image_check=args.image_check, options=_parse_options(args.option))
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else
          format_inspection(result, max_problems=args.max_problems))
    if args.strict:
        raise_first_problem(result)
    return 0


@command("data convert")
def _data_convert(args: argparse.Namespace) -> int:
    from medvlm.data.convert import convert_dataset

    summary = convert_dataset(args.dataset, args.path, args.split, args.output, image_root=args.image_root,
                              options=_parse_options(args.option), prompt_style=args.prompt_style,
                              image_position=args.image_position, policy=args.on_bad_record, limit=args.limit,
                              image_check=args.image_check, overwrite=args.overwrite)
    print(f"wrote {summary['records']} record(s) to {summary['output']}"
          + (f"; image paths are relative to {summary['image_root']} (use it as image_root)"
             if summary["image_root"] else ""))
    if summary["skipped"]:
        print(f"skipped {summary['skipped']} bad record(s): {summary['skip_reasons']}", file=sys.stderr)
    return 0


@command("data synth")
def _data_synth(args: argparse.Namespace) -> int:
    from medvlm.data.synthetic import SyntheticSpec, materialise

    root = materialise(args.output, SyntheticSpec(seed=args.seed, image_size=args.image_size))
    print(f"synthetic data in {root}")
    return 0


# --------------------------------------------------------------------------------------------------
# Using a model: chat, serve, predict through an endpoint, judge (commands and their arguments)
# --------------------------------------------------------------------------------------------------


@command("chat")
def _chat(args: argparse.Namespace) -> int:
    from medvlm.serve.chat import run_chat

    return run_chat(args.model, image=args.image, window=args.window, template=args.template,
                    system_prompt=args.system_prompt, max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature, top_p=args.top_p, image_aspect_ratio=args.image_aspect_ratio,
                    dtype=args.dtype)


@command("serve")
def _serve(args: argparse.Namespace) -> int:
    from medvlm.serve.server import ServeSettings, serve

    return serve(ServeSettings(
        model=args.model, host=args.host, port=args.port, served_model_name=args.served_model_name,
        api_key=os.environ.get(args.api_key_env) if args.api_key_env else None, engine=args.engine,
        template=args.template, system_prompt=args.system_prompt, image_aspect_ratio=args.image_aspect_ratio,
        dtype=args.dtype, image_root=args.image_root, allow_remote_images=args.allow_remote_images,
        max_body_bytes=args.max_body_mb << 20, max_image_bytes=args.max_image_mb << 20, max_images=args.max_images,
        default_max_tokens=args.max_new_tokens, max_tokens_limit=args.max_tokens_limit,
        temperature=args.temperature, max_batch_size=args.max_batch_size, batch_window_ms=args.batch_window_ms,
        extra_engine_args=args.engine_arg or []))


def _predict_endpoint(args: argparse.Namespace) -> int:
    from medvlm.eval.endpoint import predict_endpoint

    if not args.served_model:
        raise MedvlmError("--endpoint needs --served-model NAME (the model id the server serves)")
    written, total = predict_endpoint(
        args.endpoint, args.served_model, args.dataset, args.path, args.split, args.output,
        image_root=args.image_root, options=_parse_options(args.option), policy=args.on_bad_record, limit=args.limit,
        prompt_style=args.prompt_style, max_new_tokens=args.max_new_tokens, system_prompt=args.system_prompt,
        temperature=args.temperature, concurrency=args.concurrency, retries=args.retries, timeout_s=args.timeout,
        api_key_env=args.api_key_env, model_id=args.model_id)
    print(f"wrote {written} answer(s) to {args.output} ({total} questions; "
          f"{total - written} already answered)")
    return 0


@command("judge")
def _judge(args: argparse.Namespace) -> int:
    from medvlm.eval.judge import format_judgement, judge_answers

    result = judge_answers(args.questions, args.answers, args.output, endpoint=args.endpoint,
                           judge_model=args.judge_model, api_key_env=args.api_key_env,
                           concurrency=args.concurrency, retries=args.retries, timeout_s=args.timeout,
                           temperature=args.temperature, max_tokens=args.max_tokens, limit=args.limit,
                           overwrite=args.overwrite)
    print(format_judgement(result))
    print(f"written: {args.output}")
    return 0


def _add_endpoint_predict_args(p: argparse.ArgumentParser, source: argparse._MutuallyExclusiveGroup) -> None:
    source.add_argument("--endpoint", metavar="URL", help="an OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1)"
                        " to answer through instead of a local model")
    p.add_argument("--served-model", metavar="NAME", help="with --endpoint: the model id the server serves")
    p.add_argument("--concurrency", type=POSITIVE_INT, default=8,
                   help="with --endpoint: requests in flight (default 8)")
    p.add_argument("--retries", type=COUNT, default=4, help="with --endpoint: retries per request on connection "
                   "errors, timeouts, 429 and 5xx (exponential backoff)")
    p.add_argument("--timeout", type=POSITIVE, default=300.0, help="with --endpoint: seconds per request")
    p.add_argument("--temperature", type=NON_NEGATIVE, default=0.0, help="with --endpoint: 0 (default) is greedy")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="with --endpoint: environment variable holding the API key (default OPENAI_API_KEY)")


def _add_model_use_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory, run, checkpoint or adapter (as predict takes)")
    p.add_argument("--template", type=registered(TEMPLATES),
                   help="conversation template (default: the one the model was trained with, from its prompt.json "
                   "or run recipe; else its family's)")
    p.add_argument("--system-prompt", help="system prompt (default: the trained one, else the template's)")
    p.add_argument("--image-aspect-ratio", choices=("pad", "resize", "crop"), default="pad")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--temperature", type=NON_NEGATIVE, default=0.0, help="0 (default): greedy, as predict decodes")


def _add_use_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="talk to a model in the terminal (images, DICOM; answers streamed)")
    _add_model_use_args(p)
    p.add_argument("--image", metavar="FILE", help="image or DICOM file to ask about (or /image in the chat)")
    p.add_argument("--window", help="DICOM window: auto (default), minmax or a CT preset (lung, mediastinum, "
                   "bone, brain, abdomen, liver)")
    p.add_argument("--top-p", type=FRACTION, default=1.0)
    p.add_argument("--max-new-tokens", type=POSITIVE_INT, default=512)

    p = sub.add_parser("serve", help="OpenAI-compatible server (/v1/chat/completions, streaming) + a web page")
    _add_model_use_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_bounded(int, 0, 65535), default=8000)
    p.add_argument("--served-model-name", help="model id clients ask for (default: the model directory's name)")
    p.add_argument("--api-key-env", metavar="VAR", default="MEDVLM_API_KEY",
                   help="environment variable whose value clients must send as 'Authorization: Bearer KEY' "
                        "(default MEDVLM_API_KEY; unset: no key needed)")
    p.add_argument("--engine", choices=("transformers", "vllm"), default="transformers",
                   help="transformers (default; dynamic batching, any machine) or vllm (GPU; vLLM's own server)")
    p.add_argument("--engine-arg", action="append", metavar="ARG", help="extra argument for vLLM, repeatable")
    p.add_argument("--image-root", metavar="DIR", help="allow local image paths in requests, confined to DIR")
    p.add_argument("--allow-remote-images", action="store_true",
                   help="let the server fetch http(s) image URLs (off: only data: URLs and --image-root paths)")
    p.add_argument("--max-body-mb", type=POSITIVE_INT, default=32, help="largest request body (MiB)")
    p.add_argument("--max-image-mb", type=POSITIVE_INT, default=16, help="largest image (MiB)")
    p.add_argument("--max-images", type=POSITIVE_INT, default=4, help="images per request")
    p.add_argument("--max-new-tokens", type=POSITIVE_INT, default=256, help="answer length when a request sets none")
    p.add_argument("--max-tokens-limit", type=POSITIVE_INT, default=2048, help="largest max_tokens a request may ask")
    p.add_argument("--max-batch-size", type=POSITIVE_INT, default=8, help="requests batched into one generate call")
    p.add_argument("--batch-window-ms", type=NON_NEGATIVE, default=5.0,
                   help="how long a batch waits for more requests when it is not full")

    p = sub.add_parser("judge", help="LLaVA-Med's GPT-judged conversation score (qa50), any judge endpoint")
    p.add_argument("--questions", required=True, metavar="JSONL", help="llava_med_eval_qa50_qa.jsonl")
    p.add_argument("--answers", required=True, metavar="JSONL", help="the evaluated model's answer file")
    p.add_argument("--output", required=True, metavar="JSON", help="judge.json (reviews go beside it)")
    _add_overwrite_file(p)
    p.add_argument("--endpoint", required=True, metavar="URL", help="the judge's OpenAI-compatible endpoint")
    p.add_argument("--judge-model", required=True, metavar="NAME", help="the judge model id (e.g. gpt-4-0314)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR")
    p.add_argument("--concurrency", type=POSITIVE_INT, default=4)
    p.add_argument("--retries", type=COUNT, default=6)
    p.add_argument("--timeout", type=POSITIVE, default=300.0)
    p.add_argument("--temperature", type=NON_NEGATIVE, default=0.0, help="judge temperature (LLaVA-Med: 0)")
    p.add_argument("--max-tokens", type=POSITIVE_INT, help="judge reply limit (default: the endpoint's)")
    p.add_argument("--limit", type=POSITIVE_INT, help="judge only the first N questions")


# --------------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------------


def _bounded(kind: type, low: float, high: float | None = None, *, low_open: bool = False) -> Callable[[str], Any]:
    """An argparse ``type``: a number in [low, high] ((low, high] with ``low_open``), else exit status 2."""
    shown = str if kind is int else "{:g}".format  # 4294967295, not 4.29497e+09
    interval = f"{'(' if low_open else '['}{shown(low)}, {'∞)' if high is None else f'{shown(high)}]'}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got "
                                             f"{text!r}") from None
        if value != value or abs(value) == float("inf") or (value <= low if low_open else value < low) or (
                high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is outside {interval}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE_INT, COUNT = _bounded(int, 1), _bounded(int, 0)
POSITIVE, NON_NEGATIVE = _bounded(float, 0, low_open=True), _bounded(float, 0)
FRACTION = _bounded(float, 0, 1, low_open=True)  # (0, 1]: a ratio, a probability mass
SEED = _bounded(int, 0, 2**32 - 1)  # what numpy's and torch's generators accept


def _add_overwrite_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files medvlm did not write (without it: refused; a rerun "
                             "replaces its own unchanged output)")


def _add_dataset_args(parser: argparse.ArgumentParser, *, required_split: bool = False) -> None:
    parser.add_argument("--dataset", required=True, type=registered(SOURCES), metavar="NAME",
                        help=f"source name: {', '.join(SOURCES.names())}")
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
    # the deepspeed launcher passes --local_rank=N right after the module name; LOCAL_RANK says the same
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
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
    p.add_argument("--method", type=registered(CONSOLIDATORS), required=True,
                   help="a registered consolidator (sac: Spectral-Aware Consolidation, mix: model mix, ...)")
    p.add_argument("--previous", required=True, help="θ_{t-1}: Hugging Face llava model directory")
    p.add_argument("--current", required=True,
                   help="θ̂_t: llava model directory, or a LoRA adapter directory trained on --previous "
                        "(exact low-rank SAC path)")
    p.add_argument("--ratio", type=FRACTION, default=0.2,
                   help="SAC ratio r in (0, 1] (default 0.2)")
    p.add_argument("--alpha", type=_bounded(float, 0, 1), default=0.5,
                   help="mix weight of --current in [0, 1] (default 0.5)")
    p.add_argument("--output", required=True, help="directory for θ_t (a llava model directory)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --output even if it holds files medvlm did not write")

    p = sub.add_parser("demo", help="the embedded demo: tiny model, synthetic data, all stages, scores")
    p.add_argument("--output", default="outputs/demo")
    p.add_argument("--recipe", help="pipeline recipe to run (default: recipes/demo/pipeline.yaml)")
    p.add_argument("--guarded", action="store_true", help="also run the curriculum guarded against forgetting "
                   "(recipes/demo/pipeline_guarded.yaml, in OUTPUT/guarded) and compare per stage")
    p.add_argument("--from-scratch", action="store_true", help="build the general base model first "
                   "(recipes/demo/general_base.yaml) instead of starting from the one medvlm ships")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")

    p = sub.add_parser("predict", help="batched greedy answers for a dataset, as a LLaVA answer file")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Hugging Face llava model directory, a run, a checkpoint "
                        "or an adapter directory (adapters are merged into their base)")
    _add_endpoint_predict_args(p, source)
    _add_dataset_args(p)
    p.add_argument("--output", required=True, help="answer file (JSONL); resumes if it exists")
    p.add_argument("--template", type=registered(TEMPLATES),
                   help="conversation template (default: the one the model was trained with, from its "
                   "prompt.json or run recipe; vicuna_v1 when it has neither)")
    p.add_argument("--system-prompt", help="system prompt (default: the one the model was trained with; "
                   "\"\" for none)")
    p.add_argument("--prompt-style", type=registered(PROMPT_STYLES), default="plain")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16)
    p.add_argument("--max-new-tokens", type=POSITIVE_INT, default=32)
    p.add_argument("--limit", type=POSITIVE_INT, help="answer at most this many questions")
    p.add_argument("--model-id")
    p.add_argument("--image-aspect-ratio", choices=("pad", "resize", "crop", "native"), default="pad")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="compute dtype (default: float32 for a model directory, the run's own for an adapter run)")

    p = sub.add_parser("score", help="score an answer file against a dataset (LLaVA-Med parity + strict)")
    _add_dataset_args(p)
    p.add_argument("--predictions", required=True, help="answer file (JSONL, LLaVA convention)")
    p.add_argument("--output", required=True, help="scores.json (per-item rows go to scores.items.jsonl)")
    _add_overwrite_file(p)
    p.add_argument("--baseline", help="another system's answer file: paired McNemar / bootstrap comparison")
    p.add_argument("--bootstrap", type=_bounded(int, 0, 100_000), default=1000,
                   help="bootstrap resamples for 95%% CIs (0: none)")
    p.add_argument("--seed", type=SEED, default=0)

    p = sub.add_parser("report", help="report.json + self-contained report.html from scores and run dirs")
    p.add_argument("inputs", nargs="+", metavar="RUN_DIR_OR_SCORES",
                   help="scores.json files or run directories (searched for scores.json and continual.json)")
    p.add_argument("--output", required=True, help="report.html (report.json is written beside it)")
    _add_overwrite_file(p)
    p.add_argument("--baseline", action="append", metavar="SCORES_OR_DIR",
                   help="baseline scores (file or run directory), compared item by item; repeatable")
    p.add_argument("--title")

    p = sub.add_parser("export", help="a run, checkpoint or adapter as a model plain transformers loads")
    p.add_argument("source", metavar="RUN_DIR", help="stage output directory, RUN/checkpoints/checkpoint-N, "
                   "an adapter directory or a llava model directory")
    p.add_argument("destination", metavar="DST")
    p.add_argument("--merge-lora", action="store_true", help="fold LoRA/DoRA/QLoRA adapters into the weights "
                   "(QLoRA: into the dequantised base); without it an adapter run exports its adapter")
    p.add_argument("--overwrite", action="store_true", help="replace DST even if it holds files medvlm did not "
                   "write (never the source, its run directory or their parents)")

    p = sub.add_parser("convert-llava", help="original LLaVA / LLaVA-Med / LLaVA-NeXT checkpoint → Hugging Face "
                       "llava (llava_next)")
    p.add_argument("source", metavar="SRC", help="directory with config.json (llava_llama / llava_mistral), "
                   "the weights and the tokenizer")
    p.add_argument("destination", metavar="DST")
    p.add_argument("--vision-tower", metavar="DIR", help="local CLIP/SigLIP directory (needed when the "
                   "checkpoint lacks the tower's weights or names no local tower)")
    p.add_argument("--template", type=registered(TEMPLATES), help="chat template to save (default: vicuna_v1 "
                   "for llava_llama, mistral_instruct for llava_mistral)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="weights dtype (default: the checkpoint's torch_dtype)")

    p = sub.add_parser("plan", help="per-GPU training memory of a recipe, before any weights load")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--gpu-memory", type=_bounded(float, 0, low_open=True), metavar="GB",
                   help="GPU size to check the plan against (GiB)")
    p.add_argument("--gpus", type=POSITIVE_INT, help="GPUs sharing the run (default: WORLD_SIZE or 1)")
    p.add_argument("--shapes", metavar="NAME", help="plan with a released model's shapes instead of "
                   "model.path/preset (llava-med-v1.5-7b)")
    p.add_argument("--json", action="store_true")

    _add_use_parsers(sub)

    data = sub.add_parser("data", help="inspect, convert, preview data").add_subparsers(
        dest="data_command", required=True, metavar="DATA_COMMAND")
    p = data.add_parser("preview", help="rendered prompts and label text of a recipe's first samples")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("-n", type=POSITIVE_INT, default=3)
    p = data.add_parser("inspect", help="counts, image checks and every validation problem of a data set")
    p.add_argument("--dataset", required=True, type=registered(SOURCES), metavar="NAME",
                   help=f"source name: {', '.join(SOURCES.names())}")
    p.add_argument("--path", help="data file or directory, as the source expects")
    p.add_argument("--split", default="test")
    p.add_argument("--image-root", help="directory image paths are relative to (and confined to)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="source option, repeatable")
    p.add_argument("--image-check", choices=("none", "exists", "header", "decode"), default="header",
                   help="how hard to check referenced images (default: parse each header)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--max-problems", type=COUNT, default=20,
                   help="list at most this many problems (default 20; all are counted, --json lists every one)")
    p.add_argument("--strict", action="store_true", help="exit with status 2 when any problem is found")
    p = data.add_parser("convert", help="write a data set as LLaVA conversation JSON (downstream format)")
    _add_dataset_args(p)
    p.add_argument("--output", required=True, help="output .json (or .jsonl)")
    _add_overwrite_file(p)
    p.add_argument("--prompt-style", type=registered(PROMPT_STYLES), default="plain",
                   help="bake LLaVA-1.5's short-answer instruction or LLaVA-Med's closed suffix into questions")
    p.add_argument("--image-position", choices=("end", "front"), default="end",
                   help="<image> after the question (LLaVA-Med's files) or before it")
    p.add_argument("--image-check", choices=("none", "exists", "header", "decode"), default="header",
                   help="how hard to check referenced images (default: parse each header)")
    p.add_argument("--limit", type=POSITIVE_INT, help="convert at most this many records")
    p = data.add_parser("synth", help="generate the synthetic data set")
    p.add_argument("--output", required=True)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--image-size", type=_bounded(int, 8, 1024), default=32)
    return parser


def main(argv: list[str] | None = None) -> int:
    # bitsandbytes warns at import that an optional CPU kernel cannot be fetched from the Hub (it never
    # can offline); the built-in fallback is used and nothing is wrong. Parsing may import it already.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error (status 2) or the help (status 0)
        return int(exc.code or 0)
    _setup_logging(args.verbose)
    name = args.command if args.command != "data" else f"data {args.data_command}"
    try:
        status = COMMANDS[name](args)
        from medvlm.distributed import shutdown

        shutdown()  # under torchrun / deepspeed: tear the process group down cleanly (no SIGABRT at exit)
        return status
    except MedvlmError as exc:
        print(f"medvlm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader of stdout went away (``| head``): stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141
    except OSError as exc:  # the file system refused (permissions, read-only, no space, not a directory)
        if exc.filename is None:
            raise
        print(f"medvlm: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medvlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
