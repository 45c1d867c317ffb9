"""OpenAITeacher against a real local HTTP server: retries, limits, cache, fatal errors."""

from __future__ import annotations

import re
import socket
import time
from email.utils import formatdate

import pytest
from fake_openai import FakeOpenAIServer, FakeReply

from llavakit.datagen.cache import ResponseCache
from llavakit.datagen.teacher import (
    MalformedReply,
    OpenAITeacher,
    TeacherConfig,
    TeacherError,
    parse_completion,
    retry_after_seconds,
)
from llavakit.teacher_protocol import TeacherRequest


def requests(n: int, **params) -> list[TeacherRequest]:
    return [
        TeacherRequest(f"k{i}", "judge", [{"role": "user", "content": f"q{i}"}], params=params)
        for i in range(n)
    ]


def teacher(server: FakeOpenAIServer, **overrides) -> OpenAITeacher:
    settings = {"model": "fake-model", "base_url": server.base_url, "backoff_s": 0.01}
    return OpenAITeacher(TeacherConfig(**{**settings, **overrides}))


@pytest.fixture
def server():
    with FakeOpenAIServer() as running:
        yield running


def test_answers_every_request_and_counts_tokens_and_cost(server):
    server.respond = lambda body: FakeReply(
        "answer to " + body["messages"][-1]["content"], prompt_tokens=1000, completion_tokens=500
    )
    client = teacher(server, price_input_per_1m=2.0, price_output_per_1m=10.0, concurrency=3)
    results = {result.key: result for result in client.complete(requests(5, temperature=0.5))}
    assert {key: r.text for key, r in results.items()} == {
        f"k{i}": f"answer to q{i}" for i in range(5)
    }
    assert results["k0"].prompt_tokens == 1000 and not results["k0"].cached
    assert client.stats.requests == 5 and client.stats.answered == 5
    assert client.stats.prompt_tokens == 5000 and client.stats.completion_tokens == 2500
    assert client.stats.cost == pytest.approx(5 * (1000 * 2.0 + 500 * 10.0) / 1e6)
    assert server.received[0]["model"] == "fake-model"
    assert server.received[0]["temperature"] == 0.5  # params reach the endpoint as sent


def test_server_errors_are_retried_until_an_answer_comes(server):
    server.push(FakeReply(status=500), FakeReply(status=503), FakeReply("finally"))
    client = teacher(server)
    [result] = client.complete(requests(1))
    assert result.text == "finally"
    assert server.request_count == 3 and client.stats.retries == 2


def test_retry_after_is_honoured(server):
    server.push(FakeReply(status=429, headers={"Retry-After": "1"}))
    client = teacher(server, backoff_s=0.0)
    start = time.monotonic()
    [result] = client.complete(requests(1))
    assert result.text == "echo: q0"
    assert time.monotonic() - start >= 1.0


def test_persistent_errors_become_a_failure_with_its_reason(server):
    server.respond = lambda body: FakeReply(status=500)
    client = teacher(server, max_tries=3)
    [result] = client.complete(requests(1))
    assert not result.ok and result.error == "http 500 after 3 tries"
    assert server.request_count == 3
    assert client.stats.failures == {"http 500 after 3 tries": 1}


TRUNCATED_COMPLETION = b'{"id": "chatcmpl-1", "choices": [{"index": 0, "mes'


def test_malformed_replies_are_retried_like_server_errors(server):
    server.push(
        FakeReply(body=TRUNCATED_COMPLETION),
        FakeReply(body=b"[1, 2]"),
        FakeReply(body=b'{"choices": [{"message": {"content": 5}}]}'),
    )
    client = teacher(server)
    [result] = client.complete(requests(1))
    assert result.text == "echo: q0"
    assert server.request_count == 4 and client.stats.retries == 3
    assert client.stats.malformed_replies == 3 and not client.stats.failures
    assert "malformed replies from the teacher: 3 (retried)" in client.stats.summary()


