"""LLaVA-Med's GPT-judged conversation score on ``llava_med_eval_qa50_qa.jsonl``, with any judge endpoint.

What LLaVA-Med does (``llava/eval/eval_multimodal_chat_gpt_score.py`` and
``summarize_gpt_review.py`` in microsoft/LLaVA-Med), and what this module reproduces:

* The judge gets a system message and one user message holding the figure's label and caption, its
  in-text mentions as context, the question, **Assistant 1 = the reference** (``gpt4_answer``) and
  **Assistant 2 = the evaluated model's answer**, then the instruction to rate both from 1 to 10 and
  put "a single line containing only two values" first. The texts are LLaVA-Med's, verbatim — the
  stray quote opening its system message included, and the context rendered as the Python form of
  the ``in_text_mention`` list, as its f-string did. Judge temperature 0 (LLaVA-Med's GPT class).
* A reply's first line holds the two scores (reference, answer). LLaVA-Med splits it on one space
  and crashes on anything else; here commas count as separators (as LLaVA's own review parser
  allows), and any reply without exactly two numbers there is *counted as unparsable* and listed,
  never silently dropped or scored.
* Relative score = mean over questions of answer score / reference score, × 100, per question type
  (``conversation``, ``detailed_description``), per domain and overall. A question's domain is its
  first flag set in LLaVA-Med's order ``chest_xray, mri, histology, gross, ct_scan`` (reported as
  CXR, MRI, Histology, Gross, CT); a question flagged both histology and gross counts as histology,
  as there. The ratio of mean scores (LLaVA's own convention) is reported beside it.

Reviews are appended to ``<output stem>.reviews.jsonl`` as they arrive; a rerun reuses a review only
when the judge model and the exact prompt match, so changing answers, judge or prompt re-judges.
The judge's endpoint, model, temperature and prompts are recorded in the result's provenance.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlm.data.reading import read_spec, source_spec
from medvlm.data.records import IMAGE_PLACEHOLDER, Sample
from medvlm.errors import DataError, MedvlmError
from medvlm.eval.answers import question_id, read_answers
from medvlm.eval.endpoint import EndpointClient, base_url, run_all
from medvlm.eval.progress import progress_bar
from medvlm.io import append_jsonl, check_new_output, check_output_file, read_appended_rows, record_written, write_json
from medvlm.provenance import provenance

# sic: LLaVA-Med's system message opens with a stray single quote (a triple-quoted string around '...')
JUDGE_SYSTEM = "'You are a helpful and precise assistant for checking the quality of the answer."
JUDGE_INSTRUCTION = (
    "We would like to request your feedback on the performance of two AI assistants in response to the user "
    "question displayed above. The user asks the question on observing an image. For your reference, the visual "
    "content in the image is represented with caption describing the same image.\n"
    "  Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each assistant "
    "receives an overall score on a scale of 1 to 10, where a higher score indicates better overall performance.\n"
    "  Please first output a single line containing only two values indicating the scores for Assistant 1 and 2, "
    "respectively. The two scores are separated by a space. In the subsequent line, please provide a comprehensive "
    "explanation of your evaluation, avoiding any potential bias and ensuring that the order in which the responses "
    "were presented does not affect your judgment."
)
ROLE = "Assistant"
PROMPT_VERSION = "llava-med-qa50-judge-1"
#: LLaVA-Med's domain order (the first flag set wins) and the names its paper uses.
DOMAINS = {"chest_xray": "CXR", "mri": "MRI", "histology": "Histology", "gross": "Gross", "ct_scan": "CT"}
TYPES = ("conversation", "detailed_description")


def judge_user_message(fig_label: Any, fig_caption: Any, fig_context: Any, question: str, reference: str,
                       answer: str) -> str:
    """LLaVA-Med's ``conv_to_str``: context, question, the two answers, then the instruction."""
    return (f"[Context]\nFigure Caption:\n{fig_label}: {fig_caption}\n\n"
            f"Figure Context:\n\t- {fig_context}\n\n"
            f"[Question]\n{question}\n\n"
            f"[{ROLE} 1]\n{reference}\n\n[End of {ROLE} 1]\n\n"
            f"[{ROLE} 2]\n{answer}\n\n[End of {ROLE} 2]\n\n"
            f"[System]\n{JUDGE_INSTRUCTION}\n\n")


