"""`llavakit serve`: an OpenAI-compatible chat-completions server over the generation engine.

Routes: `GET /v1/models`, `POST /v1/chat/completions` (JSON or server-sent events), `GET /health`
and `GET /metrics`. Each request is checked (API key, content type, body size, fields, images,
prompt length) before it reaches the model, and refused with an OpenAI-shaped error object and a
proper HTTP status otherwise. Admitted requests go to the `BatchScheduler`, which runs requests
that arrive together as one batched `Engine.generate` call.

Nothing a client names is read from disk or fetched from the network unless the operator passed
--allow-local-files / --allow-remote-urls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llavakit.infer import defaults
from llavakit.infer.engine import Completion, Engine
from llavakit.infer.engine import Request as EngineRequest
from llavakit.infer.images import ImagePolicy, ImageSourceError, resolve_image
from llavakit.infer.server_batching import (
    AdmissionGate,
    BatchScheduler,
    Failed,
    Finished,
    Job,
    TextDelta,
)
from llavakit.infer.server_limits import RequestBudget
from llavakit.infer.server_protocol import (
    ApiError,
    ChatCall,
    chunk_body,
    completion_body,
    parse_chat_request,
    parse_json_body,
    sse,
    usage_body,
)

log = logging.getLogger("llavakit.serve")


@dataclass(frozen=True)
class ServerConfig:
    """What the operator decides about a server (the `llavakit serve` flags)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    """When set, every /v1 and /metrics request needs `Authorization: Bearer <api_key>`."""
    model_name: str = "llavakit"
    """The id listed by /v1/models and written in every answer."""
    strict_model_name: bool = False
    """Answer 404 to requests naming another model; by default a single-model server answers
    whatever name a client sends (clients and harnesses often hard-code one)."""
    max_batch_size: int = 16
    """Most requests one engine call generates together."""
    batch_window_ms: float = 10.0
    """A batch starts when no request has arrived for this long..."""
    batch_max_wait_ms: float = 100.0
    """...or this long after its first request, whichever comes first."""
    max_concurrent: int = 64
    """Requests admitted at once (queued or generating); more are answered 429."""
    max_image_bytes: int = defaults.MAX_IMAGE_BYTES
    max_image_pixels: int = defaults.MAX_IMAGE_PIXELS
    max_images: int = 8
    """Images one request may carry (fewer when the model's context cannot hold that many)."""
    max_tokens: int = 1024
    """Most tokens one answer may have, and the default; a request asking for more gets at most
    this many (and never more than the context leaves), ending with finish_reason "length"."""
    retry_after_s: int = defaults.RETRY_AFTER_S
    """Sent as Retry-After with a 429 for a full queue."""
    allow_local_files: bool = False
    """Let clients name files on the server's disk (file:// URLs); off unless the operator trusts them."""
    allow_remote_urls: bool = False
    """Let the server fetch http(s) image URLs on a client's behalf."""

    def image_policy(self) -> ImagePolicy:
        return ImagePolicy(
            allow_local_files=self.allow_local_files,
            allow_remote_urls=self.allow_remote_urls,
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
        )


@dataclass
class ServerMetrics:
    """Counters shown by /metrics; touched only on the event loop thread."""

    requests: int = 0
    responses: Counter = field(default_factory=Counter)
    """HTTP status -> count, for chat completions."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.time)

    def count_usage(self, completion: Completion) -> None:
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens

    def snapshot(self, batches: dict, in_flight: int) -> dict:
        """batches: the engine's `BatchSizes.summary()`."""
        return {
            "uptime_s": round(time.time() - self.started, 3),
            "requests": self.requests,
            "responses_by_status": {str(k): v for k, v in sorted(self.responses.items())},
            "in_flight": in_flight,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            **batches,
        }


def error_response(error: ApiError, retry_after_s: int = defaults.RETRY_AFTER_S) -> JSONResponse:
    headers = {}
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if error.status == 429:
        headers["Retry-After"] = str(retry_after_s)
    return JSONResponse(error.body(), status_code=error.status, headers=headers or None)


