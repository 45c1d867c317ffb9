"""`llavakit web`: the Gradio page driven in headless Chromium: upload, ask, see the answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from serving import free_port
from test_image import png_header_only

from llavakit.infer.chat import ChatSession
from llavakit.infer.engine import Engine, SamplingParams
from llavakit.infer.server import ServerConfig
from llavakit.infer.web import EngineBackend, UploadError, WebOptions, build_app, uploaded_image

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


@needs_chromium
def test_upload_ask_and_see_the_streamed_answer(tiny_checkpoint, tmp_path, one_torch_thread):
    from playwright.sync_api import expect, sync_playwright

    image = Image.new("RGB", (40, 30), (200, 10, 10))
    image.save(tmp_path / "red.png")
    (tmp_path / "notes.png").write_text("these are notes, not pixels")
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
            # A text file named like an image: the page says so, in its own words.
            page.locator("#image input[type=file]").set_input_files(str(tmp_path / "notes.png"))
            expect(page.locator("#image-notice")).to_contain_text(
                "notes.png cannot be used as the image: not a recognised image file",
                timeout=15_000,
            )
            page.locator("#image input[type=file]").set_input_files(str(tmp_path / "red.png"))
            expect(page.locator("#image img")).to_be_visible(timeout=15_000)
            expect(page.locator("#image-notice")).not_to_contain_text("cannot", timeout=15_000)
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


def upload(path: Path, name: str) -> dict:
    """The payload Gradio hands a `preprocess=False` handler for an uploaded file."""
    return {"path": str(path), "orig_name": name, "url": None, "meta": {"_type": "gradio.FileData"}}


def test_uploads_are_read_with_the_servers_pixel_limit(tmp_path):
    assert WebOptions().max_image_pixels == ServerConfig().max_image_pixels
    text = tmp_path / "abc123"
    text.write_text("these are notes, not pixels")
    with pytest.raises(UploadError, match=r"^notes.png cannot be used as the image: not a recog"):
        uploaded_image(upload(text, "notes.png"), 40_000_000)
    huge = tmp_path / "def456"
    huge.write_bytes(png_header_only(12_000, 12_000))  # 144 megapixels, a few bytes on disk
    with pytest.raises(
        UploadError, match=r"^poster.png .*144000000 pixels exceeds the limit of 40"
    ):
        uploaded_image(upload(huge, "poster.png"), 40_000_000)
    red = tmp_path / "ghi789"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(red, format="PNG")
    assert uploaded_image(upload(red, "red.png"), 40_000_000).size == (40, 30)
    with pytest.raises(UploadError, match="1200 pixels exceeds the limit of 1000"):
        uploaded_image(upload(red, "red.png"), 1_000)
    assert uploaded_image(None, 1_000) is None


def test_the_page_answers_a_bad_upload_with_a_message(tiny_checkpoint, tmp_path, one_torch_thread):
    """Through Gradio's own server and client: the upload event says what is wrong."""
    from gradio_client import Client, handle_file

    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "huge.png").write_bytes(png_header_only(12_000, 12_000))
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    app = build_app(EngineBackend(Engine.load(tiny_checkpoint, device="cpu")))
    port = free_port()
    app.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        ssr_mode=False,
        quiet=True,
    )
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)

        def take(name):
            return client.predict(handle_file(str(tmp_path / name)), api_name="/take_image")

        image, chat, notice = take("notes.png")
        assert image is None and chat == []  # the bad upload is cleared from the page
        assert notice == "notes.png cannot be used as the image: not a recognised image file"
        _, _, notice = take("huge.png")
        assert notice.startswith("huge.png cannot be used as the image: 12000x12000")
        assert take("red.png")[2] == ""
    finally:
        app.close()


def test_web_needs_exactly_one_model_source(tiny_checkpoint, capsys):
    from llavakit.cli import main

    assert main(["web"]) == 2
    assert main(["web", str(tiny_checkpoint), "--server-url", "http://127.0.0.1:1/v1"]) == 2
    assert "exactly one" in capsys.readouterr().err
