"""`llavakit chat`: one-shot answers on stdout, and the interactive session driven through stdin."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

from llavakit.cli import main
from llavakit.infer.chat import ChatSession
from llavakit.infer.engine import Engine, SamplingParams

RED = Image.new("RGB", (40, 30), (200, 10, 10))
BLUE = Image.new("RGB", (30, 50), (10, 10, 200))
GREEDY = SamplingParams(max_new_tokens=10, temperature=0)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads thrash."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def roomy_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint with a 512-token context, so a conversation has room for turns."""
    folder = tmp_path_factory.mktemp("roomy") / "model"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model"]["max_length"] = 512
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def engine(roomy_checkpoint):
    return Engine.load(roomy_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    RED.save(folder / "red.png")
    BLUE.save(folder / "blue.png")
    return folder


def test_one_shot_prints_only_the_answer(roomy_checkpoint, images, engine, capsys):
    expected = ChatSession(engine, GREEDY, RED).ask("What is in the image?")
    code = main(
        [
            "chat",
            str(roomy_checkpoint),
            "--image",
            str(images / "red.png"),
            "--query",
            "What is in the image?",
            "--temperature",
            "0",
            "--max-new-tokens",
            "10",
            "--device",
            "cpu",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert out == expected + "\n"
    assert "loading" in err


def test_missing_image_is_a_clean_error(roomy_checkpoint, tmp_path, capsys):
    code = main(
        ["chat", str(roomy_checkpoint), "--image", str(tmp_path / "no.png"), "--query", "?"]
    )
    assert code == 2
    assert "no.png" in capsys.readouterr().err


def test_session_streams_and_remembers_the_conversation(engine):
    session = ChatSession(engine, GREEDY, RED)
    first = session.ask("What is in the image?")
    pieces = list(session.stream("How many objects are there?"))
    assert len(pieces) > 1 and "".join(pieces) == session.messages[-1]["content"]
    assert [m["role"] for m in session.messages] == ["user", "assistant"] * 2
    assert session.messages[1]["content"] == first
    fresh = ChatSession(engine, GREEDY, RED).ask("How many objects are there?")
    assert "".join(pieces) != fresh  # the first turn changed the answer to the second


def test_interactive_session_through_stdin(roomy_checkpoint, images, engine):
    """The REPL as users run it: a real process, lines on stdin, streamed answers on stdout."""
    script = "\n".join(
        [
            "What is in the image?",
            "How many objects are there?",
            "/reset",
            "How many objects are there?",
            "/image " + str(images / "missing.png"),
            "/bogus",
            "",
            "/image " + str(images / "blue.png"),
            "Describe the image briefly.",
            "/exit",
            "Never asked.",
        ]
    )
    red = ChatSession(engine, GREEDY, RED)
    expected = [
        red.ask("What is in the image?"),
        red.ask("How many objects are there?"),
        ChatSession(engine, GREEDY, RED).ask("How many objects are there?"),
        ChatSession(engine, GREEDY, BLUE).ask("Describe the image briefly."),
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONIOENCODING": "utf-8",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [sys.executable, "-m", "llavakit", "chat", str(roomy_checkpoint)]
    command += ["--image", str(images / "red.png"), "--temperature", "0"]
    command += ["--max-new-tokens", "10", "--device", "cpu"]
    result = subprocess.run(
        command, input=script + "\n", capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    answers = re.findall(r"ASSISTANT: (.*?)\nUSER: ", result.stdout, flags=re.DOTALL)
    assert answers == expected
    assert result.stdout.count("USER: ") == 10  # one prompt per line up to /exit
    assert "(conversation cleared)" in result.stderr
    assert "missing.png" in result.stderr and "error:" in result.stderr
    assert "/image PATH" in result.stderr  # /bogus shows the help
