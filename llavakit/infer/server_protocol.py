"""OpenAI's chat-completions wire format, translated to and from the engine's requests.

Only the translation lives here (no I/O, no model): a JSON body becomes a `ChatCall` whose
messages carry one `<image>` tag where each image part appeared, and engine completions become
`chat.completion` / `chat.completion.chunk` objects. Anything the server cannot honour is refused
with an `ApiError` naming the offending parameter, the way OpenAI's own API answers.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field

from llavakit.conversation import IMAGE_TOKEN
from llavakit.infer.engine import Completion, SamplingParams

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
"""Accepted roles; OpenAI's newer "developer" role is the system prompt under another name."""
MAX_STOP_STRINGS = 4
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "logprobs", "top_logprobs")
"""Features a client relies on when it asks for them; refused rather than silently ignored."""


class ApiError(Exception):
    """An error answered to the client as OpenAI's `{"error": {...}}` object."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class ChatCall:
    """A validated chat-completions request, images not yet fetched or decoded."""

    model: str | None
    messages: list[dict]
    """[{"role", "content": str}] with an `<image>` tag where each image part was."""
    image_urls: list[str]
    """One reference per `<image>` tag, in order (data URL, http(s) URL or file URL)."""
    params: SamplingParams
    stream: bool = False
    include_usage: bool = False
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))


def parse_json_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def parse_chat_request(body: dict, max_tokens_limit: int, max_images: int) -> ChatCall:
    """Check every field this server understands; raise ApiError naming the first bad one."""
    for name in UNSUPPORTED:
        if body.get(name):
            raise ApiError(400, f"'{name}' is not supported by this server", param=name)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type", "text") != "text":
        raise ApiError(
            400, "only response_format {'type': 'text'} is supported", param="response_format"
        )
    n = body.get("n", 1)
    if n is not None and n != 1:
        raise ApiError(400, f"only n=1 is supported, got n={n!r}", param="n")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "'model' must be a string", param="model")
    messages, image_urls = _parse_messages(body.get("messages"))
    if len(image_urls) > max_images:
        raise ApiError(
            400,
            f"the request has {len(image_urls)} images; this server accepts at most {max_images}",
            param="messages",
        )
    stream = _optional(body, "stream", bool, False)
    options = _optional(body, "stream_options", dict, None) or {}
    return ChatCall(
        model=model,
        messages=messages,
        image_urls=image_urls,
        params=_sampling(body, max_tokens_limit),
        stream=stream,
        include_usage=bool(stream and options.get("include_usage")),
    )


def _parse_messages(raw) -> tuple[list[dict], list[str]]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    messages, urls = [], []
    for index, message in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"{where} must be an object with 'role' and 'content'", param=where)
        role = ROLES.get(message.get("role"))
        if role is None:
            raise ApiError(
                400,
                f"{where}.role must be one of {', '.join(ROLES)}, got {message.get('role')!r}",
                param=f"{where}.role",
            )
        text, found = _parse_content(message.get("content"), f"{where}.content")
        if found and role != "user":
            raise ApiError(400, f"{where}: only user messages may carry images", param=where)
        messages.append({"role": role, "content": text})
        urls.extend(found)
    return messages, urls


def _parse_content(content, where: str) -> tuple[str, list[str]]:
    """Text with an `<image>` tag per image part, and the image references in order."""
    if isinstance(content, str):
        return _plain_text(content, where), []
    if not isinstance(content, list):
        raise ApiError(400, f"{where} must be a string or a list of content parts", param=where)
    pieces, urls = [], []
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise ApiError(400, f"{at}.text must be a string", param=f"{at}.text")
            pieces.append(_plain_text(part["text"], f"{at}.text"))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise ApiError(
                    400, f"{at}.image_url must be {{'url': '...'}}", param=f"{at}.image_url"
                )
            pieces.append(IMAGE_TOKEN)
            urls.append(url)
        else:
            raise ApiError(
                400,
                f"{at}.type must be 'text' or 'image_url', got {kind!r}",
                param=f"{at}.type",
            )
    return "\n".join(pieces), urls


def _plain_text(text: str, where: str) -> str:
    if IMAGE_TOKEN in text:
        raise ApiError(
            400,
            f"{where} contains the reserved tag {IMAGE_TOKEN}; send images as image_url parts",
            param=where,
        )
    return text


def _sampling(body: dict, max_tokens_limit: int) -> SamplingParams:
    """Sampling settings; a max_tokens above the server's limit is lowered to it.

    OpenAI's API answers a request whose output is cut by a length limit with what fits and
    `finish_reason: "length"`, and evaluation harnesses ask for more tokens than a small server
    allows (many lmms-eval task configs ask for more than 1024), so asking for more is not an
    error.
    """
    names = [k for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None]
    max_tokens = _optional(body, names[0], int, max_tokens_limit) if names else max_tokens_limit
    if max_tokens < 1:
        raise ApiError(400, f"'{names[0]}' must be at least 1, got {max_tokens}", param=names[0])
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise ApiError(400, "'top_p' must be greater than 0", param="top_p")
    top_k = _optional(body, "top_k", int, 0)
    if top_k < 0:
        raise ApiError(400, "'top_k' must be >= 0", param="top_k")
    repetition_penalty = _number(body, "repetition_penalty", 1.0, 0.01, 10.0)
    return SamplingParams(
        max_new_tokens=min(max_tokens, max_tokens_limit),
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        stop=_stop_strings(body.get("stop")),
        seed=_optional(body, "seed", int, None),
    )


def _stop_strings(stop) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "'stop' must be a non-empty string or a list of them", param="stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise ApiError(400, f"'stop' accepts at most {MAX_STOP_STRINGS} strings", param="stop")
    return tuple(stops)


def _optional(body: dict, name: str, kind: type, default):
    value = body.get(name)
    if value is None:
        return default
    # bool is an int in Python; JSON true is not a number of tokens.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiError(400, f"'{name}' must be of type {kind.__name__}", param=name)
    return value


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"'{name}' must be a number", param=name)
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low} and {high}, got {value}", param=name)
    return float(value)


# ---- responses -----------------------------------------------------------------------------
def usage_body(completion: Completion) -> dict:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def completion_body(call: ChatCall, model: str, completion: Completion) -> dict:
    return {
        "id": call.id,
        "object": "chat.completion",
        "created": call.created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": usage_body(completion),
    }


def chunk_body(
    call: ChatCall,
    model: str,
    delta: dict | None,
    finish_reason: str | None = None,
    usage: dict | None = None,
) -> dict:
    """One streamed chunk; `delta=None` is the usage-only chunk that has no choices."""
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    )
    chunk = {
        "id": call.id,
        "object": "chat.completion.chunk",
        "created": call.created,
        "model": model,
        "choices": choices,
    }
    if call.include_usage:
        chunk["usage"] = usage
    return chunk


def sse(data: dict | str) -> str:
    """One server-sent event carrying a JSON object (or the literal [DONE])."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n"