def judge_messages(sample: Sample, answer: str) -> list[dict[str, str]]:
    extra = sample.meta.extra
    question = f"{sample.question}\n{IMAGE_PLACEHOLDER}"  # the file's ``text``: the question, then "\n<image>"
    content = judge_user_message(extra.get("fig_label"), extra.get("fig_caption"), extra.get("in_text_mention"),
                                 question, sample.answer or "", answer)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]


def parse_scores(reply: str) -> tuple[float, float] | None:
    """(reference score, answer score) from the reply's first line, or None when it has not exactly two numbers."""
    first = reply.strip().split("\n", 1)[0].replace(",", " ").split()
    if len(first) != 2:
        return None
    try:
        scores = float(first[0]), float(first[1])
    except ValueError:
        return None
    return scores if all(math.isfinite(score) for score in scores) else None


def domain_of(flags: dict[str, bool] | None) -> str | None:
    return next((DOMAINS[name] for name in DOMAINS if (flags or {}).get(name)), None)


@dataclass
class Review:
    question_id: str
    type: str | None
    domain: str | None
    scores: tuple[float, float] | None  # (reference, answer); None: unparsable reply


def _summary(reviews: list[Review]) -> dict[str, Any]:
    scored = [r.scores for r in reviews if r.scores is not None]
    usable = [(ref, ans) for ref, ans in scored if ref != 0]
    reference = sum(ref for ref, _ in scored) / len(scored) if scored else None
    answer = sum(ans for _, ans in scored) / len(scored) if scored else None
    return {
        "n": len(reviews),
        "scored": len(scored),
        "unparsable": len(reviews) - len(scored),
        "zero_reference": len(scored) - len(usable),  # a ratio with a 0 reference score is undefined: not averaged
        "reference_score": reference,
        "answer_score": answer,
        "relative_score": 100 * sum(ans / ref for ref, ans in usable) / len(usable) if usable else None,
        "relative_of_means": 100 * answer / reference if reference else None,
    }


def aggregate(reviews: list[Review]) -> dict[str, Any]:
    """Scores per question type, per domain and overall (see the module docstring for the definitions)."""
    types = {name: _summary([r for r in reviews if r.type == name]) for name in TYPES}
    types.update({name: _summary([r for r in reviews if r.type == name])
                  for name in sorted({r.type for r in reviews if r.type not in TYPES and r.type is not None})})
    domains = {label: _summary([r for r in reviews if r.domain == label]) for label in DOMAINS.values()}
    unparsable = [r.question_id for r in reviews if r.scores is None]
    return {"overall": _summary(reviews), "types": types, "domains": domains,
            "unparsable": {"count": len(unparsable), "question_ids": unparsable}}


