"""Reading question/answer files and matching answers to questions."""

from __future__ import annotations

import json

import pytest

from llavakit.eval.files import match_answers, read_records, write_jsonl, write_results


def test_reads_jsonl_json_list_data_object_and_single_line(tmp_path):
    records = [{"question_id": 1, "text": "a"}, {"question_id": 2, "text": "b"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    (tmp_path / "b.json").write_text(json.dumps(records, indent=2))
    (tmp_path / "c.json").write_text(json.dumps({"version": "0.5.1", "data": records}, indent=1))
    (tmp_path / "d.jsonl").write_text(json.dumps(records[0]) + "\n")
    for name in ("a.jsonl", "b.json", "c.json"):
        assert read_records(tmp_path / name) == records
    assert read_records(tmp_path / "d.jsonl") == records[:1]


def test_bad_json_names_the_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": 1, "text": "a"}\n{"question_id": 2, "text": \n')
    with pytest.raises(ValueError, match=r"answers.jsonl:2: not valid JSON"):
        read_records(path)
    (tmp_path / "list.json").write_text('[{"question_id": 1},\n {"question_id": }]')
    with pytest.raises(ValueError, match=r"list.json:2: not valid JSON"):
        read_records(tmp_path / "list.json")
    (tmp_path / "numbers.jsonl").write_text("[1, 2]")
    with pytest.raises(ValueError, match="record 1 is int, expected an object"):
        read_records(tmp_path / "numbers.jsonl")


def test_match_pairs_missing_and_ids_compared_as_text(write_jsonl):
    questions = write_jsonl("q.jsonl", [{"question_id": i} for i in (1, 2, 3)])
    answers = write_jsonl(
        "a.jsonl",
        [
            {"question_id": "3", "text": "c", "model_id": "m1"},
            {"question_id": 1, "text": "a", "model_id": "m1"},
        ],
    )
    matched = match_answers(questions, answers)
    assert [(q["question_id"], a and a["text"]) for q, a in matched.pairs] == [
        (1, "a"),
        (2, None),
        (3, "c"),
    ]
    assert matched.missing_ids == ["2"]
    summary = matched.summary()
    assert summary["model_id"] == "m1"
    assert (summary["n_questions"], summary["n_answered"], summary["n_missing"]) == (3, 2, 1)


def test_unknown_duplicate_and_malformed_answers_are_errors(write_jsonl):
    questions = write_jsonl("q.jsonl", [{"question_id": "x1"}, {"question_id": "x2"}])
    unknown = write_jsonl("a1.jsonl", [{"question_id": "x1", "text": ""}, {"question_id": "zz"}])
    with pytest.raises(ValueError, match=r"1 answers have question ids that are not in .*'zz'"):
        match_answers(questions, unknown)
    twice = write_jsonl("a2.jsonl", [{"question_id": "x1", "text": "a"}] * 2)
    with pytest.raises(ValueError, match=r"occur more than once: 'x1'"):
        match_answers(questions, twice)
    no_text = write_jsonl("a3.jsonl", [{"question_id": "x2", "text": 5}])
    with pytest.raises(ValueError, match=r"question x2: field 'text' must be a string"):
        match_answers(questions, no_text)
    no_id = write_jsonl("a4.jsonl", [{"text": "hello"}])
    with pytest.raises(ValueError, match=r"record 1 has no usable 'question_id'"):
        match_answers(questions, no_id)
    empty = write_jsonl("q0.jsonl", [])
    with pytest.raises(ValueError, match="holds no questions"):
        match_answers(empty, no_text)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        match_answers(questions, questions.parent / "nope.jsonl")


def test_writers_are_atomic_and_keep_unicode(tmp_path):
    result = {"benchmark": "Ünïcode", "metrics": {"a": 1.0}}
    out = write_results(result, tmp_path / "d" / "r.json")
    assert json.loads(out.read_text(encoding="utf-8"))["benchmark"] == "Ünïcode"
    assert "Ünïcode" in out.read_text(encoding="utf-8")
    jsonl = write_jsonl([{"question_id": 1, "text": "日本"}], tmp_path / "q.jsonl")
    assert read_records(jsonl) == [{"question_id": 1, "text": "日本"}]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["d", "q.jsonl", "r.json"]
