"""The LLM teacher: chat completions from any OpenAI-compatible endpoint.

This is the one client the project uses to talk to a language model, for data generation and
for judging in evaluation alike. It works with OpenAI and with local servers that speak the same
protocol (vLLM, SGLang, Ollama, llama.cpp). Everything that makes long paid runs safe lives here:
a bounded number of concurrent requests; retries with exponential backoff on rate limits, server
errors, timeouts and malformed replies (honouring Retry-After); a stop at a cost or request
budget; an immediate stop on an invalid key or an unreachable endpoint instead of hammering it; a
SQLite cache so a rerun never pays twice (answers already on their way when a run stops are still
cached); and optional answer validation, where a malformed answer is asked again with a different
seed (so neither the cache nor a deterministic server returns the same bad answer).

A reply is read by us, not by the client library: a body that is not JSON, or JSON that is not a
chat completion, is the teacher's fault and costs one request, never the run.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from llavakit.datagen.cache import CachedAnswer, ResponseCache, cache_key
from llavakit.teacher_protocol import TeacherRequest, TeacherResult

Validator = Callable[[TeacherRequest, str], None]
"""Checks an answer; raises ValueError whose message says what is wrong with it."""

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RETRYABLE_STATUS = frozenset({408, 409, 429})


class TeacherError(RuntimeError):
    """The run cannot continue (invalid key, unreachable endpoint, unknown model); fix and rerun."""


@dataclass
class TeacherConfig:
    """How to reach the teacher model and how careful to be with it."""

    model: str
    """Model name as the endpoint knows it (e.g. "gpt-4o", "Qwen/Qwen2.5-7B-Instruct")."""
    base_url: str | None = None
    """Endpoint root such as http://localhost:8000/v1; None reads OPENAI_BASE_URL, then OpenAI."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key; when unset a placeholder is sent (local servers)."""
    concurrency: int = 8
    """Requests in flight at once (threads)."""
    timeout_s: float = 120.0
    """Seconds to wait for one reply before it counts as a timeout and is retried."""
    max_tries: int = 5
    """Attempts per request on 429, 5xx, timeouts, dropped connections and malformed replies."""
    backoff_s: float = 1.0
    """Wait before the first retry; doubles with each retry (with jitter), unless Retry-After says."""
    max_backoff_s: float = 60.0
    """Longest wait between two tries, Retry-After included."""
    max_answer_tries: int = 3
    """Attempts per request when the validator rejects the answer (each with another seed)."""
    price_input_per_1m: float = 0.0
    """Price of one million prompt tokens, for the cost estimate (0: cost not tracked)."""
    price_output_per_1m: float = 0.0
    """Price of one million completion tokens."""
    max_cost: float | None = None
    """Stop sending once the estimated cost reaches this; requests in flight still finish, so the
    total may exceed it by at most `concurrency` answers. Unsent requests fail "cost limit reached"."""
    max_requests: int | None = None
    """Stop after this many HTTP requests (retries included); the rest fail "request limit reached"."""
    cache_path: Path | None = None
    """SQLite file of answers keyed by (model, messages, params); None disables the cache."""

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("teacher model name is empty: pass --teacher-model (--model)")
        for name in ("concurrency", "max_tries", "max_answer_tries"):
            if getattr(self, name) < 1:
                raise ValueError(f"teacher {name} must be at least 1, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ValueError(f"teacher timeout_s must be positive, got {self.timeout_s}")


@dataclass
class TeacherStats:
    """What a run cost and how it went; `summary()` is printed at the end of a run."""

    requests: int = 0
    """HTTP requests sent, retries included."""
    retries: int = 0
    cache_hits: int = 0
    answered: int = 0
    """Requests that ended with an accepted answer."""
    rejected_answers: int = 0
    """Answers the validator refused (each one was asked again or became a failure)."""
    malformed_replies: int = 0
    """HTTP 200 replies that were not a chat completion (bad JSON, wrong shape); each was retried."""
    prompt_tokens: int = 0
    """Tokens paid for in this run (cache hits excluded), as reported by the endpoint."""
    completion_tokens: int = 0
    cost: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)
    """Failed requests by reason."""

    def summary(self) -> str:
        lines = [
            f"requests sent: {self.requests} ({self.retries} retries), cache hits: {self.cache_hits}",
            f"answers: {self.answered}, rejected answers: {self.rejected_answers}, "
            f"failures: {sum(self.failures.values())}",
            *(
                [f"malformed replies from the teacher: {self.malformed_replies} (retried)"]
                if self.malformed_replies
                else []
            ),
            f"tokens: {self.prompt_tokens} prompt + {self.completion_tokens} completion, "
            f"estimated cost: {self.cost:.4f}",
        ]
        lines += [f"  failed {count}x: {reason}" for reason, count in self.failures.most_common()]
        return "\n".join(lines)