def test_a_persistently_malformed_reply_fails_its_request_only_naming_the_teacher(server):
    def respond(body):
        if body["messages"][-1]["content"] == "q2":
            return FakeReply(body=TRUNCATED_COMPLETION)
        return "answer"

    server.respond = respond
    client = teacher(server, max_tries=3, concurrency=2)
    results = {result.key: result for result in client.complete(requests(6))}
    reason = "teacher 'fake-model' at fault: malformed reply (not valid JSON) after 3 tries"
    assert results["k2"].error == reason
    assert [key for key, result in sorted(results.items()) if result.ok] == [
        "k0", "k1", "k3", "k4", "k5"
    ]  # fmt: skip
    assert client.stats.failures == {reason: 1} and client.stats.malformed_replies == 3


def test_a_fatal_error_still_caches_the_answers_already_in_flight(server, tmp_path):
    def respond(body):
        if body["messages"][-1]["content"] == "q0":
            return FakeReply("no such model", status=404, delay_s=0.2)
        return FakeReply("answer", delay_s=1.0)  # still on its way when the 404 arrives

    server.respond = respond
    cache = tmp_path / "cache.sqlite"
    with pytest.raises(TeacherError, match="404"):
        list(teacher(server, concurrency=4, cache_path=cache).complete(requests(8)))
    assert server.request_count == 4  # k0..k3 were sent; k4..k7 were never started
    assert len(ResponseCache(cache)) == 3  # k1..k3 were paid for, and kept

    server.respond = lambda body: "answer"
    rerun = teacher(server, concurrency=4, cache_path=cache)
    assert all(result.ok for result in rerun.complete(requests(8)))
    assert rerun.stats.cache_hits == 3 and server.request_count == 4 + 5


def test_completion_bodies_are_read_strictly_where_we_use_them():
    reply = parse_completion(
        b'{"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 3}}'
    )
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ("hi", 3, 0)
    assert parse_completion(b'{"choices": [{"message": {"content": null}}]}').text is None
    for body, problem in [
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (TRUNCATED_COMPLETION, "not valid JSON"),
        (b'"text"', "a JSON str, not a completion object"),
        (b'{"choices": []}', "no `choices` list"),
        (b'{"choices": ["x"]}', "`choices[0].message` is not an object"),
        (b'{"choices": [{"message": {"content": ["a"]}}]}', "content` is a list"),
    ]:
        with pytest.raises(MalformedReply, match=re.escape(problem)):
            parse_completion(body)


def test_slow_replies_time_out_and_are_retried(server):
    server.push(FakeReply(delay_s=2.0))
    client = teacher(server, timeout_s=0.3)
    [result] = client.complete(requests(1))
    assert result.text == "echo: q0" and server.request_count == 2

    server.respond = lambda body: FakeReply(delay_s=2.0)
    [result] = teacher(server, timeout_s=0.2, max_tries=2).complete(requests(1))
    assert result.error == "timeout after 2 tries"


def test_bad_request_fails_that_request_only(server):
    server.push(FakeReply("context too long", status=400))
    results = {r.key: r for r in teacher(server, concurrency=1).complete(requests(2))}
    assert results["k0"].error == "http 400: context too long"
    assert results["k1"].text == "echo: q1"


def test_invalid_key_stops_at_the_first_401(server, monkeypatch):
    server.api_key = "right-key"
    monkeypatch.setenv("OPENAI_API_KEY", "wrong-key")
    client = teacher(server, concurrency=2)
    with pytest.raises(TeacherError, match="rejected the API key .*401"):
        list(client.complete(requests(20)))
    assert server.request_count <= 2  # the requests in flight, not 20 x max_tries


def test_api_key_comes_from_the_environment(server, monkeypatch):
    server.api_key = "right-key"
    monkeypatch.setenv("OPENAI_API_KEY", "right-key")
    [result] = teacher(server).complete(requests(1))
    assert result.ok


def test_unknown_model_is_fatal(server):
    server.respond = lambda body: FakeReply("model not found", status=404)
    with pytest.raises(TeacherError, match="404 for model 'fake-model'"):
        list(teacher(server).complete(requests(3)))


def test_unreachable_endpoint_is_a_clear_error():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = TeacherConfig(model="m", base_url=f"http://127.0.0.1:{port}/v1", backoff_s=0.01)
    start = time.monotonic()
    with pytest.raises(TeacherError, match=f"cannot reach the teacher endpoint .*:{port}"):
        list(OpenAITeacher(config).complete(requests(3)))
    assert time.monotonic() - start < 5  # fails fast instead of backing off for minutes


