"""The generation engine: batching, streaming, stop strings, sampling, image sources."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from llavakit.infer.engine import Engine, Request, SamplingParams
from llavakit.infer.images import ImagePolicy, ImageSourceError, resolve_image

RED = Image.new("RGB", (40, 30), (200, 10, 10))
BLUE = Image.new("RGB", (30, 50), (10, 10, 200))


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return Engine.load(tiny_checkpoint, device="cpu")


def ask(text, images=(), **params):
    return Request([{"role": "user", "content": text}], list(images), SamplingParams(**params))


def test_batched_greedy_equals_one_by_one(engine):
    requests = [
        ask("What is in the image?", [RED], max_new_tokens=12),
        ask("Describe the image briefly, please, in a few words.", [BLUE], max_new_tokens=8),
        ask("What is 2 + 2?", max_new_tokens=10),
        ask("<image>\nCompare <image>\nthese two.", [RED, BLUE], max_new_tokens=12),
    ]
    batched = engine.generate(requests)
    assert engine.batch_sizes[-1] == 4
    for request, together in zip(requests, batched):
        alone = engine.complete(request)
        assert alone.token_ids == together.token_ids
        assert alone.text == together.text
        assert together.completion_tokens <= request.params.max_new_tokens
        assert together.prompt_tokens > 0


def test_streaming_concatenation_equals_result(engine):
    request = ask("What is in the image?", [RED], max_new_tokens=16)
    pieces = list(engine.stream(request))
    assert len(pieces) > 1
    assert "".join(pieces) == engine.complete(request).text


def test_stop_strings_are_honoured(engine):
    full = engine.complete(ask("What is in the image?", [RED], max_new_tokens=24))
    assert full.finish_reason == "length" and len(full.text) > 6
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    stopped = engine.complete(ask("What is in the image?", [RED], max_new_tokens=24, stop=(stop,)))
    assert stopped.finish_reason == "stop"
    assert stopped.text == full.text[: full.text.find(stop)].strip()
    assert stop not in stopped.text
    streamed = "".join(
        engine.stream(ask("What is in the image?", [RED], max_new_tokens=24, stop=(stop,)))
    )
    assert streamed == stopped.text


def test_seeded_sampling_is_reproducible(engine):
    params = dict(max_new_tokens=12, temperature=1.5, top_p=0.95, top_k=50, seed=7)
    a = engine.complete(ask("Hi", [RED], **params))
    b = engine.complete(ask("Hi", [RED], **params))
    c = engine.complete(ask("Hi", [RED], **{**params, "seed": 8}))
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


def test_bad_sampling_params_are_rejected(engine):
    with pytest.raises(ValueError, match="top_p"):
        engine.complete(ask("Hi", top_p=0))
    with pytest.raises(ValueError, match="temperature"):
        engine.complete(ask("Hi", temperature=-1))


def test_image_sources_follow_the_policy(tmp_path):
    buffer = io.BytesIO()
    RED.save(buffer, format="PNG")
    payload = base64.b64encode(buffer.getvalue()).decode()
    assert resolve_image(f"data:image/png;base64,{payload}").size == (40, 30)
    path = tmp_path / "red.png"
    RED.save(path)
    assert resolve_image(str(path)).size == (40, 30)
    closed = ImagePolicy(allow_local_files=False)
    with pytest.raises(ImageSourceError, match="local image files are disabled"):
        resolve_image("file:///etc/passwd", closed)
    with pytest.raises(ImageSourceError, match="remote image URLs are disabled"):
        resolve_image("http://127.0.0.1/x.png", closed)
    with pytest.raises(ImageSourceError, match="larger than"):
        resolve_image(f"data:image/png;base64,{payload}", ImagePolicy(max_bytes=10))
    with pytest.raises(ImageSourceError):
        resolve_image("data:image/png;base64,not-base64!!")
    with pytest.raises(ImageSourceError, match="cannot|not|identify"):
        resolve_image(f"data:image/png;base64,{base64.b64encode(b'garbage').decode()}")
