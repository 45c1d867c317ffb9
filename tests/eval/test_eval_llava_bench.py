"""LLaVA-Bench: the official judge prompt, both score readers, retries, failures, relative scores.

The official reader's decisions on 32 crafted reviews are in test_eval_crafted.py."""

from __future__ import annotations

import json

import pytest
from fake_openai import FakeOpenAIServer

from llavakit.datagen.teacher import OpenAITeacher, TeacherConfig
from llavakit.eval.tasks.llava_bench import (
    JudgeConfig,
    Rules,
    official_scores,
    parse_scores,
    score_llava_bench,
)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("8 7", (8.0, 7.0)),
        ("8, 7\nAssistant 1 was more detailed.", (8.0, 7.0)),
        ("  \n9.5 6\n", (9.5, 6.0)),
        ("**10 5**", (10.0, 5.0)),
    ],
)
def test_lenient_parse_scores(reply, expected):
    assert parse_scores(reply) == expected


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("Assistant 1: 8, Assistant 2: 7", "is not two scores"),
        ("8\n7", "is not two scores"),
        ("8 7 6", "is not two scores"),
        ("", "is not two scores"),
        ("11 3", "outside 1–10"),
        ("0 5", "outside 1–10"),
    ],
)
def test_lenient_unparsable_scores(reply, reason):
    with pytest.raises(ValueError, match=reason):
        parse_scores(reply)


def test_official_reader_splits_like_the_reference():
    assert official_scores("8,7\nwhy") == (8.0, 7.0)
    with pytest.raises(ValueError, match="'8, 7' is not two scores"):
        official_scores("8, 7")
    with pytest.raises(ValueError, match="not a number"):
        official_scores("**8 7**")


QUESTIONS = [
    {
        "question_id": "b1",
        "image": "001.jpg",
        "text": "What colour is the bus?",
        "category": "conv",
    },
    {"question_id": "b2", "image": "001.jpg", "text": "How many wheels?", "category": "conv"},
    {"question_id": "b3", "image": "002.jpg", "text": "Describe it.", "category": "detail"},
    {"question_id": "b4", "image": "002.jpg", "text": "Why wet?", "category": "complex"},
    {
        "question_id": "b5",
        "image": "003.jpg",
        "text": "Is it safe?",
        "category": "complex",
        "context": "A ladder leans on a wall.",
    },
]
CONTEXT = [
    {"id": "001", "image": "001.jpg", "caption": "A red bus with 6 wheels on a street."},
    {
        "image": "002.jpg",
        "captions": ["A wet dog.", "A dog in rain."],
        "instances": [{"category": "dog", "bbox": [0.1, 0.2, 0.5, 0.9]}],
    },
]
JUDGE_REPLIES = {
    "b1": ["8 6\nAssistant 2 missed the colour shade."],
    "b2": ["Assistant 1 is better.", "9 9\nBoth correct."],  # unparsable, then fine
    "b3": ["I cannot judge this.", "Scores: high", "N/A"],  # never parses: a failure
    "b4": ["10 5\nThe reasoning of Assistant 2 is weak."],
}


@pytest.fixture
def bench_files(write_jsonl):
    return {
        "questions": write_jsonl("questions.jsonl", QUESTIONS),
        "references": write_jsonl(
            "answers_gpt4.jsonl",
            [
                {"question_id": q["question_id"], "text": f"Reference {q['question_id']}"}
                for q in QUESTIONS
            ],
        ),
        "answers": write_jsonl(
            "answers.jsonl",
            [
                {"question_id": q, "text": f"Candidate {q}", "model_id": "tiny-llava"}
                for q in ("b1", "b2", "b3", "b4")  # b5 unanswered
            ],
        ),
        "context": write_jsonl("context.jsonl", CONTEXT),
    }


def _scripted_judge(request):
    question_id = request.key.split(":")[1]
    replies = JUDGE_REPLIES[question_id]
    return replies[min(request.params["seed"], len(replies) - 1)]


def _score(bench_files, judge, **options):
    return score_llava_bench(
        bench_files["questions"],
        bench_files["answers"],
        bench_files["references"],
        judge,
        context=bench_files["context"],
        **options,
    )