def test_an_endpoint_that_goes_away_stops_the_run():
    server = FakeOpenAIServer().start()
    client = OpenAITeacher(
        TeacherConfig(model="m", base_url=server.base_url, backoff_s=0.01, max_tries=3)
    )
    assert [r.text for r in client.complete(requests(1))] == ["echo: q0"]
    server.stop()
    with pytest.raises(TeacherError, match="lost the teacher endpoint .* after 3 tries"):
        list(client.complete(requests(2)))


def test_cache_makes_a_rerun_free(server, tmp_path):
    cache = tmp_path / "cache.sqlite"
    first = {r.key: r.text for r in teacher(server, cache_path=cache).complete(requests(4))}
    assert server.request_count == 4

    again = teacher(server, cache_path=cache)
    results = list(again.complete(requests(4)))
    assert server.request_count == 4  # nothing sent
    assert {r.key: r.text for r in results} == first and all(r.cached for r in results)
    assert again.stats.cache_hits == 4 and again.stats.requests == 0 and again.stats.cost == 0

    [changed] = teacher(server, cache_path=cache).complete(requests(1, temperature=0.1))
    assert server.request_count == 5 and not changed.cached  # params are part of the key


def test_cost_limit_stops_sending(server):
    server.respond = lambda body: FakeReply("ok", prompt_tokens=1_000_000, completion_tokens=0)
    client = teacher(server, price_input_per_1m=1.0, max_cost=2.5, concurrency=1)
    results = list(client.complete(requests(6)))
    assert sum(r.ok for r in results) == 3  # 1.0 + 1.0 < 2.5, the third reaches 3.0
    assert [r.error for r in results if not r.ok] == ["cost limit reached"] * 3
    assert server.request_count == 3 and client.stats.cost == pytest.approx(3.0)


def test_request_limit_counts_retries(server):
    server.push(FakeReply(status=500))
    client = teacher(server, max_requests=3, concurrency=1)
    results = sorted(client.complete(requests(4)), key=lambda result: result.key)
    assert [r.ok for r in results] == [True, True, False, False]
    assert results[-1].error == "request limit reached" and server.request_count == 3


def reject_non_json(request: TeacherRequest, text: str) -> None:
    if not text.startswith("{"):
        raise ValueError("not a JSON object")


def test_rejected_answers_are_asked_again_with_another_seed(server, tmp_path):
    server.push(FakeReply("garbage"))
    server.respond = lambda body: '{"score": 7}'
    client = OpenAITeacher(
        TeacherConfig(model="m", base_url=server.base_url, cache_path=tmp_path / "c.sqlite"),
        validate=reject_non_json,
    )
    [result] = client.complete(requests(1, seed=5))
    assert result.text == '{"score": 7}'
    assert [body["seed"] for body in server.received] == [5, 6]
    assert client.stats.rejected_answers == 1 and client.stats.answered == 1


def test_answers_rejected_every_time_are_reported_and_a_rerun_is_free(server, tmp_path):
    server.respond = lambda body: "garbage"
    config = TeacherConfig(
        model="m", base_url=server.base_url, cache_path=tmp_path / "c.sqlite", max_answer_tries=3
    )
    [result] = OpenAITeacher(config, validate=reject_non_json).complete(requests(1))
    assert result.error == "invalid answer after 3 tries: not a JSON object"
    assert server.request_count == 3
    list(OpenAITeacher(config, validate=reject_non_json).complete(requests(1)))
    assert server.request_count == 3  # the bad answers come back from the cache


def test_concurrency_is_bounded_and_used(server):
    server.latency_s = 0.2
    client = teacher(server, concurrency=4)
    start = time.monotonic()
    assert len(list(client.complete(requests(12)))) == 12
    assert server.max_in_flight == 4
    assert time.monotonic() - start < 12 * 0.2 * 0.75  # sequential would take 2.4 s


def test_retry_after_header_forms():
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    in_ten_seconds = retry_after_seconds({"retry-after": formatdate(time.time() + 10, usegmt=True)})
    assert 8 <= in_ten_seconds <= 10
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="concurrency"):
        TeacherConfig(model="m", concurrency=0)
    with pytest.raises(ValueError, match="--model"):
        TeacherConfig(model="")
