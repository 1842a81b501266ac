"""Evaluate any served model: answer a data set through an OpenAI-compatible chat endpoint.

``medvlm predict --endpoint URL --served-model NAME`` writes the same LLaVA answer files as local
prediction, so ``medvlm score`` and ``medvlm report`` pair and test a served model (``medvlm serve``,
vLLM, SGLang, a commercial API) against a local one like any other system.

Each question becomes one chat request built the way :mod:`medvlm.serve.protocol` reads it back: the
prompt style applied to the question, the image (raw file bytes, as a ``data:`` URL, with the data
set's DICOM settings) at the front of the first user turn, earlier turns of a multi-turn sample as
history, the system prompt only when one is given. Against ``medvlm serve`` at temperature 0 the
answers are therefore exactly the local ones.

Requests run ``concurrency`` at a time; a connection failure, timeout, 429 or 5xx is retried with
exponential backoff (honouring ``Retry-After``), any other 4xx stops the run with the server's
message. Every answer is appended and flushed as it arrives, and a rerun skips answered question ids
(with the same settings), so an interrupted run resumes. The endpoint is checked before any work: a
server that is down or does not serve the model is a one-line error (exit status 2).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import mimetypes
import os
import random
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from medvlm.data.images import is_dicom_path, resolve_image_path
from medvlm.data.reading import read_spec, source_spec
from medvlm.data.records import IMAGE_PLACEHOLDER, Sample
from medvlm.errors import DataError, MedvlmError
from medvlm.eval.answers import question_id
from medvlm.eval.predict import PredictSettings, answer_row, read_answer_ids, unanswered
from medvlm.eval.progress import progress_bar
from medvlm.io import append_jsonl, check_output_file

log = logging.getLogger("medvlm")
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EndpointError(MedvlmError):
    """The endpoint is unreachable, refuses the request, or answers something that is not a completion."""


def base_url(url: str) -> str:
    """``http://host:port`` or ``http://host:port/v1`` → the API base ending in ``/v1`` (or the given path)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EndpointError(f"endpoint '{url}' is not an http(s) URL such as http://127.0.0.1:8000/v1")
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{path or '/v1'}"


