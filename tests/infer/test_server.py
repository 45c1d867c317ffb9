"""`llavakit serve`: a real server subprocess driven by the official openai client and raw HTTP.

The subprocess is the command users run; a second, in-process app (same code, ASGI transport)
covers what needs a configuration of its own: the concurrency limit and operator-allowed files.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import time

import httpx
import openai
import pytest
import torch
from PIL import Image
from serving import serve_subprocess

from llavakit.infer.engine import Engine, Request, SamplingParams
from llavakit.infer.server import ServerConfig, create_app
from llavakit.infer.server_batching import AdmissionGate, BatchScheduler, Job
from llavakit.infer.web import ServerBackend, png_data_url

API_KEY = "sk-test-key"
MAX_IMAGE_BYTES = 30_000
MAX_TOKENS = 64
QUESTIONS = [
    "What is in the image?",
    "How many objects are there?",
    "Describe the image briefly.",
    "What colour is the star? Is there a cat?",
]


def colour_image(index: int) -> Image.Image:
    colour = ((60 * index) % 256, (200 - 50 * index) % 256, (90 + 70 * index) % 256)
    return Image.new("RGB", (24 + 6 * index, 30), colour)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads thrash."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    """`llavakit serve` on a free port; yields its base URL, stops it afterwards."""
    arguments = [
        "--api-key",
        API_KEY,
        "--served-model-name",
        "tiny-llava",
        "--max-batch-size",
        "16",
        "--batch-window-ms",
        "30",
        "--max-concurrent",
        "64",
        "--max-image-bytes",
        str(MAX_IMAGE_BYTES),
        "--max-image-pixels",
        "250000",
        "--max-tokens",
        str(MAX_TOKENS),
    ]
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with serve_subprocess(tiny_checkpoint, arguments, log_path) as (base, _):
        yield base


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return Engine.load(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0)


def image_message(text: str, image: Image.Image) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": png_data_url(image)}},
                {"type": "text", "text": text},
            ],
        }
    ]


def greedy(engine, text, image, max_tokens):
    return engine.complete(
        Request(
            [{"role": "user", "content": f"<image>\n{text}"}],
            [image],
            SamplingParams(max_new_tokens=max_tokens),
        )
    )


def test_models_and_health(server, client):
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}
    assert [m.id for m in client.models.list().data] == ["tiny-llava"]


def test_openai_client_plain_and_streamed(server, client, engine):
    image = colour_image(1)
    messages = image_message("What is in the image?", image)
    plain = client.chat.completions.create(
        model="tiny-llava", messages=messages, max_tokens=16, temperature=0
    )
    expected = greedy(engine, "What is in the image?", image, 16)
    answer = plain.choices[0].message.content
    assert answer == expected.text and answer
    assert plain.choices[0].finish_reason == expected.finish_reason
    assert plain.usage.prompt_tokens == expected.prompt_tokens > 16  # 16 image features
    assert plain.usage.completion_tokens == expected.completion_tokens
    assert plain.usage.total_tokens == expected.prompt_tokens + expected.completion_tokens

    stream = client.chat.completions.create(
        model="tiny-llava",
        messages=messages,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1  # really streamed, not one final blob
    assert "".join(pieces) == answer
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[
        0
    ].finish_reason
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens

    # Stop strings are honoured (an ASCII piece of the answer, so no partial character).
    start = next(i for i in range(1, len(answer) - 1) if answer[i : i + 2].isascii())
    cut = answer[start : start + 2]
    stopped = client.chat.completions.create(
        model="tiny-llava", messages=messages, max_tokens=16, temperature=0, stop=cut
    )
    assert stopped.choices[0].message.content == answer[: answer.find(cut)].strip()
    assert stopped.choices[0].finish_reason == "stop"


def test_plain_string_content(client, engine):
    answer = client.chat.completions.create(
        model="tiny-llava",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=6,
        temperature=0,
    )
    expected = engine.complete(
        Request(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            params=SamplingParams(max_new_tokens=6),
        )
    )
    assert answer.choices[0].message.content == expected.text


def test_more_tokens_than_the_limit_ends_with_length(server, client, engine):
    """Asking above --max-tokens is answered like OpenAI's cut output, not refused."""
    messages = image_message("Describe the image briefly.", colour_image(3))
    answer = client.chat.completions.create(
        model="tiny-llava", messages=messages, max_tokens=10_000, temperature=0
    )
    prompt = answer.usage.prompt_tokens
    allowed = min(MAX_TOKENS, 128 - prompt)  # the server's limit, or what the context leaves
    expected = greedy(engine, "Describe the image briefly.", colour_image(3), allowed)
    assert answer.choices[0].message.content == expected.text
    assert answer.usage.completion_tokens == expected.completion_tokens <= allowed
    cut = expected.completion_tokens == allowed
    assert (
        answer.choices[0].finish_reason == expected.finish_reason == ("length" if cut else "stop")
    )


