"""`llavakit web`: the Gradio page driven in headless Chromium: upload, ask, see the answer."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from PIL import Image

from llavakit.infer.chat import ChatSession
from llavakit.infer.engine import Engine, SamplingParams
from llavakit.infer.web import EngineBackend, build_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
QUESTION = "How many objects are there?"

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (apt-get install -y chromium)"
)


@pytest.fixture()
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads thrash."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@needs_chromium
def test_upload_ask_and_see_the_streamed_answer(tiny_checkpoint, tmp_path, one_torch_thread):
    from playwright.sync_api import expect, sync_playwright

    image = Image.new("RGB", (40, 30), (200, 10, 10))
    image.save(tmp_path / "red.png")
    engine = Engine.load(tiny_checkpoint, device="cpu")
    expected = ChatSession(engine, SamplingParams(max_new_tokens=12), image).ask(QUESTION)
    blind = ChatSession(engine, SamplingParams(max_new_tokens=12)).ask(QUESTION)
    assert expected != blind  # so seeing `expected` proves the uploaded image reached the model
    app = build_app(EngineBackend(engine))
    port = free_port()
    app.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        ssr_mode=False,
        quiet=True,
    )
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#image input[type=file]").set_input_files(str(tmp_path / "red.png"))
            expect(page.locator("#image img")).to_be_visible(timeout=15_000)
            for slider, value in (("#temperature", "0"), ("#max-tokens", "12")):
                number = page.locator(f"{slider} input[type=number]")
                number.fill(value)
                number.press("Tab")
            page.locator("#question textarea").fill(QUESTION)
            page.locator("#question textarea").press("Enter")
            bot = page.locator("#chatbot .message.bot").last
            expect(bot).to_have_text(expected, timeout=20_000)
            expect(page.locator("#chatbot .message.user")).to_have_text(QUESTION)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "web.png"), full_page=True)

            page.locator("#clear").click()
            expect(page.locator("#chatbot .message")).to_have_count(0, timeout=10_000)
            browser.close()
    finally:
        app.close()


def test_web_needs_exactly_one_model_source(tiny_checkpoint, capsys):
    from llavakit.cli import main

    assert main(["web"]) == 2
    assert main(["web", str(tiny_checkpoint), "--server-url", "http://127.0.0.1:1/v1"]) == 2
    assert "exactly one" in capsys.readouterr().err
