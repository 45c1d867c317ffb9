"""Asking a teacher until its reply parses: the one retry loop behind every judged benchmark.

A judge (LLaVA-Bench's reviewer, ScienceQA's arbiter) must answer in a fixed format. A reply that
does not parse is asked again, at most `max_attempts` times in all, and then recorded as a
failure with its reason: it is never scored as if the judge had said 0.

Each new attempt changes the request's `seed` parameter. The teacher's response cache is keyed
by (model, messages, params), so without a change a retry would be answered from the cache with
the same unusable reply; `seed` is also an ordinary OpenAI sampling parameter, so the endpoint
accepts it. Requests that fail inside the teacher (HTTP errors after its own retries, cost
limit) are not retried here: they are failures at once, with the teacher's reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from tqdm import tqdm

from llavakit.teacher_protocol import Teacher, TeacherRequest

T = TypeVar("T")


@dataclass
class JudgeOutcome(Generic[T]):
    """What a teacher finally said to one request."""

    key: str
    value: T | None
    """The parsed reply; None when every attempt failed."""
    reply: str | None
    """The last reply received (the parsed one on success)."""
    error: str | None = None
    """Why there is no value: the teacher's error or the last parse error."""
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    replies: list[str] = field(default_factory=list)
    """Every reply received, oldest first (for inspecting a judge that keeps misbehaving)."""

    @property
    def ok(self) -> bool:
        return self.error is None


def ask_until_parsed(
    teacher: Teacher,
    requests: Iterable[TeacherRequest],
    parse: Callable[[str, TeacherRequest], T],
    *,
    max_attempts: int = 3,
    base_seed: int = 0,
    progress: str | None = None,
) -> dict[str, JudgeOutcome[T]]:
    """Send requests in batches, re-asking those whose reply `parse` rejects with ValueError.

    `parse(reply, request)` returns the value or raises ValueError saying what is wrong; it
    gets the request so that one parser can serve requests of different shapes (e.g. questions
    with different numbers of options, read from `request.context`).

    Returns one outcome per request key. All pending requests of an attempt go to the teacher
    together, so a concurrent teacher keeps its concurrency across retries. `progress`, when
    given, is the label of a progress bar counting requests settled (parsed or failed).
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    pending: dict[str, TeacherRequest] = {}
    for request in requests:
        if request.key in pending:
            raise ValueError(f"two judge requests share the key {request.key!r}")
        pending[request.key] = request
    outcomes: dict[str, JudgeOutcome[T]] = {
        key: JudgeOutcome(key=key, value=None, reply=None) for key in pending
    }
    bar = tqdm(total=len(pending), desc=progress, unit="req", disable=progress is None)
    for attempt in range(max_attempts):
        if not pending:
            break
        batch = [_with_seed(request, base_seed + attempt) for request in pending.values()]
        answered: set[str] = set()
        for result in teacher.complete(batch):
            if result.key not in pending or result.key in answered:
                raise ValueError(
                    f"teacher {teacher.name!r} sent an unexpected result for {result.key!r}"
                )
            answered.add(result.key)
            outcome = outcomes[result.key]
            outcome.attempts += 1
            outcome.prompt_tokens += result.prompt_tokens
            outcome.completion_tokens += result.completion_tokens
            if result.text is None:
                outcome.error = f"teacher error: {result.error or 'no reply'}"
                del pending[result.key]
                bar.update()
                continue
            outcome.reply = result.text
            outcome.replies.append(result.text)
            try:
                outcome.value = parse(result.text, pending[result.key])
            except ValueError as error:
                outcome.error = f"unparsable reply after {outcome.attempts} attempts: {error}"
                continue
            outcome.error = None
            del pending[result.key]
            bar.update()
        for key in pending.keys() - answered:
            outcomes[key].error = f"teacher {teacher.name!r} returned no result"
            outcomes[key].attempts += 1
    bar.update(len(pending))  # the rest settle as failures
    bar.close()
    return outcomes


def _with_seed(request: TeacherRequest, seed: int) -> TeacherRequest:
    params: dict[str, Any] = {**request.params, "seed": seed}
    return replace(request, params=params)
