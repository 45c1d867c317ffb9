"""The generation engine: batching, streaming, stop strings, sampling, image sources."""

from __future__ import annotations

import base64
import io

import pytest
import torch
from PIL import Image

from llavakit.infer.engine import AnswerPenalties, Engine, Request, SamplingParams
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


def test_answer_penalties_follow_openais_rule():
    penalties = AnswerPenalties(presence_penalty=0.5, frequency_penalty=0.25)
    prompt = torch.tensor([[4, 4, 9]])
    scores = torch.zeros(1, 10)
    assert torch.equal(penalties(prompt, scores), scores)  # the prompt is never penalised
    answered = torch.tensor([[4, 4, 9, 5, 5, 7]])
    expected = torch.zeros(1, 10)
    expected[0, 5] = -(2 * 0.25 + 0.5)
    expected[0, 7] = -(0.25 + 0.5)
    assert torch.equal(penalties(answered, torch.zeros(1, 10)), expected)


def test_penalised_greedy_picks_the_penalised_argmax(engine):
    """Each token of a penalised greedy answer is the argmax of the logits minus the penalties.

    Penalties that discourage repeats and ones that encourage them (negative, as OpenAI allows):
    whether or not the random tiny model repeats itself, one of them changes its answer.
    """
    question = "What is in the image?"
    plain = engine.complete(ask(question, [RED], max_new_tokens=20))
    batch = engine.processor.prompt_batch(
        [[{"role": "user", "content": f"<image>\n{question}"}]], [[RED]]
    )
    start = batch["input_ids"].shape[1] - 1
    changed = False
    for presence, frequency in ((1.5, 0.5), (-2.0, -1.0)):
        penalised = engine.complete(
            ask(
                question,
                [RED],
                max_new_tokens=20,
                presence_penalty=presence,
                frequency_penalty=frequency,
            )
        )
        changed |= penalised.token_ids != plain.token_ids
        answer = torch.tensor([penalised.token_ids])
        ids = torch.cat([batch["input_ids"], answer[:, :-1]], dim=1)
        with torch.no_grad():
            logits = engine.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pixel_values=batch["pixel_values"],
            ).logits[0]  # [prompt + answer - 1, V]
        for step, token in enumerate(penalised.token_ids):
            counts = torch.bincount(answer[0, :step], minlength=logits.shape[-1]).float()
            adjusted = logits[start + step] - counts * frequency - (counts > 0).float() * presence
            assert adjusted[token] >= adjusted.max() - 1e-4, f"{presence}, {frequency}: {step}"
    assert changed


def test_penalties_are_checked_and_split_batches(engine):
    with pytest.raises(ValueError, match="presence_penalty must be between -2 and 2"):
        SamplingParams(presence_penalty=2.5).validate()
    requests = [ask("Hi", max_new_tokens=2), ask("Hi", max_new_tokens=2, frequency_penalty=1.0)]
    before = len(engine.batch_sizes)
    engine.generate(requests)
    assert engine.batch_sizes[before:] == [1, 1]


def test_context_length_is_the_smaller_of_max_length_and_positions(engine):
    config = engine.model.language_model.config
    positions = config.max_position_embeddings
    assert engine.context_length == engine.processor.model_config.max_length == 128 < positions
    try:
        config.max_position_embeddings = 100
        assert engine.context_length == 100
    finally:
        config.max_position_embeddings = positions