def test_a_long_prompt_gets_what_the_context_leaves(client, engine):
    image = colour_image(2)
    question = "Describe the image"
    while len(prompt_ids(engine, question, image)) < 100:  # of the 128-token context
        question += " and its colours"
    answer = client.chat.completions.create(
        model="tiny-llava", messages=image_message(question, image), max_tokens=64, temperature=0
    )
    room = 128 - answer.usage.prompt_tokens
    assert 0 < room < MAX_TOKENS  # so the context, not max_tokens, is the limit here
    expected = greedy(engine, question, image, room)
    assert answer.choices[0].message.content == expected.text
    assert answer.usage.completion_tokens == expected.completion_tokens <= room
    assert answer.choices[0].finish_reason == expected.finish_reason


def prompt_ids(engine, text, image):
    messages = [{"role": "user", "content": f"<image>\n{text}"}]
    return engine.processor.encode(messages, [image], add_generation_prompt=True).input_ids


def test_any_model_name_is_answered_by_a_single_model_server(client):
    for name in ("gpt-4o", "llava-hf/llava-1.5-7b-hf", "tiny-llava"):
        answer = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
        assert answer.model == "tiny-llava"  # the model that really answered
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"


def test_penalties_reach_the_model(client, engine):
    plain = greedy(engine, "What is in the image?", colour_image(1), 20)
    # Discourage repeats if the random tiny model repeats itself, else encourage them: either
    # way the answer must change if the penalties reach the model.
    repeats = len(set(plain.token_ids)) < len(plain.token_ids)
    presence, frequency = (1.5, 0.5) if repeats else (-2.0, -1.0)
    penalised = client.chat.completions.create(
        model="tiny-llava",
        messages=image_message("What is in the image?", colour_image(1)),
        max_tokens=20,
        temperature=0,
        presence_penalty=presence,
        frequency_penalty=frequency,
    )
    expected = engine.complete(
        Request(
            [{"role": "user", "content": "<image>\nWhat is in the image?"}],
            [colour_image(1)],
            SamplingParams(
                max_new_tokens=20, presence_penalty=presence, frequency_penalty=frequency
            ),
        )
    )
    assert penalised.choices[0].message.content == expected.text != plain.text


def test_web_server_backend_streams_the_same_answer(server, engine):
    backend = ServerBackend(f"{server}/v1", API_KEY)
    image = colour_image(2)
    pieces = list(
        backend.stream([], "Describe the image briefly.", image, SamplingParams(max_new_tokens=12))
    )
    assert "".join(pieces) == greedy(engine, "Describe the image briefly.", image, 12).text


def post(server, body=None, *, key=API_KEY, content=None, content_type="application/json"):
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(
        f"{server}/v1/chat/completions", json=body, content=content, headers=headers, timeout=30
    )


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noisy_image(size: int) -> Image.Image:
    """Random pixels: a PNG that does not compress, so its byte size is about 3 * size^2."""
    return Image.frombytes("RGB", (size, size), os.urandom(3 * size * size))


def with_image(url: str, text: str = "What is this?") -> dict:
    return {
        "model": "tiny-llava",
        "max_tokens": 4,
        "temperature": 0,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": text},
                ],
            }
        ],
    }


