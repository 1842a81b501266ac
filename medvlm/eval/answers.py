"""Reading LLaVA answer files (``question_id, prompt, text, answer_id, model_id, metadata``).

Any model's answer file can be scored, LLaVA-Med's own included, so the reader assumes nothing
beyond ``question_id`` and ``text``. Bad lines follow the same policy as data records: under
``error`` the first one raises a :class:`~medvlm.errors.DataError` naming the file, line and key;
under ``skip`` each is counted, listed in ``scores.json`` (``input_problems``) and shown in the
report — never dropped silently. A duplicate question id keeps its first answer under ``skip``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medvlm.data.records import Sample
from medvlm.data.sources import Problem
from medvlm.errors import DataError
from medvlm.io import parse_json

Policy = Literal["error", "skip"]


def question_id(sample: Sample) -> int | str:
    """The dataset's own id (VQA-RAD qid, SLAKE qid ...), as an int when it is one."""
    raw = sample.meta.source_id if sample.meta.source_id is not None else sample.id
    return int(raw) if str(raw).lstrip("-").isdigit() else str(raw)


@dataclass
class AnswerFile:
    """Answers by question id (as text), with the problems met while reading them."""

    path: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    lines: int = 0

    def problem(
        self, policy: Policy, message: str, *, record: str | None = None, key: str | None = None
    ) -> None:
        if policy == "error":
            raise DataError(message, file=self.path, record=record, key=key)
        self.problems.append(Problem(self.path, record, key, message))

    def describe(self) -> dict[str, Any]:
        """Who answered and how, as recorded in the rows (LLaVA-Med's files record almost nothing)."""
        models = Counter(
            str(row.get("model_id")) for row in self.rows.values() if row.get("model_id") is not None
        )
        metadata: dict[str, Counter] = {}
        for row in self.rows.values():
            meta = row.get("metadata")
            if isinstance(meta, dict):
                for key in ("template", "prompt_style", "decoding", "max_new_tokens", "image_aspect_ratio"):
                    if key in meta:
                        value = meta[key]
                        scalar = value is None or isinstance(value, (str, int, float, bool))
                        metadata.setdefault(key, Counter())[value if scalar else json.dumps(value)] += 1
        return {"model_id": _single_or_counts(models),
                **{key: _single_or_counts(counts) for key, counts in metadata.items()}}


def _single_or_counts(counts: Counter) -> Any:
    if not counts:
        return None
    return next(iter(counts)) if len(counts) == 1 else dict(counts.most_common())


def read_answers(path: str | Path, policy: Policy = "error") -> AnswerFile:
    """Parse an answer file; see the module docstring for how bad lines are handled."""
    path = Path(path)
    if not path.is_file():
        raise DataError("answer file not found", file=str(path))
    answers = AnswerFile(str(path))
    with open(path, "rb") as handle:  # bytes: a line that is not UTF-8 is a problem, never silently replaced
        for number, line in enumerate(handle, start=1):
            answers.lines = number
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                row = parse_json(line, file=str(path), line=number)
            except DataError as exc:
                answers.problem(policy, exc.detail, record=where)
                continue
            if not isinstance(row, dict) or "question_id" not in row:
                answers.problem(policy, "no question_id", record=where, key="question_id")
                continue
            if not isinstance(row.get("text"), str):
                answers.problem(
                    policy,
                    f"text is {type(row.get('text')).__name__}, not a string",
                    record=where,
                    key="text",
                )
                continue
            qid = str(row["question_id"])
            if qid in answers.rows:
                same = answers.rows[qid]["text"] == row["text"]
                answers.problem(
                    policy,
                    f"duplicate prediction for question {qid} ({'same' if same else 'different'}"
                    " text; the first is kept)",
                    record=where,
                    key="question_id",
                )
                continue
            answers.rows[qid] = row
    return answers


def answers_from_rows(rows: list[dict[str, Any]], path: str = "<memory>") -> AnswerFile:
    """An :class:`AnswerFile` for rows already in memory (e.g. returned by ``generate_answers``)."""
    answers = AnswerFile(path, lines=len(rows))
    for row in rows:
        qid = str(row["question_id"])
        if qid in answers.rows:
            raise DataError("duplicate prediction", file=path, record=qid, key="question_id")
        answers.rows[qid] = row
    return answers
