"""`llavakit chat | serve | web`: talk to a checkpoint, serve it over HTTP, or in a browser.

    llavakit chat CKPT [--image IMG] [--query Q] [--temperature T] [--top-p P] [--max-new-tokens N]
    llavakit serve CKPT [--host H] [--port P] [--api-key KEY] [--max-batch-size B] ...
    llavakit web CKPT [--server-url URL] [--port P]

Handlers only turn arguments into calls of `llavakit.infer.chat`, `.server` and `.web`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from llavakit.cli import CommandError
from llavakit.infer import defaults


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_chat(subparsers)
    _add_serve(subparsers)
    _add_web(subparsers)


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="weights dtype (auto: float32 on CPU, bfloat16/float16 on GPU)",
    )
    parser.add_argument(
        "--load-in-bits",
        type=int,
        choices=(4, 8),
        help="quantize the language model with bitsandbytes (GPU only)",
    )
    parser.add_argument(
        "--device-map", help="split the model across GPUs with accelerate (e.g. auto)"
    )


def _add_max_image_pixels(parser: argparse.ArgumentParser) -> None:
    """The one pixel limit: `serve` and `web` refuse the same images."""
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=defaults.MAX_IMAGE_PIXELS,
        help="width x height, per image, checked before decoding (default: %(default)s)",
    )


def _add_sampling_args(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    parser.add_argument(
        "--temperature", type=float, default=0.2, help="0 means greedy (default: 0.2)"
    )
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    parser.add_argument("--seed", type=int, help="seed for reproducible sampling")


# --- chat ----------------------------------------------------------------------------------


def _add_chat(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="chat with a checkpoint about an image (one question or an interactive session)",
        description="With --query: print only the answer on stdout. Without: an interactive "
        "session with streamed answers; /image PATH starts over with another image, /reset "
        "forgets the conversation, /exit quits.",
    )
    parser.add_argument("checkpoint", type=Path, help="llavakit checkpoint folder")
    parser.add_argument("--image", type=Path, help="image to talk about")
    parser.add_argument("--query", help="ask this one question, print the answer and exit")
    _add_sampling_args(parser, max_new_tokens=512)
    _add_engine_args(parser)
    parser.set_defaults(func=_chat)


def _chat(args: argparse.Namespace) -> int:
    from llavakit.infer.chat import ChatOptions, run_chat
    from llavakit.infer.engine import SamplingParams

    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    params.validate()
    return run_chat(
        ChatOptions(
            checkpoint=args.checkpoint,
            image=args.image,
            query=args.query,
            params=params,
            device=args.device,
            dtype=args.dtype,
            load_in_bits=args.load_in_bits,
            device_map=args.device_map,
        )
    )


# --- serve ---------------------------------------------------------------------------------


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a checkpoint with an OpenAI-compatible chat-completions API",
        description="FastAPI + uvicorn server: GET /v1/models, POST /v1/chat/completions "
        "(streaming with stream=true), GET /health, GET /metrics. Requests arriving together "
        "are generated as one batch.",
    )
    parser.add_argument("checkpoint", type=Path, help="llavakit checkpoint folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LLAVAKIT_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $LLAVAKIT_API_KEY, else none)",
    )
    parser.add_argument(
        "--served-model-name",
        help="model id listed and answered with (default: the checkpoint folder name)",
    )
    parser.add_argument(
        "--strict-model-name",
        action="store_true",
        help="answer 404 to requests naming another model (default: answer any name)",
    )
    parser.add_argument("--max-batch-size", type=int, default=16, help="requests per batch")
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=10.0,
        help="start a batch once no request has arrived for this long",
    )
    parser.add_argument(
        "--batch-max-wait-ms",
        type=float,
        default=100.0,
        help="...or this long after its first request, whichever comes first",
    )
    parser.add_argument(
        "--max-concurrent", type=int, default=64, help="requests in flight before answering 429"
    )
    parser.add_argument(
        "--retry-after",
        type=int,
        default=defaults.RETRY_AFTER_S,
        help="seconds a refused client is told to wait (Retry-After on 429)",
    )
    parser.add_argument(
        "--max-image-bytes",
        type=int,
        default=defaults.MAX_IMAGE_BYTES,
        help="per image (default: %(default)s)",
    )
    _add_max_image_pixels(parser)
    parser.add_argument(
        "--max-images",
        type=int,
        default=8,
        help="images per request (fewer when the model's context cannot hold them)",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=1024,
        help="most tokens per answer, and the default; requests asking for more get this many "
        "and finish_reason 'length'",
    )
    parser.add_argument(
        "--allow-local-files",
        action="store_true",
        help="let clients name files on this machine (file:// image URLs)",
    )
    parser.add_argument(
        "--allow-remote-urls",
        action="store_true",
        help="let the server fetch http(s) image URLs for clients",
    )
    _add_engine_args(parser)
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from llavakit.infer.server import ServerConfig, serve

    if not args.checkpoint.is_dir():
        raise CommandError(f"checkpoint folder {args.checkpoint} does not exist")
    positive = ("max_batch_size", "max_concurrent", "max_image_bytes", "max_image_pixels")
    for name in (*positive, "max_images", "max_tokens", "retry_after"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be >= 1")
    config = ServerConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key or None,
        model_name=args.served_model_name or args.checkpoint.resolve().name,
        strict_model_name=args.strict_model_name,
        max_batch_size=args.max_batch_size,
        batch_window_ms=args.batch_window_ms,
        batch_max_wait_ms=max(args.batch_max_wait_ms, args.batch_window_ms),
        max_concurrent=args.max_concurrent,
        max_image_bytes=args.max_image_bytes,
        max_image_pixels=args.max_image_pixels,
        max_images=args.max_images,
        max_tokens=args.max_tokens,
        retry_after_s=args.retry_after,
        allow_local_files=args.allow_local_files,
        allow_remote_urls=args.allow_remote_urls,
    )
    serve(
        args.checkpoint,
        config,
        device=args.device,
        dtype=args.dtype,
        load_in_bits=args.load_in_bits,
        device_map=args.device_map,
    )
    return 0


# --- web -----------------------------------------------------------------------------------


def _add_web(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "web",
        help="a browser chat UI (Gradio) over a checkpoint or an OpenAI-compatible server",
        description="Upload an image and chat with streamed answers. The model runs in this "
        "process, or --server-url points at a running `llavakit serve` (or any "
        "OpenAI-compatible vision server).",
    )
    parser.add_argument(
        "checkpoint", type=Path, nargs="?", help="llavakit checkpoint folder (no --server-url)"
    )
    parser.add_argument("--server-url", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LLAVAKIT_API_KEY"),
        help="key for --server-url (default: $LLAVAKIT_API_KEY)",
    )
    parser.add_argument("--model", help="model id at --server-url (default: its first model)")
    parser.add_argument("--host", default="127.0.0.1", help="address the UI listens on")
    parser.add_argument("--port", type=int, default=7860)
    _add_max_image_pixels(parser)
    _add_engine_args(parser)
    parser.set_defaults(func=_web)


def _web(args: argparse.Namespace) -> int:
    from llavakit.infer.web import WebOptions, run_web

    if (args.checkpoint is None) == (args.server_url is None):
        raise CommandError("give either a checkpoint folder or --server-url (exactly one)")
    if args.max_image_pixels < 1:
        raise CommandError("--max-image-pixels must be >= 1")
    run_web(
        WebOptions(
            checkpoint=args.checkpoint,
            server_url=args.server_url,
            api_key=args.api_key,
            model=args.model,
            host=args.host,
            port=args.port,
            max_image_pixels=args.max_image_pixels,
            device=args.device,
            dtype=args.dtype,
            load_in_bits=args.load_in_bits,
            device_map=args.device_map,
        )
    )
    return 0