def data_url(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


HELLO = {"model": "tiny-llava", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
BAD_REQUESTS = {
    "malformed JSON": (dict(content=b'{"messages": [', body=None), 400, None, "not valid JSON"),
    "JSON array body": (dict(content=b"[1, 2]", body=None), 400, None, "JSON object"),
    "form content type": (
        dict(content=b"messages=hi", body=None, content_type="application/x-www-form-urlencoded"),
        415,
        None,
        "application/json",
    ),
    "missing messages": (dict(body={"model": "tiny-llava"}), 400, "messages", "non-empty list"),
    "n=2": (dict(body={**HELLO, "n": 2}), 400, "n", "n=1"),
    "logprobs": (dict(body={**HELLO, "logprobs": True}), 400, "logprobs", "not supported"),
    "JSON mode": (
        dict(body={**HELLO, "response_format": {"type": "json_object"}}),
        400,
        "response_format",
        "text",
    ),
    "no tokens": (dict(body={**HELLO, "max_tokens": 0}), 400, "max_tokens", "at least 1"),
    "presence penalty": (
        dict(body={**HELLO, "presence_penalty": 2.5}),
        400,
        "presence_penalty",
        "between -2.0 and 2.0",
    ),
    "temperature": (dict(body={**HELLO, "temperature": "hot"}), 400, "temperature", "number"),
    "unknown role": (
        dict(body={**HELLO, "messages": [{"role": "robot", "content": "x"}]}),
        400,
        "messages[0].role",
        "robot",
    ),
    "unknown part": (
        dict(body={**HELLO, "messages": [{"role": "user", "content": [{"type": "audio"}]}]}),
        400,
        "messages[0].content[0].type",
        "audio",
    ),
    "reserved tag": (
        dict(body={**HELLO, "messages": [{"role": "user", "content": "<image> hi"}]}),
        400,
        "messages[0].content",
        "<image>",
    ),
    "turn order": (
        dict(body={**HELLO, "messages": [{"role": "assistant", "content": "hi"}]}),
        400,
        "messages",
        "user",
    ),
    "missing key": (dict(body=HELLO, key=None), 401, None, "Authorization"),
    "wrong key": (dict(body=HELLO, key="sk-wrong"), 401, None, "incorrect API key"),
    "file URL": (dict(body=with_image("file:///etc/passwd")), 400, "messages", "disabled"),
    "remote URL": (
        dict(body=with_image("http://127.0.0.1:1/cat.png")),
        400,
        "messages",
        "disabled",
    ),
    "not an image": (dict(body=with_image(data_url(b"not a png"))), 400, "messages", "image 1"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_bad_requests_get_openai_errors(server, case):
    kwargs, status, param, words = BAD_REQUESTS[case]
    response = post(server, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert words in error["message"]
    assert error["type"] == "invalid_request_error"


def test_oversized_images_and_bodies_are_refused(server):
    big = png_bytes(noisy_image(120))  # ~43 kB > 30 kB
    assert len(big) > MAX_IMAGE_BYTES
    response = post(server, with_image(data_url(big)))
    assert response.status_code == 400
    assert f"{MAX_IMAGE_BYTES}-byte limit" in response.json()["error"]["message"]

    huge = png_bytes(Image.new("RGB", (600, 600)))  # small file, 360k pixels > 250k
    assert len(huge) < MAX_IMAGE_BYTES
    response = post(server, with_image(data_url(huge)))
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_image"

    body = b'{"messages": "' + b"x" * (9 * MAX_IMAGE_BYTES * 4 // 3 + (1 << 20)) + b'"}'
    response = post(server, content=body, body=None)
    assert response.status_code == 413 and "byte limit" in response.json()["error"]["message"]


def test_unknown_routes_and_metrics_need_the_key(server):
    response = httpx.get(f"{server}/v1/nothing", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 404 and "error" in response.json()
    assert httpx.get(f"{server}/metrics").status_code == 401


def test_64_concurrent_requests_are_batched_and_equal_sequential_answers(server, engine):
    cases = [(QUESTIONS[i % 4], (i // 4) % 4, 8 + 2 * (i % 4)) for i in range(64)]  # 16 kinds
    expected = {
        case: greedy(engine, case[0], colour_image(case[1]), case[2]).text for case in set(cases)
    }
    before = httpx.get(f"{server}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).json()

    async def ask_all():
        async with openai.AsyncOpenAI(
            base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=120
        ) as client:
            return await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model="tiny-llava",
                        messages=image_message(question, colour_image(image)),
                        max_tokens=max_tokens,
                        temperature=0,
                    )
                    for question, image, max_tokens in cases
                )
            )

    answers = asyncio.run(ask_all())
    assert len(answers) == 64
    assert len({a.id for a in answers}) == 64
    for case, answer in zip(cases, answers):
        assert answer.choices[0].message.content == expected[case]
        assert answer.usage.completion_tokens <= case[2]
    after = httpx.get(f"{server}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert after["responses_by_status"]["200"] - before["responses_by_status"]["200"] == 64
    assert after["in_flight"] == 0
    assert after["max_batch_size_seen"] > 1
    new_batches = after["batches"] - before["batches"]
    assert new_batches < 64  # requests shared forward passes
    served = sum(int(size) * count for size, count in after["batch_size_histogram"].items())
    assert served == after["responses_by_status"]["200"]  # every answered request was generated


# ---- in-process app: limits that need a configuration of their own -----------------------------
def test_strict_model_name_refuses_other_names(engine):
    app = create_app(engine, ServerConfig(model_name="tiny-llava", strict_model_name=True))
    hello = {**HELLO, "model": "gpt-9"}

    async def ask():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            chat = await http.post("/v1/chat/completions", json=hello)
            card = await http.get("/v1/models/gpt-9")
            own = await http.post("/v1/chat/completions", json=HELLO)
        return chat, card, own

    try:
        chat, card, own = asyncio.run(ask())
    finally:
        app.state.scheduler.close()
    assert chat.status_code == 404 and chat.json()["error"]["param"] == "model"
    assert "'gpt-9' does not exist" in chat.json()["error"]["message"]
    assert card.status_code == 404 and own.status_code == 200


def test_concurrency_limit_answers_429_and_local_files_when_allowed(engine, tmp_path):
    image_path = tmp_path / "red.png"
    colour_image(0).save(image_path)
    config = ServerConfig(
        model_name="tiny-llava",
        max_concurrent=2,
        batch_window_ms=800,  # the admitted pair waits here, so the others find no room
        batch_max_wait_ms=800,
        allow_local_files=True,
        max_tokens=8,
    )
    app = create_app(engine, config)
    body = with_image(image_path.as_uri())
    expected = greedy(engine, "What is this?", colour_image(0), 4).text
    batches_before = len(engine.batch_sizes)

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            responses = await asyncio.gather(
                *(http.post("/v1/chat/completions", json=body) for _ in range(5))
            )
            metrics = (await http.get("/metrics")).json()
        return responses, metrics

    try:
        responses, metrics = asyncio.run(burst())
    finally:
        app.state.scheduler.close()
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 429, 429, 429]
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["Retry-After"] == "1"  # seconds, as HTTP asks of a 429
    answers = {r.json()["choices"][0]["message"]["content"] for r in responses if r.is_success}
    assert answers == {expected}
    assert engine.batch_sizes[batches_before:] == [2]  # the admitted pair shared one batch
    assert metrics["in_flight"] == 0 and metrics["responses_by_status"] == {"200": 2, "429": 3}


def test_scheduler_keeps_a_returning_group_together(engine):
    """Clients answered together come back a few ms apart; they still share the next batch."""
    scheduler = BatchScheduler(engine, max_batch_size=8, window_s=0.01, max_wait_s=1.0)
    gate = AdmissionGate(16)
    loop = asyncio.new_event_loop()  # receives the events; nobody needs to read them here
    request = Request([{"role": "user", "content": "Hi"}], [], SamplingParams(max_new_tokens=2))

    def send(count: int, gap_s: float) -> None:
        for _ in range(count):
            assert gate.try_enter()
            scheduler.announce()
            scheduler.submit(Job(request, False, loop, gate))
            time.sleep(gap_s)
        while gate.count:  # until the scheduler has answered them all
            time.sleep(0.005)

    before = len(engine.batch_sizes)
    try:
        send(3, 0)
        send(3, 0.05)  # gaps five times the window, but the group of three returns
        time.sleep(1.1)  # long after the last batch: a lone request waits one window only
        started = time.monotonic()
        send(1, 0)
        lone_s = time.monotonic() - started
    finally:
        scheduler.close()
        loop.close()
    assert engine.batch_sizes[before:] == [3, 3, 1]
    assert lone_s < 0.9  # not held back for the max wait (1 s) expecting a group