@dataclass
class EndpointClient:
    """Chat completions against one OpenAI-compatible endpoint, with retries."""

    url: str
    api_key: str | None = None
    timeout_s: float = 300.0
    retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        self.url = base_url(self.url)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, concurrency: int):
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        return httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers(), limits=limits)

    async def served_models(self, client) -> list[str]:
        """The endpoint's model ids; an :class:`EndpointError` when it cannot be reached."""
        import httpx

        try:
            response = await client.get(f"{self.url}/models")
        except httpx.HTTPError as exc:
            raise EndpointError(f"cannot reach {self.url} ({type(exc).__name__}); is the server running?") from None
        if response.status_code in (401, 403):
            raise EndpointError(f"{self.url} refused the API key (HTTP {response.status_code}); set it with "
                                "--api-key-env VAR")
        if response.status_code != 200:
            return []  # some OpenAI-compatible servers have no /models: the first request will tell
        try:
            return [str(model["id"]) for model in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            return []

    async def check(self, client, model: str) -> None:
        served = await self.served_models(client)
        if served and model not in served:
            raise EndpointError(f"{self.url} does not serve model '{model}'; it serves: {', '.join(served)}")

    async def chat(self, client, body: dict[str, Any], *, record: str | None = None) -> str:
        """The assistant text of one chat completion (non-streamed), retried on transient failures."""
        import httpx

        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = await client.post(f"{self.url}/chat/completions", json=body)
            except httpx.HTTPError as exc:
                if last:
                    raise EndpointError(f"{self.url}: {type(exc).__name__} after {attempt + 1} attempt(s); "
                                        "rerun to resume") from None
                await asyncio.sleep(self._delay(attempt, None))
                continue
            if response.status_code == 200:
                return _completion_text(response, self.url, record)
            if response.status_code in RETRY_STATUS and not last:
                await asyncio.sleep(self._delay(attempt, response.headers.get("retry-after")))
                continue
            where = f" (question {record})" if record is not None else ""
            raise EndpointError(f"{self.url} answered HTTP {response.status_code}{where}: {_error_message(response)}")
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(self.max_backoff_s, max(0.0, float(retry_after)))
            except ValueError:
                pass
        delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return delay * (0.5 + random.random() / 2)  # jitter: many clients do not retry in lockstep


def _completion_text(response, url: str, record: str | None) -> str:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise EndpointError(f"{url} answered something that is not a chat completion"
                            + (f" (question {record})" if record is not None else "")) from None
    return content if isinstance(content, str) else ""


def _error_message(response) -> str:
    try:
        error = response.json()["error"]
        return str(error["message"] if isinstance(error, dict) else error)
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


# --------------------------------------------------------------------------------------------------
# Questions to requests
# --------------------------------------------------------------------------------------------------


def image_part(path: str, sample: Sample) -> dict[str, Any]:
    """An ``image_url`` part with the file's own bytes (decoded by the server exactly as locally)."""
    resolved = resolve_image_path(path, sample.image_root, record=sample.id)
    try:
        data = resolved.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read image {resolved}: {exc.strerror}", record=sample.id, key="image") from None
    dicom = is_dicom_path(resolved)
    mime = "application/dicom" if dicom else (mimetypes.guess_type(resolved.name)[0] or "application/octet-stream")
    image: dict[str, Any] = {"url": f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"}
    if dicom and sample.meta.extra.get("dicom"):
        image["dicom"] = sample.meta.extra["dicom"]
    return {"type": "image_url", "image_url": image}


def sample_messages(sample: Sample, system_prompt: str | None = None) -> list[dict[str, Any]]:
    """OpenAI chat messages for the reply to the sample's last user turn (its prompt style already applied)."""
    turns = sample.turns[:-1] if sample.turns and sample.turns[-1].role == "assistant" else sample.turns
    images = list(sample.images)
    placed = sum(turn.text.count(IMAGE_PLACEHOLDER) for turn in turns)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    for index, turn in enumerate(turns):
        count = turn.text.count(IMAGE_PLACEHOLDER) if placed else (len(images) if index == 0 else 0)
        if turn.role == "assistant" or count == 0:
            messages.append({"role": turn.role, "content": turn.text})
            continue
        parts = [image_part(images.pop(0), sample) for _ in range(count)]
        parts.append({"type": "text", "text": turn.text.replace(IMAGE_PLACEHOLDER, "").strip()})
        messages.append({"role": "user", "content": parts})
    if images:
        raise DataError(f"{len(sample.images)} image(s) but {placed} <image> placeholder(s)", record=sample.id,
                        key="conversations")
    return messages


@dataclass
class EndpointSettings(PredictSettings):
    """Prediction settings for a served model; the template and image handling are the server's."""

    endpoint: str = ""
    served_model: str = ""
    temperature: float = 0.0
    concurrency: int = 8

    def metadata(self) -> dict[str, Any]:
        return {"prompt_style": self.prompt_style,
                "decoding": "greedy" if self.temperature == 0 else f"sampling (temperature {self.temperature})",
                "max_new_tokens": self.max_new_tokens, "endpoint": self.endpoint, "served_model": self.served_model}

    def body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {"model": self.served_model, "messages": messages, "max_tokens": self.max_new_tokens,
                "temperature": self.temperature, "stream": False}


async def run_all(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run the requests concurrently; the first failure cancels the rest (and is raised once they stop),
    so a dead endpoint ends the run instead of leaving requests to time out one by one."""
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _answer_all(client: EndpointClient, settings: EndpointSettings, pending: list[Sample],
                      out_path: Path | None, show_progress: bool) -> list[dict[str, Any]]:
    written: list[dict[str, Any]] = []
    gate = asyncio.Semaphore(settings.concurrency)
    async with client.client(settings.concurrency) as http:
        await client.check(http, settings.served_model)  # before any file is touched
        if out_path:
            out_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(out_path, "a", encoding="utf-8") if out_path else None
        progress = progress_bar(len(pending), "predict", show=show_progress)

        async def one(sample: Sample) -> None:
            async with gate:
                messages = sample_messages(sample, settings.system_prompt)
                text = await client.chat(http, settings.body(messages), record=str(question_id(sample)))
            row = answer_row(sample, text.strip(), settings)
            if handle is not None:
                append_jsonl(handle, row)
            written.append(row)
            progress.update(1)

        try:
            await run_all(one(sample) for sample in pending)
        finally:
            progress.close()
            if handle is not None:
                handle.close()
    return written


def answer_through_endpoint(samples: list[Sample], settings: EndpointSettings, output: str | os.PathLike | None,
                            *, api_key: str | None = None, retries: int = 4, timeout_s: float = 300.0,
                            show_progress: bool = True) -> list[dict[str, Any]]:
    """Answer ``samples`` through the endpoint, appending to ``output``; the new rows."""
    out_path = Path(output) if output is not None else None
    done = read_answer_ids(out_path, settings) if out_path else set()
    pending = unanswered(samples, done, settings.prompt_style)
    if done:
        log.info("resuming: %d answers already in %s, %d to go", len(done), out_path, len(pending))
    client = EndpointClient(settings.endpoint, api_key, timeout_s=timeout_s, retries=retries)
    settings.endpoint = client.url
    return asyncio.run(_answer_all(client, settings, pending, out_path, show_progress))


def predict_endpoint(endpoint: str, served_model: str, dataset: str, path: str | None, split: str,
                     output: str | Path, *, image_root: str | None = None, options: dict[str, Any] | None = None,
                     policy: str = "error", limit: int | None = None, prompt_style: str = "plain",
                     max_new_tokens: int = 32, system_prompt: str | None = None, temperature: float = 0.0,
                     concurrency: int = 8, retries: int = 4, timeout_s: float = 300.0,
                     api_key_env: str = "OPENAI_API_KEY", model_id: str | None = None) -> tuple[int, int]:
    """``medvlm predict --endpoint``: (answers written now, questions in the set)."""
    if concurrency < 1:
        raise MedvlmError("--concurrency must be at least 1")
    check_output_file(output, inputs=[path])
    # read as local prediction reads: bad images are bad records (skipped and counted under skip)
    read = read_spec(source_spec(dataset, path, split, image_root=image_root, options=options, limit=limit),
                     policy=policy)  # type: ignore[arg-type]
    samples, report = read.samples, read.report
    if report.skipped:
        log.warning("%s: skipped %d bad record(s): %s", path, report.skipped, report.summary()["skip_reasons"])
    if not samples:
        raise DataError(f"no '{split}' samples in the data set", file=path)
    settings = EndpointSettings(prompt_style=prompt_style, max_new_tokens=max_new_tokens, system_prompt=system_prompt,
                                model_id=model_id or served_model, endpoint=base_url(endpoint),
                                served_model=served_model, temperature=temperature, concurrency=concurrency)
    rows = answer_through_endpoint(samples, settings, output, api_key=os.environ.get(api_key_env) or None,
                                   retries=retries, timeout_s=timeout_s)
    return len(rows), len(samples)