def create_app(engine: Engine, config: ServerConfig) -> FastAPI:
    """The FastAPI app; its scheduler thread starts now and stops with the app's lifespan."""
    scheduler = BatchScheduler(
        engine,
        config.max_batch_size,
        config.batch_window_ms / 1000,
        config.batch_max_wait_ms / 1000,
    )
    metrics = ServerMetrics()
    gate = AdmissionGate(config.max_concurrent)
    policy = config.image_policy()
    budget = RequestBudget.for_engine(engine, config.max_images, config.max_image_bytes)
    log.info(
        "request budget: a context of %d tokens, at most %d characters of text, %d images, "
        "%d bytes of body",
        budget.context_tokens,
        budget.max_text_chars,
        budget.max_images,
        budget.max_body_bytes,
    )

    async def lifespan(_app: FastAPI):
        yield
        await run_in_threadpool(scheduler.close)

    app = FastAPI(title="llavakit", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.scheduler = scheduler
    app.state.metrics = metrics

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(ApiError(error.status_code, str(error.detail)))

    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(
                401,
                "missing API key: send the header 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )
        if not hmac.compare_digest(key.strip().encode(), config.api_key.encode()):
            raise ApiError(401, "incorrect API key provided", code="invalid_api_key")

    def model_card() -> dict:
        return {
            "id": config.model_name,
            "object": "model",
            "created": int(metrics.started),
            "owned_by": "llavakit",
        }

    @app.get("/health")
    async def health() -> JSONResponse:
        if not scheduler.alive:
            return JSONResponse({"status": "error", "reason": "scheduler stopped"}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics_route(request: Request) -> JSONResponse:
        try:
            authorize(request)
        except ApiError as error:
            return error_response(error)
        return JSONResponse(metrics.snapshot(engine.batch_sizes.summary(), gate.count))

    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        try:
            authorize(request)
        except ApiError as error:
            return error_response(error)
        return JSONResponse({"object": "list", "data": [model_card()]})

    @app.get("/v1/models/{model}")
    async def get_model(model: str, request: Request) -> JSONResponse:
        try:
            authorize(request)
            if config.strict_model_name and model != config.model_name:
                raise ApiError(
                    404,
                    f"the model {model!r} does not exist",
                    param="model",
                    code="model_not_found",
                )
        except ApiError as error:
            return error_response(error)
        return JSONResponse(model_card() | {"id": model})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        metrics.requests += 1
        try:
            response = await handle_chat(request)
        except ApiError as error:
            response = error_response(error, config.retry_after_s)
        except Exception:
            log.exception("unexpected error while answering a chat completion")
            response = error_response(ApiError(500, "internal server error", type="server_error"))
        metrics.responses[response.status_code] += 1
        return response

    async def handle_chat(request: Request):
        authorize(request)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise ApiError(415, f"Content-Type must be application/json, got {kind or 'nothing'!r}")
        body = parse_json_body(await read_body(request, budget.max_body_bytes))
        call = parse_chat_request(body, config.max_tokens, budget.max_images)
        del body  # the parsed call holds what is needed; a refused request keeps nothing
        budget.check(call.messages, len(call.image_urls))
        if config.strict_model_name and call.model not in (None, config.model_name):
            raise ApiError(
                404,
                f"the model {call.model!r} does not exist; this server serves "
                f"{config.model_name!r}",
                param="model",
                code="model_not_found",
            )
        if not gate.try_enter():
            raise ApiError(
                429,
                f"the server is busy ({config.max_concurrent} requests in flight); retry shortly",
                type="rate_limit_error",
                code="rate_limit_exceeded",
            )
        scheduler.announce()
        try:
            engine_request = await run_in_threadpool(prepare, call, engine, policy)
        except BaseException:
            scheduler.withdraw()
            gate.leave()  # never reached the scheduler, which frees the slots it was given
            raise
        job = Job(engine_request, call.stream, asyncio.get_running_loop(), gate)
        scheduler.submit(job)
        if call.stream:
            return StreamingResponse(
                stream_events(call, job),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            completion = await job.outcome()
        except Exception as error:
            raise engine_failure(error) from None
        metrics.count_usage(completion)
        return JSONResponse(completion_body(call, config.model_name, completion))

    async def stream_events(call: ChatCall, job: Job) -> AsyncIterator[str]:
        name = config.model_name
        yield sse(chunk_body(call, name, {"role": "assistant", "content": ""}))
        while True:
            event = await job.events.get()
            if isinstance(event, TextDelta):
                yield sse(chunk_body(call, name, {"content": event.text}))
            elif isinstance(event, Finished):
                completion = event.completion
                metrics.count_usage(completion)
                yield sse(chunk_body(call, name, {}, completion.finish_reason))
                if call.include_usage:
                    yield sse(chunk_body(call, name, None, usage=usage_body(completion)))
                break
            elif isinstance(event, Failed):
                yield sse(engine_failure(event.error).body())
                break
        yield sse("[DONE]")

    return app


async def read_body(request: Request, limit: int) -> bytearray:
    """The request body, refused with 413 as soon as it grows past `limit` bytes.

    `limit` is the request budget's (text and images the model's context can hold), so a body
    is never read past what could still be a valid request.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is larger than the {limit}-byte limit")
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            raise ApiError(413, f"the request body is larger than the {limit}-byte limit")
        body += chunk
    return body


def prepare(call: ChatCall, engine: Engine, policy: ImagePolicy) -> EngineRequest:
    """Decode the images, check the prompt encodes and fits (runs on a worker thread), and
    lower max_tokens to what the context leaves after the prompt."""
    images = []
    for number, url in enumerate(call.image_urls, start=1):
        try:
            images.append(resolve_image(url, policy))
        except ImageSourceError as error:
            raise ApiError(
                400, f"image {number}: {error}", param="messages", code="invalid_image"
            ) from None
    try:
        sample = engine.processor.encode(call.messages, images, add_generation_prompt=True)
    except ValueError as error:
        raise ApiError(400, str(error), param="messages") from None
    context = engine.context_length
    room = context - len(sample.input_ids)
    if sample.truncated or room < 1:
        raise ApiError(
            400,
            f"the prompt is {len(sample.input_ids)} tokens (images included), which leaves no "
            f"room for an answer in the model's context of {context} tokens",
            param="messages",
            code="context_length_exceeded",
        )
    params = dataclasses.replace(call.params, max_new_tokens=min(call.params.max_new_tokens, room))
    return EngineRequest(call.messages, images, params)


def engine_failure(error: Exception) -> ApiError:
    if isinstance(error, ValueError):
        return ApiError(400, str(error))
    return ApiError(500, f"generation failed: {error}", type="server_error")


def serve(
    checkpoint: str | Path,
    config: ServerConfig,
    device: str = "auto",
    dtype: str = "auto",
    load_in_bits: int | None = None,
    device_map: str | None = None,
) -> None:
    """Load the checkpoint and serve it until interrupted."""
    import uvicorn

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if config.host not in ("127.0.0.1", "localhost", "::1") and config.api_key is None:
        log.warning(
            "serving on %s without --api-key: anyone who can reach it can use it", config.host
        )
    log.info("loading %s", checkpoint)
    engine = Engine.load(
        checkpoint,
        device=device,
        dtype=dtype,
        load_in_bits=load_in_bits,
        device_map=device_map,
        max_batch_size=config.max_batch_size,
    )
    uvicorn.run(create_app(engine, config), host=config.host, port=config.port, log_level="info")
