"""``medvlm serve``: an OpenAI-compatible server for an adapted model, with a web page for a study.

Endpoints (Starlette on uvicorn):

* ``POST /v1/chat/completions`` — OpenAI's chat completions, plain or streamed as server-sent events
  (``data: {chunk}`` lines, ``data: [DONE]`` last, ``stream_options.include_usage`` honoured); images
  as ``image_url`` parts (see :mod:`medvlm.serve.media` for what is accepted);
* ``GET /v1/models`` — the one served model;
* ``GET /health`` — liveness and batching counters (no authentication, nothing about requests);
* ``POST /v1/medvlm/preview`` — an uploaded image or DICOM file rendered as the model sees it (the
  web page shows DICOM this way, with the chosen window);
* ``GET /`` — the web page (``medvlm/serve/static``).

Safety defaults: binds 127.0.0.1; ``--api-key`` (or ``MEDVLM_API_KEY``) makes every ``/v1`` call
need ``Authorization: Bearer KEY``; request bodies, images (bytes and pixels), images per request
and token budgets are limited; every bad request gets a 4xx JSON error in OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``) and the server keeps serving. The log holds
one line per request — endpoint, status, time, token counts — never text, images, file names or
client addresses (uvicorn's access log is off).

``--engine vllm`` (GPU machines) runs vLLM's own OpenAI server on the exported model directory with
the same template and the same safety switches instead; see :func:`vllm_command`.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.resources
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from medvlm.data.templates import get_template
from medvlm.errors import DataError, ModelError
from medvlm.eval.generation import Generated, GenerationItem, Generator, Sampling
from medvlm.io import parse_json
from medvlm.serve.engine import BatchEngine, Job
from medvlm.serve.media import MediaPolicy, RequestError, decode_image, png_data_url, read_image
from medvlm.serve.protocol import ChatRequest, conversation_of, parse_request

log = logging.getLogger("medvlm.serve")
STATIC = "static"
ENGINES = ("transformers", "vllm")
#: vLLM fetches any http(s) image URL unless told which domains it may use; this one cannot resolve.
VLLM_NO_REMOTE_DOMAIN = "remote-images-disabled.invalid"


@dataclass
class ServeSettings:
    """Everything ``medvlm serve`` takes; defaults are the safe ones."""

    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None
    api_key: str | None = None
    engine: str = "transformers"
    template: str | None = None  # None: the one the model was trained with (see prompt_settings)
    system_prompt: str | None = None
    image_aspect_ratio: str = "pad"
    dtype: str | None = None
    image_root: str | None = None
    allow_remote_images: bool = False
    max_body_bytes: int = 32 << 20
    max_image_bytes: int = 16 << 20
    max_image_pixels: int = 40_000_000
    max_images: int = 4
    default_max_tokens: int = 256
    max_tokens_limit: int = 2048
    temperature: float = 0.0
    max_batch_size: int = 8
    batch_window_ms: float = 5.0
    extra_engine_args: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        path = Path(self.model)
        return path.parent.name if path.name == "model" else path.name

    def media_policy(self) -> MediaPolicy:
        return MediaPolicy(image_root=Path(self.image_root) if self.image_root else None,
                           allow_remote=self.allow_remote_images, max_image_bytes=self.max_image_bytes,
                           max_image_pixels=self.max_image_pixels)


def error_response(status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


class App:
    """The request handlers around one engine; :meth:`starlette` builds the ASGI application."""

    def __init__(self, engine: BatchEngine, settings: ServeSettings) -> None:
        self.engine = engine
        self.generator: Generator = engine.generator
        self.settings = settings
        self.policy = settings.media_policy()
        self.created = int(time.time())
        config = self.generator.model.config
        self.context_length = getattr(getattr(config, "text_config", config), "max_position_embeddings", None)

    # -- plumbing ----------------------------------------------------------------------------------
    def starlette(self) -> Starlette:
        routes = [
            Route("/", self.page, methods=["GET"]),
            Route("/static/{name}", self.static, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/medvlm/preview", self.preview, methods=["POST"]),
        ]
        handlers = {HTTPException: self._http_error, Exception: self._crash}
        return Starlette(routes=routes, exception_handlers=handlers)  # type: ignore[arg-type]

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), kind=kind)

    async def _crash(self, request: Request, exc: Exception) -> Response:
        log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return error_response(500, "internal server error", kind="server_error")

    def _authorised(self, request: Request) -> bool:
        key = self.settings.api_key
        if not key:
            return True
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        return hmac.compare_digest(token.encode(), key.encode())

    async def _json_body(self, request: Request) -> Any:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(f"request body is larger than the limit of {limit:,} bytes", status=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise RequestError(f"request body is larger than the limit of {limit:,} bytes", status=413)
        try:  # io's parser: UTF-8 only, and a body nested thousands deep is a bad request, not a RecursionError
            return parse_json(bytes(body), file="request body")
        except DataError as exc:
            raise RequestError(f"the request body: {exc.detail}") from None

    # -- pages and listings ------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        return self._asset("index.html")

    async def static(self, request: Request) -> Response:
        return self._asset(request.path_params["name"])

    def _asset(self, name: str) -> Response:
        folder = importlib.resources.files("medvlm.serve") / STATIC
        types = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
        suffix = Path(name).suffix
        if "/" in name or suffix not in types or not (folder / name).is_file():
            return error_response(404, "not found", kind="not_found_error")
        headers = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                   "style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
                   "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                   "Cache-Control": "no-store"}
        return Response((folder / name).read_bytes(), media_type=types[suffix], headers=headers)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.settings.name, "engine": self.engine.stats.to_dict()})

    async def models(self, request: Request) -> Response:
        if not self._authorised(request):
            return _unauthorised()
        return JSONResponse({"object": "list", "data": [
            {"id": self.settings.name, "object": "model", "created": self.created, "owned_by": "medvlm"}]})

    # -- chat completions --------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        started = time.perf_counter()
        if not self._authorised(request):
            return _unauthorised()
        try:
            chat = parse_request(await self._json_body(request))
            if chat.model != self.settings.name:
                raise RequestError(f"model '{chat.model}' is not served here; this server serves "
                                   f"'{self.settings.name}'", status=404, param="model", kind="not_found_error")
            item, sampling, prompt_tokens = await run_in_threadpool(self._prepare, chat)
        except RequestError as exc:
            log.info("chat %d (%s)", exc.status, exc.kind)
            return error_response(exc.status, str(exc), kind=exc.kind, param=exc.param)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if chat.stream:
            return StreamingResponse(self._stream(request, chat, item, sampling, prompt_tokens, completion_id, started),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        queue: asyncio.Queue = asyncio.Queue()
        self._submit(item, sampling, queue)
        while True:
            kind, value = await queue.get()
            if kind == "result":
                break
        if isinstance(value, BaseException):
            return error_response(500, "generation failed", kind="server_error")
        answer: Generated = value
        self._log_done(started, prompt_tokens, answer, stream=False)
        return JSONResponse({
            "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": self.settings.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": answer.finish_reason, "logprobs": None}],
            "usage": _usage(prompt_tokens, answer.completion_tokens),
        })

    def _prepare(self, chat: ChatRequest) -> tuple[GenerationItem, Sampling, int]:
        """Images decoded and prompt tokenised (in a worker thread: both take CPU time)."""
        conversation = conversation_of(chat)
        if len(conversation.images) > self.settings.max_images:
            raise RequestError(f"{len(conversation.images)} images; this server takes at most "
                               f"{self.settings.max_images} per request", param="messages")
        images = [decode_image(read_image(ref.url, self.policy, ref.param), self.policy, ref.dicom, ref.param)
                  for ref in conversation.images]
        try:
            ids = self.generator.prompt_ids(conversation.sample(), conversation.system, images=images)
        except DataError as exc:
            raise RequestError(str(exc), param="messages") from None
        budget = chat.token_budget if chat.token_budget is not None else self.settings.default_max_tokens
        if budget > self.settings.max_tokens_limit:
            raise RequestError(f"max_tokens {budget} is more than this server's limit of "
                               f"{self.settings.max_tokens_limit}", param="max_tokens")
        if self.context_length is not None and len(ids) + budget > self.context_length:
            raise RequestError(f"the prompt ({len(ids)} tokens) plus max_tokens ({budget}) exceeds the model's "
                               f"context of {self.context_length} tokens", param="messages")
        temperature = chat.temperature if chat.temperature is not None else self.settings.temperature
        sampling = Sampling(temperature, chat.top_p if chat.top_p is not None and temperature > 0 else 1.0)
        pixels = self.generator.image_pixels(images)
        item = GenerationItem(ids, pixels, budget, self.generator.stops + chat.stops)
        return item, sampling, len(ids)

    def _submit(self, item: GenerationItem, sampling: Sampling, queue: asyncio.Queue) -> Job:
        loop = asyncio.get_running_loop()

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        job = Job(item, sampling, on_delta=lambda delta: put("delta", delta),
                  on_result=lambda result: put("result", result))
        self.engine.submit(job)
        return job

    async def _stream(self, request: Request, chat: ChatRequest, item: GenerationItem, sampling: Sampling,
                      prompt_tokens: int, completion_id: str, started: float) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict | None = None,
                  choices: bool = True) -> str:
            body: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                    "model": self.settings.name,
                                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                 "logprobs": None}] if choices else []}
            if usage is not None:
                body["usage"] = usage
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        queue: asyncio.Queue = asyncio.Queue()
        job = self._submit(item, sampling, queue)
        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                kind, value = await queue.get()
                if kind == "delta":
                    yield chunk({"content": value})
                    continue
                break
            if isinstance(value, BaseException):
                error = {"message": "generation failed", "type": "server_error", "param": None, "code": None}
                yield f"data: {json.dumps({'error': error})}\n\n"
            else:
                yield chunk({}, finish=value.finish_reason)
                if chat.stream_options is not None and chat.stream_options.include_usage:
                    yield chunk({}, usage=_usage(prompt_tokens, value.completion_tokens), choices=False)
                self._log_done(started, prompt_tokens, value, stream=True)
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()  # a client that went away stops its row at the next token

    def _log_done(self, started: float, prompt_tokens: int, answer: Generated, *, stream: bool) -> None:
        log.info("chat 200 %.2fs prompt=%d completion=%d finish=%s stream=%s", time.perf_counter() - started,
                 prompt_tokens, answer.completion_tokens, answer.finish_reason, stream)

    # -- preview -----------------------------------------------------------------------------------
    async def preview(self, request: Request) -> Response:
        if not self._authorised(request):
            return _unauthorised()
        try:
            body = await self._json_body(request)
            if not isinstance(body, dict) or not isinstance(body.get("image"), str):
                raise RequestError("expected {\"image\": \"data:...\", \"dicom\": {...}}", param="image")
            dicom = body.get("dicom")
            if dicom is not None and not isinstance(dicom, (dict, str)):
                raise RequestError("dicom must be a window name or a mapping of DICOM settings", param="dicom")
            result = await run_in_threadpool(self._render, body["image"], dicom)
        except RequestError as exc:
            return error_response(exc.status, str(exc), kind=exc.kind, param=exc.param)
        return JSONResponse(result)

    def _render(self, url: str, dicom: Any) -> dict[str, Any]:
        data = read_image(url, self.policy, "image")
        image = decode_image(data, self.policy, dicom, "image")
        return {"png": png_data_url(image), "width": image.width, "height": image.height, "dicom": data.dicom}


def _unauthorised() -> Response:
    return error_response(401, "missing or wrong API key (Authorization: Bearer KEY)", kind="authentication_error",
                          code="invalid_api_key")


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def build_app(generator: Generator, settings: ServeSettings) -> tuple[Starlette, BatchEngine]:
    """The ASGI application and its batching engine (close the engine when done)."""
    engine = BatchEngine(generator, settings.max_batch_size, settings.batch_window_ms / 1000)
    return App(engine, settings).starlette(), engine


def check_settings(settings: ServeSettings) -> None:
    if settings.engine not in ENGINES:
        raise ModelError(f"unknown engine '{settings.engine}'; known: {', '.join(ENGINES)}")
    if settings.template is not None:
        get_template(settings.template)
    if settings.image_root is not None and not Path(settings.image_root).is_dir():
        raise ModelError(f"--image-root {settings.image_root}: not a directory")
    try:  # before the model loads; uvicorn would log "Name or service not known" and exit 3
        socket.getaddrinfo(settings.host, settings.port)
    except (socket.gaierror, UnicodeError) as exc:
        raise ModelError(f"--host {settings.host}: not an address or host name this machine can resolve "
                         f"({exc})") from None
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        log.warning("serving on %s without an API key: anyone who can reach this address can use the model",
                    settings.host)


def serve(settings: ServeSettings) -> int:
    """Load the model and serve until interrupted (``--engine vllm``: run vLLM's server instead)."""
    from medvlm.model.export import prompt_settings

    settings.api_key = settings.api_key or os.environ.get("MEDVLM_API_KEY") or None
    check_settings(settings)
    # prompted as it was trained, as medvlm predict prompts it: answers match the answer files
    settings.template, settings.system_prompt = prompt_settings(settings.model, settings.template,
                                                                settings.system_prompt)
    log.info("template %s, system prompt %r", settings.template, settings.system_prompt)
    if settings.engine == "vllm":
        return serve_vllm(settings)
    import uvicorn

    from medvlm.model.export import load_for_inference

    model, processor = load_for_inference(settings.model, dtype=settings.dtype)
    generator = Generator(model, processor, settings.template, settings.system_prompt,
                          settings.image_aspect_ratio)  # type: ignore[arg-type]
    app, engine = build_app(generator, settings)
    log.info("serving %s on http://%s:%d (web page at /, API at /v1)", settings.name, settings.host, settings.port)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, access_log=False, log_level="warning")
    finally:
        engine.close()
    return 0