class _RequestFailed(Exception):
    """One request gave up; the message is the reason reported in its result."""


class MalformedReply(ValueError):
    """An HTTP 200 reply that is not a chat completion; the message says what kind of wrong.

    The message is the same for every reply with the same fault (no JSON error positions), so
    failures are counted by kind."""


@dataclass(frozen=True)
class _Reply:
    text: str | None
    """The first choice's message content; None when the teacher sent no text."""
    prompt_tokens: int
    completion_tokens: int


def _token_count(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and value >= 0 else 0


def parse_completion(body: bytes) -> _Reply:
    """The text and token usage of a chat-completion body, or MalformedReply saying what is wrong.

    Only what we use is checked: `choices[0].message.content` (a string, or null for a reply
    without text) and the token counts of `usage` (missing or odd counts read as 0).
    """
    try:
        document = json.loads(body)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        raise MalformedReply("not valid JSON") from None
    if not isinstance(document, dict):
        raise MalformedReply(f"a JSON {type(document).__name__}, not a completion object")
    choices = document.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedReply("no `choices` list")
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    if not isinstance(message, dict):
        raise MalformedReply("`choices[0].message` is not an object")
    text = message.get("content")
    if text is not None and not isinstance(text, str):
        raise MalformedReply(f"`choices[0].message.content` is a {type(text).__name__}")
    usage = document.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return _Reply(
        text, _token_count(usage, "prompt_tokens"), _token_count(usage, "completion_tokens")
    )


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, or Retry-After seconds or date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _error_detail(error: openai.APIStatusError) -> str:
    """The server's own error message, without the client's "Error code: N - " wrapping."""
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return error.message


class OpenAITeacher:
    """Teacher over the OpenAI chat-completions protocol (see the module docstring)."""

    def __init__(self, config: TeacherConfig, validate: Validator | None = None):
        self.config = config
        self.name = config.model
        self.base_url = config.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self.stats = TeacherStats()
        self._validate = validate
        self._key_is_set = bool(os.environ.get(config.api_key_env))
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=os.environ.get(config.api_key_env) or "no-key",
            timeout=config.timeout_s,
            max_retries=0,  # retries are ours: Retry-After, budgets and fatal errors need control
        )
        self._cache = ResponseCache(config.cache_path) if config.cache_path else None
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._reached = False  # has the endpoint ever answered? (tells "wrong URL" from "flaky")

    def __enter__(self) -> OpenAITeacher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()
        if self._cache is not None:
            self._cache.close()

    def complete(self, requests: Iterable[TeacherRequest]) -> Iterator[TeacherResult]:
        """Answer requests with at most `concurrency` in flight; results come as they finish.

        Raises TeacherError at the first fatal reply (401/403/404, unreachable endpoint). No
        request starts after that, but those already sent are awaited and their answers cached
        before the error leaves here, so a rerun after the fix pays for none of them again.
        """
        stop = threading.Event()
        pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="teacher")
        pending: set[Future[TeacherResult]] = set()
        remaining = iter(requests)
        exhausted = False
        try:
            while True:
                # Keep the queue short so a huge request stream is never materialised at once.
                while not exhausted and len(pending) < 2 * self.config.concurrency:
                    request = next(remaining, None)
                    if request is None:
                        exhausted = True
                    else:
                        pending.add(pool.submit(self._answer, request, stop))
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            stop.set()  # queued requests are cancelled and retries stop waiting...
            pool.shutdown(wait=True, cancel_futures=True)  # ...but paid answers reach the cache

    def _answer(self, request: TeacherRequest, stop: threading.Event) -> TeacherResult:
        tries = self.config.max_answer_tries if self._validate else 1
        prompt_tokens = completion_tokens = 0
        reason = ""
        for attempt in range(tries):
            params = dict(request.params)
            if attempt:
                params["seed"] = int(params.get("seed", 0)) + attempt
            try:
                answer, cached = self._ask(request.messages, params, stop)
            except _RequestFailed as failure:
                return self._failed(request.key, str(failure))
            except TeacherError:
                stop.set()  # no other thread sends another request
                raise
            prompt_tokens += answer.prompt_tokens
            completion_tokens += answer.completion_tokens
            if self._validate is not None:
                try:
                    self._validate(request, answer.text)
                except ValueError as error:
                    reason = str(error)
                    with self._lock:
                        self.stats.rejected_answers += 1
                    continue
            with self._lock:
                self.stats.answered += 1
            return TeacherResult(
                request.key, answer.text, None, prompt_tokens, completion_tokens, cached
            )
        return self._failed(request.key, f"invalid answer after {tries} tries: {reason}")

    def _failed(self, key: str, reason: str) -> TeacherResult:
        with self._lock:
            self.stats.failures[reason] += 1
        return TeacherResult(key, None, reason)

    def _ask(
        self, messages: list[dict[str, Any]], params: dict[str, Any], stop: threading.Event
    ) -> tuple[CachedAnswer, bool]:
        """One answer for (messages, params): from the cache, or from the endpoint with retries."""
        key = cache_key(self.config.model, messages, params)
        if self._cache is not None:
            hit = self._cache.get(key)
            if hit is not None:
                with self._lock:
                    self.stats.cache_hits += 1
                return hit, True
        last_problem = ""
        for attempt in range(self.config.max_tries):
            self._take_budget(stop, retry=attempt > 0)
            try:
                raw = self._client.chat.completions.with_raw_response.create(
                    model=self.config.model, messages=messages, extra_body=params or None
                )
                reply = parse_completion(raw.content)
            except MalformedReply as error:
                self._reached = True
                with self._lock:
                    self.stats.malformed_replies += 1
                last_problem, server_wait = f"malformed reply ({error})", None
            except openai.APITimeoutError:
                last_problem, server_wait = "timeout", None
            except openai.APIConnectionError as error:
                if not self._reached:
                    raise TeacherError(
                        f"cannot reach the teacher endpoint {self.base_url}: {error}; "
                        "check --base-url (or OPENAI_BASE_URL) and that the server is running"
                    ) from error
                last_problem, server_wait = "connection error", None
            except openai.APIStatusError as error:
                self._reached = True
                self._raise_if_fatal(error)
                if error.status_code not in _RETRYABLE_STATUS and error.status_code < 500:
                    detail = _error_detail(error)[:120]
                    raise _RequestFailed(f"http {error.status_code}: {detail}") from error
                last_problem = f"http {error.status_code}"
                server_wait = retry_after_seconds(error.response.headers)
            else:
                self._reached = True
                return self._store(key, reply), False
            if attempt + 1 < self.config.max_tries:
                delay = server_wait if server_wait is not None else self._backoff(attempt)
                if stop.wait(min(delay, self.config.max_backoff_s)):
                    raise _RequestFailed("stopped")
        if last_problem == "connection error":  # the server went away: every request would fail
            raise TeacherError(
                f"lost the teacher endpoint {self.base_url}: no connection after "
                f"{self.config.max_tries} tries; rerun the same command to resume"
            )
        if last_problem.startswith("malformed reply"):
            raise _RequestFailed(
                f"teacher {self.config.model!r} at fault: {last_problem} after "
                f"{self.config.max_tries} tries"
            )
        raise _RequestFailed(f"{last_problem} after {self.config.max_tries} tries")

    def _raise_if_fatal(self, error: openai.APIStatusError) -> None:
        """Errors that every further request would repeat stop the whole run at once."""
        status = error.status_code
        if status in (401, 403):
            hint = (
                f"{self.config.api_key_env} is not set"
                if not self._key_is_set
                else f"check the key in {self.config.api_key_env}"
            )
            raise TeacherError(
                f"the teacher endpoint {self.base_url} rejected the API key (HTTP {status}): "
                f"{_error_detail(error)}; {hint}"
            ) from error
        if status == 404:
            raise TeacherError(
                f"the teacher endpoint {self.base_url} answered 404 for model "
                f"{self.config.model!r}: {_error_detail(error)}; check --base-url and --teacher-model"
            ) from error

    def _take_budget(self, stop: threading.Event, retry: bool) -> None:
        """Count one HTTP request against the limits, or refuse it."""
        with self._lock:
            if stop.is_set():
                raise _RequestFailed("stopped")
            limit = self.config.max_requests
            if limit is not None and self.stats.requests >= limit:
                raise _RequestFailed("request limit reached")
            if self.config.max_cost is not None and self.stats.cost >= self.config.max_cost:
                raise _RequestFailed("cost limit reached")
            self.stats.requests += 1
            self.stats.retries += int(retry)

    def _backoff(self, attempt: int) -> float:
        return self.config.backoff_s * 2**attempt * (0.5 + self._rng.random() / 2)

    def _store(self, key: str, reply: _Reply) -> CachedAnswer:
        """Account for a paid reply and cache it; replies without text fail the request."""
        prompt_tokens, completion_tokens = reply.prompt_tokens, reply.completion_tokens
        cost = (
            prompt_tokens * self.config.price_input_per_1m
            + completion_tokens * self.config.price_output_per_1m
        ) / 1e6
        with self._lock:
            self.stats.prompt_tokens += prompt_tokens
            self.stats.completion_tokens += completion_tokens
            self.stats.cost += cost
        if reply.text is None:
            raise _RequestFailed("reply has no text")
        answer = CachedAnswer(reply.text, prompt_tokens, completion_tokens)
        if self._cache is not None:
            self._cache.put(key, answer)
        return answer
