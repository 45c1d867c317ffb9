"""The teacher interface shared by every data-generation and judging pipeline.

A teacher turns a request into text. The LLM teacher (`datagen/teacher.py`) sends the request's
chat `messages` to an OpenAI-compatible endpoint; the synthetic world's symbolic teacher
(`world/teacher.py`) ignores the messages and writes its answer from the structured `context`
(the same annotation the messages were built from). Both return text in the format the task's
prompt asks for, so one parser and one pipeline serve both. The interface sits outside `datagen/`
and `world/` so that both import it and neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class TeacherRequest:
    """One question put to a teacher."""

    key: str
    """Caller's identifier (e.g. the image id and task); echoed in the result, used for resume."""
    task: str
    """What is asked: "conversation", "detail", "complex", "llavar_conversation", "judge", ..."""
    messages: list[dict[str, Any]]
    """OpenAI chat messages (system, few-shot user/assistant pairs, final user context)."""
    context: dict[str, Any] = field(default_factory=dict)
    """The structured source the messages were rendered from (captions, instances, OCR...)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Sampling parameters (temperature, top_p, max_tokens, seed); part of the cache key."""


@dataclass
class TeacherResult:
    """A teacher's answer to one request, or the reason there is none."""

    key: str
    text: str | None
    """The reply; None when the request failed."""
    error: str | None = None
    """Why it failed (e.g. "http 500 after 5 tries", "cost limit reached"); None on success."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    """True when the answer came from the response cache and cost nothing."""

    @property
    def ok(self) -> bool:
        return self.text is not None


class Teacher(Protocol):
    """Anything that answers teacher requests."""

    name: str
    """Model identifier recorded in generated data (e.g. "gpt-4o", "symbolic-world-teacher")."""

    def complete(self, requests: Iterable[TeacherRequest]) -> Iterator[TeacherResult]:
        """Answer requests, possibly concurrently; yields one result per request, any order."""
        ...