def _review_key(judge_model: str, temperature: float, messages: list[dict[str, str]]) -> str:
    text = json.dumps([PROMPT_VERSION, judge_model, temperature, messages], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_reviews(path: Path) -> dict[str, dict[str, Any]]:
    """Reviews of earlier runs by key (a torn last line is cut off; any other bad line is an error)."""
    rows = read_appended_rows(path, lambda row: isinstance(row, dict) and isinstance(row.get("key"), str),
                              "a judge review row")
    return {row["key"]: row for row in rows}


async def _judge_all(client: EndpointClient, jobs: list[tuple[Sample, list[dict[str, str]], str]], judge_model: str,
                     temperature: float, max_tokens: int | None, concurrency: int, handle,
                     ) -> dict[str, dict[str, Any]]:
    gate = asyncio.Semaphore(concurrency)
    done: dict[str, dict[str, Any]] = {}
    async with client.client(concurrency) as http:
        await client.check(http, judge_model)
        progress = progress_bar(len(jobs), "judge")

        async def one(sample: Sample, messages: list[dict[str, str]], key: str) -> None:
            body: dict[str, Any] = {"model": judge_model, "messages": messages, "temperature": temperature}
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            async with gate:
                reply = await client.chat(http, body, record=str(question_id(sample)))
            row = {"key": key, "question_id": question_id(sample), "judge_model": judge_model, "reply": reply,
                   "scores": parse_scores(reply)}
            append_jsonl(handle, row)
            done[key] = row
            progress.update(1)

        try:
            await run_all(one(*job) for job in jobs)
        finally:
            progress.close()
    return done


def judge_answers(questions: str | Path, answers: str | Path, output: str | Path, *, endpoint: str,
                  judge_model: str, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 4, retries: int = 6,
                  timeout_s: float = 300.0, temperature: float = 0.0, max_tokens: int | None = None,
                  limit: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """``medvlm judge``: judge an answer file on the qa50 questions; writes ``output`` (JSON) and its reviews.

    Neither may be an input; an existing ``output`` is replaced only when medvlm wrote it (a rerun) or
    with ``overwrite``, and an existing reviews file must be one (it is resumed, not replaced).
    """
    if concurrency < 1:
        raise MedvlmError("--concurrency must be at least 1")
    output = Path(output)
    reviews_path = output.with_name(f"{output.stem}.reviews.jsonl")
    check_new_output(output, inputs=[questions, answers], overwrite=overwrite)
    check_output_file(reviews_path, inputs=[questions, answers])
    # the judge reads captions and answers, not pixels: no image check
    samples = read_spec(source_spec("llava_med", str(questions), "test", options={"format": "qa50"}, limit=limit),
                        image_check="none").samples
    if not samples:
        raise DataError("no questions", file=str(questions))
    answer_file = read_answers(answers)
    missing = [str(question_id(s)) for s in samples if str(question_id(s)) not in answer_file.rows]
    if missing:
        raise DataError(f"{len(missing)} of {len(samples)} questions have no answer (first: question_id "
                        f"{', '.join(missing[:5])}); answer all of them first (medvlm predict resumes)",
                        file=str(answers))
    previous = _read_reviews(reviews_path)
    jobs, keys = [], {}
    for sample in samples:
        messages = judge_messages(sample, answer_file.rows[str(question_id(sample))]["text"])
        key = _review_key(judge_model, temperature, messages)
        keys[str(question_id(sample))] = key
        if key not in previous:
            jobs.append((sample, messages, key))
    client = EndpointClient(endpoint, os.environ.get(api_key_env) or None, timeout_s=timeout_s, retries=retries)
    reviews_path.parent.mkdir(parents=True, exist_ok=True)
    with open(reviews_path, "a", encoding="utf-8") as handle:
        fresh = asyncio.run(_judge_all(client, jobs, judge_model, temperature, max_tokens, concurrency, handle))
    rows = {**previous, **fresh}
    reviews = []
    for sample in samples:
        row = rows[keys[str(question_id(sample))]]
        scores = row.get("scores")
        reviews.append(Review(str(question_id(sample)), sample.meta.question_type,
                              domain_of(sample.meta.extra.get("domain")), tuple(scores) if scores else None))
    result = {
        "n": len(samples),
        **aggregate(reviews),
        "reviews_file": str(reviews_path),
        "provenance": provenance(
            data_files=[questions, answers], answers_model=answer_file.describe().get("model_id"),
            judge={"endpoint": base_url(endpoint), "model": judge_model, "temperature": temperature,
                   "max_tokens": max_tokens, "prompt_version": PROMPT_VERSION, "system": JUDGE_SYSTEM,
                   "instruction": JUDGE_INSTRUCTION, "role": ROLE, "assistant_1": "reference (gpt4_answer)",
                   "assistant_2": "evaluated answer", "reused_reviews": len(samples) - len(jobs)}),
    }
    write_json(output, result)
    record_written(output)
    return result


def format_judgement(result: dict[str, Any]) -> str:
    """The table LLaVA-Med prints: relative score (answer and reference scores) per type, domain, overall."""
    lines = [f"{'':22} {'relative':>9} {'answer':>7} {'reference':>9} {'n':>4}"]
    groups = [*result["types"].items(), *result["domains"].items(), ("overall", result["overall"])]
    for name, row in groups:
        if not row["n"]:
            continue

        def number(value: float | None, width: int) -> str:
            return f"{value:{width}.2f}" if value is not None else f"{'n/a':>{width}}"

        lines.append(f"{name:22} {number(row['relative_score'], 9)} {number(row['answer_score'], 7)} "
                     f"{number(row['reference_score'], 9)} {row['scored']:4d}")
    if result["unparsable"]["count"]:
        lines.append(f"unparsable judge replies: {result['unparsable']['count']} (question ids "
                     f"{', '.join(map(str, result['unparsable']['question_ids'][:10]))}); see {result['reviews_file']}")
    return "\n".join(lines)
