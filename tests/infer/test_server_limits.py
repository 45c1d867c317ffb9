"""The server's request budget (issue 16): a request costs at most what the model could use.

The huge request is sent to the real `llavakit serve` subprocess with the default image limits,
under which a 50 MB text message is a body the server must read: it is refused quickly, never
tokenised, and the server's memory stays bounded and comes back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from serving import serve_subprocess

from llavakit.infer.engine import Engine
from llavakit.infer.server_limits import RequestBudget
from llavakit.infer.server_protocol import ApiError

HUGE_TEXT_BYTES = 50 * 1024 * 1024
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return Engine.load(tiny_checkpoint, device="cpu")


def memory_mib(pid: int) -> dict[str, float]:
    """Resident set size now and at its peak (VmHWM), from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return fields


def test_budget_is_sized_for_the_context(engine):
    processor = engine.processor
    budget = RequestBudget.for_engine(engine, max_images=100, max_image_bytes=1000)
    longest = max(len(token) for token in processor.tokenizer.get_vocab())
    assert budget.context_tokens == engine.context_length == processor.model_config.max_length
    assert budget.context_tokens == 128  # the tiny Llama has 512 positions
    assert budget.chars_per_token == longest
    assert budget.tokens_per_image == 16
    assert budget.max_images == 128 // 16  # 100 allowed, 8 can fit
    assert budget.max_text_chars == 128 * longest
    # No text of max_text_chars characters or fewer can be more tokens than the bound says.
    text = "".join(sorted(processor.tokenizer.get_vocab(), key=len)[-20:]) * 64
    tokens = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert tokens >= len(text) / budget.chars_per_token


def test_budget_refuses_what_cannot_fit_before_tokenising(engine):
    budget = RequestBudget.for_engine(engine, max_images=8, max_image_bytes=1000)
    room_for_an_image = budget.max_text_chars - 16 * budget.chars_per_token
    text = [{"role": "user", "content": "x" * room_for_an_image}]
    budget.check(text, n_images=1)  # at least 112 + 16 tokens: it may fit, so it is tokenised
    with pytest.raises(ApiError, match=r"at least 144 tokens .* 2 images\), more than .* 128"):
        budget.check(text, n_images=2)
    too_long = [{"role": "user", "content": "x" * (budget.max_text_chars + 1)}]
    with pytest.raises(ApiError, match=r"at least 129 tokens .* context of 128") as refused:
        budget.check(too_long, n_images=0)
    assert refused.value.code == "context_length_exceeded" and refused.value.status == 400


@pytest.fixture(scope="module")
def default_limits_server(tiny_checkpoint, tmp_path_factory):
    """The server with the default 20 MB images: its body limit admits a 50 MB text message."""
    log_path = tmp_path_factory.mktemp("serve-limits") / "serve.log"
    with serve_subprocess(tiny_checkpoint, ["--max-tokens", "8"], log_path) as running:
        yield running


def test_huge_text_is_refused_fast_with_memory_bounded(default_limits_server):
    base, process = default_limits_server
    hello = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert httpx.post(f"{base}/v1/chat/completions", json=hello, timeout=60).status_code == 200
    before = memory_mib(process.pid)
    huge = {"messages": [{"role": "user", "content": "word " * (HUGE_TEXT_BYTES // 5)}]}
    body = json.dumps(huge).encode()
    assert len(body) > HUGE_TEXT_BYTES
    del huge

    started = time.monotonic()
    response = httpx.post(
        f"{base}/v1/chat/completions",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    elapsed = time.monotonic() - started
    after = memory_mib(process.pid)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "context of 128 tokens" in error["message"]
    # Unbounded, this took minutes of tokenising and a peak of gigabytes (issue 16).
    assert elapsed < 15, f"refused after {elapsed:.1f} s"
    peak_growth = after["VmHWM"] - before["VmHWM"]
    assert peak_growth < 8 * HUGE_TEXT_BYTES / MiB, (before, after)
    assert after["VmRSS"] - before["VmRSS"] < 100, (before, after)  # given back
    assert httpx.post(f"{base}/v1/chat/completions", json=hello, timeout=60).status_code == 200
    print(f"refused in {elapsed:.2f} s; memory before {before}, after {after} (MiB)")