def test_official_counts_unparsable_reviews_as_minus_one(bench_files, scripted_teacher):
    judge = scripted_teacher(_scripted_judge, name="gpt-4-judge")
    result = _score(bench_files, judge)  # one review per question, as the reference
    assert (result["protocol"], result["benchmark"]) == ("official", "LLaVA-Bench (In-the-Wild)")
    # b1 (8, 6), b2 and b3 unparsable → (-1, -1), b4 (10, 5)
    assert result["metrics"] == pytest.approx(
        {
            "overall": 100 * (6 - 1 - 1 + 5) / (8 - 1 - 1 + 10),
            "conversation": 100 * (6 - 1) / (8 - 1),
            "detail": 100.0,
            "complex": 50.0,
        }
    )
    assert (result["n_failed"], result["n_retried"], result["n_unjudged"]) == (2, 0, 0)
    assert [f["question_id"] for f in result["failures"]] == ["b2", "b3"]
    assert result["judge"] == "gpt-4-judge" and result["missing_ids"] == ["b5"]
    assert result["judge_settings"] == {"temperature": 0.2, "max_tokens": 1024}


def test_retries_are_counted_and_lenient_leaves_failures_out(bench_files, scripted_teacher):
    judge = scripted_teacher(_scripted_judge, name="gpt-4-judge")
    official = _score(bench_files, judge, config=JudgeConfig(max_attempts=3))
    assert official["metrics"]["overall"] == pytest.approx(100 * (6 + 9 - 1 + 5) / (8 + 9 - 1 + 10))
    assert (official["n_failed"], official["n_retried"]) == (1, 2)
    assert [r.params["seed"] for r in judge.asked("llava_bench:b2")] == [0, 1]

    lenient = _score(bench_files, judge, protocol="lenient", config=JudgeConfig(max_attempts=3))
    assert lenient["metrics"] == pytest.approx(
        {
            "overall": 100 * (6 + 9 + 5) / (8 + 9 + 10),
            "conversation": 100 * (6 + 9) / (8 + 9),
            "detail": None,  # its only question failed: no score rather than 0
            "complex": 100 * 5 / 10,
        }
    )
    detail = lenient["categories"]["detail"]
    assert (detail["n_scored"], detail["n_failed"], detail["n_questions"]) == (0, 1, 1)
    complex_ = lenient["categories"]["complex"]
    assert (complex_["n_scored"], complex_["n_missing"], complex_["reference_mean"]) == (1, 1, 10)
    [failure] = lenient["failures"]
    assert (
        failure["question_id"] == "b3" and "unparsable reply after 3 attempts" in failure["error"]
    )
    assert failure["replies"] == JUDGE_REPLIES["b3"]
    assert lenient["judge_tokens"]["prompt"] == 10 * 7  # b1 1 + b2 2 + b3 3 + b4 1 reviews
    assert not judge.asked("llava_bench:b5")


OFFICIAL_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."


def test_judge_sees_the_official_prompt(bench_files, scripted_teacher):
    judge = scripted_teacher(lambda request: "7 7")
    rules = Rules.load()
    _score(bench_files, judge, config=JudgeConfig(temperature=0.0, max_tokens=99))
    request = judge.asked("llava_bench:b3")[0]
    assert request.task == "judge" and request.params == {
        "temperature": 0.0,
        "max_tokens": 99,
        "seed": 0,
    }
    system, user = request.messages
    assert system == {"role": "system", "content": OFFICIAL_SYSTEM}
    assert user["content"] == (
        "[Context]\nA wet dog.\nA dog in rain.\n\n"
        "[Question]\nDescribe it.\n\n"
        "[Assistant 1]\nReference b3\n\n[End of Assistant 1]\n\n"
        "[Assistant 2]\nCandidate b3\n\n[End of Assistant 2]\n\n"
        f"[System]\n{rules.rules['llava_bench_detail'][1]}\n\n"
    )
    assert "represented with a few sentences" in rules.rules["llava_bench_detail"][1]

    coco = scripted_teacher(lambda request: "7 7")
    result = _score(bench_files, coco, dataset="coco")
    assert result["benchmark"] == "LLaVA-Bench (COCO)"
    content = coco.asked("llava_bench:b3")[0].messages[1]["content"]
    assert content.startswith(
        "[Context]\nA wet dog.\nA dog in rain.\n\ndog: [0.1, 0.2, 0.5, 0.9]\n\n[Question]"
    )
    assert content.endswith(f"[System]\n{rules.rules['detail'][1]}\n\n")
    assert "bounding box coordinates" in rules.rules["detail"][1]


