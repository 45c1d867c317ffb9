"""Fixtures for the evaluation tests: JSONL writing and a scripted in-process teacher."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llavakit.teacher_protocol import TeacherRequest, TeacherResult


class ScriptedTeacher:
    """A Teacher whose replies come from `respond(request)`: a string, or None for a failed
    request. Results are yielded in reverse order, as a concurrent teacher may."""

    def __init__(self, respond: Callable[[TeacherRequest], str | None], name: str = "scripted"):
        self.name = name
        self.respond = respond
        self.requests: list[TeacherRequest] = []

    def complete(self, requests: Iterable[TeacherRequest]) -> Iterator[TeacherResult]:
        batch = list(requests)
        self.requests += batch
        results = []
        for request in batch:
            text = self.respond(request)
            error = None if text is not None else "http 500 after 5 tries"
            results.append(TeacherResult(request.key, text, error, 10, 3))
        yield from reversed(results)

    def asked(self, key: str) -> list[TeacherRequest]:
        return [r for r in self.requests if r.key == key]


@pytest.fixture
def scripted_teacher() -> type[ScriptedTeacher]:
    return ScriptedTeacher


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[[str, list[dict[str, Any]]], Path]:
    """Write records as JSONL under tmp_path; returns the path."""

    def write(name: str, records: list[dict[str, Any]]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return path

    return write
