"""`llavakit datagen llava` end to end against a local OpenAI-protocol server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from fake_openai import FakeReply

from llavakit.cli import main
from llavakit.datagen.cache import ResponseCache
from llavakit.datagen.coco import load_coco_contexts
from llavakit.datagen.journal import Journal, write_records
from llavakit.datagen.llava import generate
from llavakit.datagen.prompts import load_question_pool
from llavakit.teacher_protocol import TeacherRequest, TeacherResult

REPO = Path(__file__).resolve().parents[2]


def llava_argv(paths: dict[str, Path], base_url: str, *extra: str) -> list[str]:
    argv = ["datagen", "llava", "--no-progress", "--model", "fake-teacher", "--base-url", base_url]
    for name in ("annotations", "captions", "images", "out"):
        argv += [f"--{name}", str(paths[name])]
    return argv + list(extra)


def journal_keys(out: Path) -> list[str]:
    path = out.with_name(f"{out.stem}.journal.jsonl")
    return [json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()]


def test_generates_llava_records_for_every_image_and_type(fake_server, make_coco, capsys):
    paths = make_coco(n=3)
    assert main(llava_argv(paths, fake_server.base_url)) == 0
    records = json.loads(paths["out"].read_text())
    assert [record["id"] for record in records] == [
        f"{image}:{task}" for image in (1, 2, 3) for task in ("conversation", "detail", "complex")
    ]
    conversation, detail, complex_ = records[:3]
    assert conversation == {
        "id": "1:conversation",
        "image": "000000000001.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is happening?"},
            {"from": "gpt", "value": "A brown dog runs across a grassy park. (image 1)"},
            {"from": "human", "value": "Is it daytime?"},
            {"from": "gpt", "value": "Yes, it looks like daytime."},
        ],
    }
    question = detail["conversations"][0]["value"]
    assert question.startswith("<image>\n")
    assert question.removeprefix("<image>\n") in load_question_pool("detail_questions")
    assert [turn["from"] for turn in complex_["conversations"]] == ["human", "gpt"]
    report = capsys.readouterr().out
    assert "records: 9 requested, 0 already done, 9 new, 0 dropped, 9 written" in report
    assert "requests sent: 9 (0 retries), cache hits: 0" in report


def test_rerun_sends_nothing_and_writes_the_same_file(fake_server, make_coco, capsys):
    paths = make_coco(n=2)
    assert main(llava_argv(paths, fake_server.base_url)) == 0
    first = paths["out"].read_text()
    assert main(llava_argv(paths, fake_server.base_url)) == 0
    assert fake_server.request_count == 6
    assert paths["out"].read_text() == first
    assert "6 requested, 6 already done, 0 new" in capsys.readouterr().out

    # the journal gone, the cache still answers everything: nothing paid twice
    paths["out"].with_name("data.journal.jsonl").unlink()
    assert main(llava_argv(paths, fake_server.base_url)) == 0
    assert fake_server.request_count == 6 and paths["out"].read_text() == first


def test_bad_answers_are_retried_then_dropped_and_counted(
    fake_server, make_coco, llava_answer, capsys
):
    def respond(body):
        context = body["messages"][-1]["content"]
        if "(image 1)" in context and "description" in body["messages"][0]["content"]:
            return "As the captions say, a dog runs in a park."  # leaks, every time
        if "(image 2)" in context and "Write a conversation" in body["messages"][0]["content"]:
            if body.get("seed") is None:  # the first try is malformed, the retry is fine
                return "Answer:\nA dog.\n===\nQuestion:\nWhat?"
        return llava_answer(body)

    fake_server.respond = respond
    paths = make_coco(n=2)
    assert main(llava_argv(paths, fake_server.base_url, "--types", "conversation,detail")) == 0
    ids = [record["id"] for record in json.loads(paths["out"].read_text())]
    assert ids == ["1:conversation", "2:conversation", "2:detail"]
    report = capsys.readouterr().out
    assert "1 dropped" in report
    assert "dropped 1x: invalid answer after 3 tries: answer mentions 'captions'" in report
    assert fake_server.request_count == 4 + 2 + 1  # 4 keys, 2 retries of the leak, 1 of image 2
    assert "1:detail" not in journal_keys(paths["out"])  # failures are not journaled: retried later


def test_malformed_teacher_replies_cost_one_record_not_the_run(
    fake_server, make_coco, llava_answer, capsys
):
    """One reply in 20 is cut-off JSON every time and one is cut off once: the run goes on."""
    cut_off = FakeReply(body=b'{"id": "chatcmpl-1", "choices": [{"index": 0, "mes')
    seen = set()

    def respond(body):
        context, system = body["messages"][-1]["content"], body["messages"][0]["content"]
        if "(image 4)" in context and "Write a detailed description" in system:
            return cut_off  # every time: dropped and counted
        if "(image 7)" in context and "Write a conversation" in system and "7c" not in seen:
            seen.add("7c")
            return cut_off  # once: retried like a 5xx
        return llava_answer(body)

    fake_server.respond = respond
    paths = make_coco(n=10)
    argv = llava_argv(paths, fake_server.base_url, "--types", "conversation,detail")
    assert main([*argv, "--max-tries", "2", "--concurrency", "4"]) == 0
    ids = [record["id"] for record in json.loads(paths["out"].read_text())]
    assert len(ids) == 19 and "4:detail" not in ids and "7:conversation" in ids
    report = capsys.readouterr().out
    assert "20 requested, 0 already done, 19 new, 1 dropped, 19 written" in report
    assert (
        "dropped 1x: teacher 'fake-teacher' at fault: malformed reply (not valid JSON) "
        "after 2 tries" in report
    )
    assert "malformed replies from the teacher: 3 (retried)" in report
    assert fake_server.request_count == 20 + 2  # the dropped one's retry, image 7's retry
    assert len(ResponseCache(paths["out"].with_name("data.cache.sqlite"))) == 19

    # The teacher recovers: the rerun asks for the dropped record alone.
    fake_server.respond = llava_answer
    assert main([*argv, "--max-tries", "2"]) == 0
    assert fake_server.request_count == 23
    assert len(json.loads(paths["out"].read_text())) == 20


def test_cost_limit_stops_and_a_rerun_with_more_budget_finishes(
    fake_server, make_coco, llava_answer, capsys
):
    fake_server.respond = lambda body: FakeReply(
        llava_answer(body), prompt_tokens=1_000_000, completion_tokens=0
    )
    paths = make_coco(n=4)
    budget = ["--types", "complex", "--price-input", "1.0", "--concurrency", "1"]
    assert main(llava_argv(paths, fake_server.base_url, *budget, "--max-cost", "1.5")) == 0
    assert len(json.loads(paths["out"].read_text())) == 2
    assert "dropped 2x: cost limit reached" in capsys.readouterr().out
    assert main(llava_argv(paths, fake_server.base_url, *budget, "--max-cost", "10")) == 0
    assert len(json.loads(paths["out"].read_text())) == 4
    assert fake_server.request_count == 4  # the first two were not asked again


def test_unreachable_endpoint_exits_non_zero_and_writes_nothing(make_coco, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    paths = make_coco(n=2)
    assert main(llava_argv(paths, f"http://127.0.0.1:{port}/v1")) == 2
    assert (
        f"cannot reach the teacher endpoint http://127.0.0.1:{port}/v1" in capsys.readouterr().err
    )
    assert not paths["out"].exists()
    assert not paths["out"].with_name("data.journal.jsonl").exists()


def test_invalid_key_stops_at_once(fake_server, make_coco, capsys, monkeypatch):
    fake_server.api_key = "the-right-key"
    monkeypatch.setenv("OPENAI_API_KEY", "a-wrong-key")
    paths = make_coco(n=5)
    assert main(llava_argv(paths, fake_server.base_url, "--concurrency", "2")) == 2
    assert "rejected the API key (HTTP 401)" in capsys.readouterr().err
    assert fake_server.request_count <= 2
    assert not paths["out"].exists()


def test_missing_images_and_empty_captions_are_skipped_and_reported(fake_server, make_coco, capsys):
    paths = make_coco(n=4, missing=(1,), no_captions=(2,))
    assert main(llava_argv(paths, fake_server.base_url, "--types", "detail")) == 0
    assert [r["image"] for r in json.loads(paths["out"].read_text())] == [
        "000000000001.jpg",
        "000000000004.jpg",
    ]
    captured = capsys.readouterr()
    assert "skipped 1 images with no caption" in captured.out
    assert "warning: skipped 1 images missing from" in captured.err

    argv = llava_argv(paths, fake_server.base_url, "--missing-images", "error")
    assert main(argv) == 2
    assert "000000000002.jpg: image 2 of" in capsys.readouterr().err


def test_wrong_image_folder_is_an_error(fake_server, make_coco, capsys, tmp_path):
    paths = make_coco(n=2)
    (tmp_path / "elsewhere").mkdir()
    assert main(llava_argv({**paths, "images": tmp_path / "elsewhere"}, fake_server.base_url)) == 2
    assert "none of the 2 images named in" in capsys.readouterr().err
    assert fake_server.request_count == 0


def test_n_and_types_select_the_work(fake_server, make_coco):
    paths = make_coco(n=5)
    assert main(llava_argv(paths, fake_server.base_url, "--n", "2", "--types", "complex")) == 0
    assert [r["id"] for r in json.loads(paths["out"].read_text())] == ["1:complex", "2:complex"]
    assert main(llava_argv(paths, fake_server.base_url, "--types", "poem")) == 2


class TableTeacher:
    """A teacher of our own making that answers from a table, as the symbolic teacher does."""

    name = "table-teacher"

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.seen: list[TeacherRequest] = []

    def complete(self, requests: Iterable[TeacherRequest]) -> Iterator[TeacherResult]:
        for request in requests:
            self.seen.append(request)
            yield TeacherResult(request.key, self.answers[request.key])


def test_any_teacher_plugs_in_and_its_bad_answers_are_dropped(make_coco, tmp_path):
    paths = make_coco(n=2)
    contexts = load_coco_contexts(paths["annotations"], paths["captions"]).contexts
    teacher = TableTeacher(
        {
            "1:complex": "Question:\nWhy?\n===\nAnswer:\nBecause it is sunny.",
            "2:complex": "Question:\nWhere?\n===\nAnswer:\nInside the bounding box.",
        }
    )
    out = tmp_path / "symbolic.jsonl"
    summary = generate(contexts, teacher, out, types=["complex"], progress=False)
    assert [request.context["image_id"] for request in teacher.seen] == [1, 2]
    assert summary.generated == 1 and summary.written == 1
    assert summary.dropped == {"invalid answer: answer mentions 'bounding box'": 1}
    [line] = out.read_text().splitlines()
    assert json.loads(line)["conversations"][1]["value"] == "Because it is sunny."


def test_journal_tolerates_a_torn_last_line(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"key": "a", "record": 1}\n{"key": "b", "rec')
    journal = Journal(path)
    assert list(journal.load()) == ["a"]
    journal.append("c", {"record": 3})
    journal.close()
    assert list(Journal(path).load()) == ["a", "c"]

    path.write_text('{"key": "a", "record": 1}')  # complete, only its newline was lost
    assert list(Journal(path).load()) == ["a"]
    assert path.read_text().endswith("\n")

    path.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(ValueError, match=r"j.jsonl:2: journal line is not a JSON object"):
        Journal(path).load()


def test_records_are_written_atomically_as_json_or_jsonl(tmp_path):
    write_records(tmp_path / "a.json", [{"id": 1}])
    write_records(tmp_path / "a.jsonl", [{"id": 1}, {"id": 2}])
    assert json.loads((tmp_path / "a.json").read_text()) == [{"id": 1}]
    assert (tmp_path / "a.jsonl").read_text() == '{"id": 1}\n{"id": 2}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.jsonl"]  # no temp files


def test_resume_after_kill_9_loses_and_duplicates_nothing(fake_server, make_coco, capsys):
    fake_server.latency_s = 0.15
    paths = make_coco(n=24)
    argv = llava_argv(paths, fake_server.base_url, "--types", "conversation", "--concurrency", "2")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "llavakit", *argv], env=env, cwd=REPO)
    journal = paths["out"].with_name("data.journal.jsonl")
    deadline = time.monotonic() + 30
    while not (journal.exists() and len(journal.read_text().splitlines()) >= 4):
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not paths["out"].exists()  # killed before the end: no half-written output
    done_before = len(journal_keys(paths["out"]))
    assert 4 <= done_before < 24
    sent_before = fake_server.request_count

    fake_server.latency_s = 0.0
    assert main(argv) == 0
    records = json.loads(paths["out"].read_text())
    assert [r["id"] for r in records] == [f"{i}:conversation" for i in range(1, 25)]
    keys = journal_keys(paths["out"])
    assert len(keys) == len(set(keys)) == 24
    # only what was not answered before the kill is asked again (at most the 2 in flight twice)
    assert fake_server.request_count - sent_before <= 24 - done_before
    assert fake_server.request_count <= 24 + 2
    assert f"{done_before} already done" in capsys.readouterr().out