def test_rule_files_in_the_reference_layout(bench_files, scripted_teacher, tmp_path):
    mine = tmp_path / "rule.json"
    rule = {"role": "Helper", "prompt": "Rate them."}
    mine.write_text(json.dumps({f"llava_bench_{c}": rule for c in ("conv", "detail", "complex")}))
    judge = scripted_teacher(lambda request: "7 7")
    _score(bench_files, judge, rule_file=mine)
    content = judge.asked("llava_bench:b1")[0].messages[1]["content"]
    assert "[Helper 1]\nReference b1\n\n[End of Helper 1]" in content
    assert content.endswith("[System]\nRate them.\n\n")
    with pytest.raises(ValueError, match="the rule file has no rule 'conv' for LLaVA-Bench"):
        _score(bench_files, judge, rule_file=mine, dataset="coco")
    mine.write_text(json.dumps({"conv": {"role": "x"}}))
    with pytest.raises(ValueError, match="rule 'conv' needs string fields 'role' and 'prompt'"):
        _score(bench_files, judge, rule_file=mine)


def test_teacher_errors_are_not_judged_and_not_scored(bench_files, scripted_teacher):
    judge = scripted_teacher(lambda request: None)
    result = _score(bench_files, judge)
    assert (result["n_unjudged"], result["n_failed"]) == (4, 0)
    assert result["metrics"]["overall"] is None
    assert result["failures"][0]["error"] == "teacher error: http 500 after 5 tries"
    assert len(judge.requests) == 4


def test_missing_context_or_reference_is_an_error(bench_files, scripted_teacher, write_jsonl):
    judge = scripted_teacher(lambda request: "7 7")
    with pytest.raises(ValueError, match=r"question 'b1' has no context: give a context file"):
        score_llava_bench(
            bench_files["questions"], bench_files["answers"], bench_files["references"], judge
        )
    partial = write_jsonl("refs.jsonl", [{"question_id": "b1", "text": "r"}])
    with pytest.raises(ValueError, match=r"no reference answer for 4 questions"):
        score_llava_bench(bench_files["questions"], bench_files["answers"], partial, judge)
    odd = write_jsonl(
        "odd.jsonl", [{"question_id": "b1", "image": "x", "text": "?", "category": "fun"}]
    )
    with pytest.raises(
        ValueError, match=r"category 'fun' is not one of 'conv', 'detail', 'complex'"
    ):
        score_llava_bench(odd, write_jsonl("none.jsonl", []), partial, judge)
    with pytest.raises(ValueError, match="unknown LLaVA-Bench data set 'web'"):
        _score(bench_files, judge, dataset="web")


def test_openai_teacher_judges_over_http_with_counted_retries(bench_files, tmp_path):
    """The real client against the local OpenAI-protocol server: an unparsable review is asked
    again with a new seed, and a judge that never complies is a failure (-1, -1)."""

    def respond(body):
        content = body["messages"][-1]["content"]
        if "Candidate b3" in content:
            return "I refuse to give numbers."
        if "Candidate b1" in content and body.get("seed") == 0:
            return "Assistant 1 wins."
        return "8 4\nfine"

    with FakeOpenAIServer(respond=respond) as server:
        config = TeacherConfig(
            model="judge-model",
            base_url=server.base_url,
            concurrency=2,
            cache_path=tmp_path / "cache.sqlite",
        )
        with OpenAITeacher(config) as teacher:
            result = _score(bench_files, teacher, config=JudgeConfig(max_attempts=2))
        seeds_b1 = [
            b["seed"] for b in server.received if "Candidate b1" in b["messages"][-1]["content"]
        ]
    assert seeds_b1 == [0, 1]
    assert result["metrics"]["overall"] == pytest.approx(100 * (4 * 3 - 1) / (8 * 3 - 1))
    assert [f["question_id"] for f in result["failures"]] == ["b3"]
    assert (result["n_retried"], result["n_failed"], result["judge"]) == (2, 1, "judge-model")
