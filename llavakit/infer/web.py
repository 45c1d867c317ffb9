"""`llavakit web`: a Gradio chat page: upload an image, ask questions, watch answers stream.

The page talks to a `ChatBackend`: either the generation engine in this process (the same
`ChatSession` the terminal chat uses) or any OpenAI-compatible server such as `llavakit serve`,
through the official `openai` client. The conversation lives in the page's session state as plain
`{"role", "content"}` messages; changing the image starts a new conversation, because the image
belongs to the first user turn.

Uploads are read by llavakit's own loader, not Gradio's: the page refuses the same images as
`llavakit serve` (the pixel limit is checked from the header, before decoding), and a file that
is not an image gets a message that says so instead of Gradio's generic preprocessing error.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from llavakit.image import ImageLoadError, load_image
from llavakit.infer import defaults
from llavakit.infer.chat import ChatSession
from llavakit.infer.engine import Engine, SamplingParams
from llavakit.infer.images import ImagePolicy, ImageSourceError, resolve_image

MAX_TOKENS_LIMIT = 2048


@dataclass
class WebOptions:
    """What `llavakit web` was asked to do."""

    checkpoint: Path | None = None
    """Run this checkpoint in-process (exclusive with server_url)."""
    server_url: str | None = None
    """OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1."""
    api_key: str | None = None
    model: str | None = None
    """Model id at server_url; default: the first one it lists."""
    host: str = "127.0.0.1"
    port: int = 7860
    max_image_pixels: int = defaults.MAX_IMAGE_PIXELS
    """Uploads with a larger canvas are refused (the same limit as `llavakit serve`)."""
    device: str = "auto"
    dtype: str = "auto"
    load_in_bits: int | None = None
    device_map: str | None = None


class ChatBackend(Protocol):
    description: str

    def stream(
        self,
        history: list[dict],
        text: str,
        image: Image.Image | None,
        params: SamplingParams,
    ) -> Iterator[str]:
        """Pieces of the answer to `text` after `history` (the image goes with turn one)."""
        ...


class EngineBackend:
    """The model in this process."""

    def __init__(self, engine: Engine, description: str = "in-process model"):
        self.engine = engine
        self.description = description

    def stream(self, history, text, image, params) -> Iterator[str]:
        session = ChatSession(self.engine, params, image, list(history))
        yield from session.stream(text)


class ServerBackend:
    """An OpenAI-compatible server, reached with the official client."""

    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key or "none")
        if model is None:
            models = self.client.models.list().data
            if not models:
                raise ValueError(f"the server at {base_url} lists no models")
            model = models[0].id
        self.model = model
        self.description = f"{model} at {base_url}"

    def stream(self, history, text, image, params) -> Iterator[str]:
        response = self.client.chat.completions.create(
            model=self.model,
            messages=openai_messages(history, text, image),
            stream=True,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
        )
        for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content


def openai_messages(history: list[dict], text: str, image: Image.Image | None) -> list[dict]:
    """The conversation in OpenAI's format, the image as a PNG data URL in the first user turn."""
    messages = [{"role": m["role"], "content": m["content"]} for m in history]
    messages.append({"role": "user", "content": text})
    if image is not None:
        first = next(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[first]["content"] = [
            {"type": "image_url", "image_url": {"url": png_data_url(image)}},
            {"type": "text", "text": messages[first]["content"]},
        ]
    return messages


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class UploadError(ValueError):
    """An upload that cannot be used as the conversation's image; the message says why."""


def uploaded_image(payload: dict | None, max_pixels: int) -> Image.Image | None:
    """The image of a raw Gradio upload payload (`{"path", "orig_name", "url", ...}`), or None.

    Read with llavakit's loader under the server's pixel limit; UploadError names the file as
    the user called it, never Gradio's cache path.
    """
    if not payload:
        return None
    name = payload.get("orig_name") or "the uploaded file"
    path = payload.get("path")
    try:
        if path:
            return load_image(Path(path), max_pixels=max_pixels)
        url = payload.get("url") or ""
        return resolve_image(url, ImagePolicy(allow_local_files=False, max_pixels=max_pixels))
    except (ImageLoadError, ImageSourceError) as error:
        reason = str(error).removeprefix(f"cannot load image {path}: ")
        raise UploadError(f"{name} cannot be used as the image: {reason}") from None


def build_app(backend: ChatBackend, max_image_pixels: int = defaults.MAX_IMAGE_PIXELS):
    """The Gradio Blocks page (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local UI
    import gradio as gr

    def take_image(payload):
        """A new image (or none): check it, keep it, and start a new conversation.

        A refused upload is cleared from the page, which fires this again with None; the notice
        saying why is left in place then.
        """
        if not payload:
            return gr.skip(), None, [], [], gr.skip()
        try:
            picture = uploaded_image(payload, max_image_pixels)
        except UploadError as error:
            gr.Warning(str(error))
            return None, None, [], [], str(error)
        return gr.skip(), picture, [], [], ""

    def respond(text, conversation, image, temperature, top_p, max_tokens):
        text = (text or "").strip()
        if not text:
            yield gr.skip(), gr.skip(), gr.skip()
            return
        params = SamplingParams(
            max_new_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p)
        )
        shown = [*conversation, {"role": "user", "content": text}]
        answer = ""
        yield "", [*shown, {"role": "assistant", "content": "…"}], conversation
        try:
            for piece in backend.stream(conversation, text, image, params):
                answer += piece
                yield "", [*shown, {"role": "assistant", "content": answer}], conversation
        except Exception as error:  # shown in the page instead of a silent failure
            raise gr.Error(f"{type(error).__name__}: {error}") from None
        done = [*shown, {"role": "assistant", "content": answer}]
        yield "", done, done

    with gr.Blocks(title="llavakit chat", analytics_enabled=False) as app:
        gr.Markdown(f"## llavakit chat\nTalking to {backend.description}.")
        conversation = gr.State([])
        picture = gr.State(None)  # the checked upload as a PIL image; `image` only shows it
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(
                    type="filepath",
                    label="Image",
                    sources=["upload", "clipboard"],
                    height=280,
                    elem_id="image",
                )
                notice = gr.Markdown("", elem_id="image-notice")
                temperature = gr.Slider(
                    0,
                    2,
                    value=0.2,
                    step=0.05,
                    label="Temperature (0 = greedy)",
                    elem_id="temperature",
                )
                top_p = gr.Slider(0.05, 1, value=1.0, step=0.05, label="Top-p", elem_id="top-p")
                max_tokens = gr.Slider(
                    1,
                    MAX_TOKENS_LIMIT,
                    value=256,
                    step=1,
                    label="Max new tokens",
                    elem_id="max-tokens",
                )
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Conversation", elem_id="chatbot", height=420)
                question = gr.Textbox(
                    placeholder="Ask about the image, then press Enter",
                    show_label=False,
                    elem_id="question",
                )
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    clear = gr.Button("Clear", elem_id="clear")
        inputs = [question, conversation, picture, temperature, top_p, max_tokens]
        outputs = [question, chatbot, conversation]
        question.submit(respond, inputs, outputs)
        send.click(respond, inputs, outputs)
        # preprocess=False: the handler gets the upload's payload, not Gradio's decoded image.
        image.change(
            take_image,
            image,
            [image, picture, chatbot, conversation, notice],
            preprocess=False,
        )
        clear.click(
            lambda: (None, None, [], [], ""),
            None,
            [image, picture, chatbot, conversation, question],
        )
    return app


def run_web(options: WebOptions) -> None:
    """Build the backend, then serve the page until interrupted."""
    if options.server_url:
        backend: ChatBackend = ServerBackend(options.server_url, options.api_key, options.model)
    else:
        engine = Engine.load(
            options.checkpoint,
            device=options.device,
            dtype=options.dtype,
            load_in_bits=options.load_in_bits,
            device_map=options.device_map,
        )
        backend = EngineBackend(engine, f"{Path(options.checkpoint).name} (in-process)")
    build_app(backend, options.max_image_pixels).launch(
        server_name=options.host, server_port=options.port, ssr_mode=False, show_error=True
    )
