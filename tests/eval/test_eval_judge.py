"""The bounded re-asking loop behind every judged benchmark."""

from __future__ import annotations

import pytest

from llavakit.eval.judge import ask_until_parsed
from llavakit.teacher_protocol import TeacherRequest


def _number(reply, request):
    if not reply.strip().isdigit():
        raise ValueError(f"{reply!r} is not a number")
    return int(reply)


def _requests(*keys):
    return [TeacherRequest(key=k, task="judge", messages=[], params={"seed": 99}) for k in keys]


def test_retries_only_unparsable_replies_with_new_seeds(scripted_teacher):
    script = {"a": ["7"], "b": ["x", "y", "3"], "c": ["x", "x", "x", "4"]}
    teacher = scripted_teacher(lambda r: script[r.key][r.params["seed"] - 10])
    outcomes = ask_until_parsed(teacher, _requests("a", "b", "c"), _number, base_seed=10)
    assert (outcomes["a"].value, outcomes["a"].attempts) == (7, 1)
    assert (outcomes["b"].value, outcomes["b"].attempts, outcomes["b"].ok) == (3, 3, True)
    assert outcomes["c"].value is None and not outcomes["c"].ok
    assert outcomes["c"].error == "unparsable reply after 3 attempts: 'x' is not a number"
    assert outcomes["c"].replies == ["x", "x", "x"]
    assert [r.params["seed"] for r in teacher.asked("b")] == [10, 11, 12]
    assert outcomes["b"].prompt_tokens == 30


def test_teacher_failures_and_silent_keys(scripted_teacher):
    class Forgetful(scripted_teacher):
        def complete(self, requests):
            return (r for r in super().complete(requests) if r.key != "lost")

    teacher = Forgetful(lambda r: None if r.key == "down" else "1")
    outcomes = ask_until_parsed(teacher, _requests("down", "lost", "fine"), _number, max_attempts=2)
    assert outcomes["down"].error == "teacher error: http 500 after 5 tries"
    assert outcomes["down"].attempts == 1
    assert outcomes["lost"].error == "teacher 'scripted' returned no result"
    assert outcomes["lost"].attempts == 2
    assert outcomes["fine"].value == 1
    with pytest.raises(ValueError, match="share the key 'x'"):
        ask_until_parsed(teacher, _requests("x", "x"), _number)
    with pytest.raises(ValueError, match="at least 1"):
        ask_until_parsed(teacher, _requests("y"), _number, max_attempts=0)