class ServerThread:
    """Serve an ASGI app from a background thread on the loopback interface (notebooks, tests, benches).

    ``port=0`` picks a free port; ``url`` is the API base (``http://127.0.0.1:PORT/v1``).
    """

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0) -> None:
        import threading

        import uvicorn

        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port = self._socket.getsockname()[1]
        self.root = f"http://{host}:{self.port}"
        self.url = f"{self.root}/v1"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="medvlm-server", daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the server thread did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._socket.close()


# --------------------------------------------------------------------------------------------------
# vLLM on GPUs
# --------------------------------------------------------------------------------------------------


def vllm_command(settings: ServeSettings, chat_template_file: str) -> list[str]:
    """vLLM's OpenAI server on the model directory, with medvlm's template and safety switches.

    The chat template is medvlm's own (``--template``), so prompts match ``medvlm predict``; local
    images only under ``--image-root``; remote image fetching only with ``--allow-remote-images``
    (vLLM fetches any URL unless its allowed media domains are restricted). The API key travels in
    ``VLLM_API_KEY`` (environment), never on the command line where ``ps`` shows it.
    """
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(settings.model),
               "--served-model-name", settings.name, "--host", settings.host, "--port", str(settings.port),
               "--chat-template", chat_template_file, "--disable-uvicorn-access-log",
               "--limit-mm-per-prompt", json.dumps({"image": settings.max_images})]
    if settings.dtype:
        command += ["--dtype", settings.dtype]
    if settings.image_root:
        command += ["--allowed-local-media-path", str(Path(settings.image_root).resolve())]
    if not settings.allow_remote_images:
        command += ["--allowed-media-domains", VLLM_NO_REMOTE_DOMAIN]
    return command + list(settings.extra_engine_args)


def serve_vllm(settings: ServeSettings) -> int:
    if importlib.util.find_spec("vllm") is None:
        raise ModelError("--engine vllm needs vLLM, which is not importable here; install it on a GPU machine "
                         "(pip install vllm) or use the default engine (--engine transformers)")
    from medvlm.model.export import resolve_source

    source = resolve_source(settings.model)
    if source.is_adapter:
        raise ModelError(f"{settings.model}: vLLM serves full model directories; merge the adapter first: "
                         f"medvlm export {settings.model} DST --merge-lora")
    with tempfile.TemporaryDirectory(prefix="medvlm-vllm-") as tmp:
        template_file = Path(tmp) / "chat_template.jinja"
        assert settings.template is not None  # resolved by serve()
        template_file.write_text(get_template(settings.template).jinja(system=settings.system_prompt),
                                 encoding="utf-8")
        command = vllm_command(settings, str(template_file))
        environment = dict(os.environ, **({"VLLM_API_KEY": settings.api_key} if settings.api_key else {}))
        log.info("starting vLLM: %s", " ".join(command[1:]))
        try:
            return subprocess.run(command, env=environment, check=False).returncode
        except KeyboardInterrupt:
            return 130
