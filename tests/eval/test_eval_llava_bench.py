"""LLaVA-Bench: the judge prompt, score parsing, retries, failures and relative scores."""

from __future__ import annotations

import pytest
from fake_openai import FakeOpenAIServer

from llavakit.datagen.teacher import OpenAITeacher, TeacherConfig
from llavakit.eval.tasks.llava_bench import (
    RULES,
    JudgeConfig,
    parse_scores,
    score_llava_bench,
    validate_scores,
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
def test_parse_scores(reply, expected):
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
def test_unparsable_scores(reply, reason):
    with pytest.raises(ValueError, match=reason):
        parse_scores(reply)


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
    "b2": ["Assistant 1 is better.", "9, 9\nBoth correct."],  # unparsable, then fine
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


def test_relative_scores_failures_and_missing(bench_files, scripted_teacher):
    judge = scripted_teacher(_scripted_judge, name="gpt-4-judge")
    result = score_llava_bench(
        bench_files["questions"],
        bench_files["answers"],
        bench_files["references"],
        judge,
        context=bench_files["context"],
    )
    assert result["metrics"] == pytest.approx(
        {
            "overall": 100 * (6 + 9 + 5) / (8 + 9 + 10),
            "conversation": 100 * (6 + 9) / (8 + 9),
            "detail": None,  # its only question failed: no score rather than 0
            "complex": 100 * 5 / 10,
        }
    )
    detail = result["categories"]["detail"]
    assert (detail["n_scored"], detail["n_failed"], detail["n_questions"]) == (0, 1, 1)
    complex_ = result["categories"]["complex"]
    assert (complex_["n_scored"], complex_["n_missing"], complex_["reference_mean"]) == (1, 1, 10)
    assert result["n_failed"] == 1 and result["missing_ids"] == ["b5"]
    [failure] = result["failures"]
    assert (
        failure["question_id"] == "b3" and "unparsable reply after 3 attempts" in failure["error"]
    )
    assert failure["replies"] == JUDGE_REPLIES["b3"]
    assert result["judge"] == "gpt-4-judge" and result["judge_tokens"]["prompt"] == 10 * 7
    assert [r.params["seed"] for r in judge.asked("llava_bench:b2")] == [0, 1]
    assert not judge.asked("llava_bench:b5")


def test_judge_sees_context_question_reference_then_candidate(bench_files, scripted_teacher):
    judge = scripted_teacher(lambda request: "7 7")
    score_llava_bench(
        bench_files["questions"],
        bench_files["answers"],
        bench_files["references"],
        judge,
        context=bench_files["context"],
        config=JudgeConfig(temperature=0.0, max_tokens=99),
    )
    request = judge.asked("llava_bench:b3")[0]
    assert request.task == "judge" and request.params == {
        "temperature": 0.0,
        "max_tokens": 99,
        "seed": 0,
    }
    system, user = request.messages
    assert system["role"] == "system" and user["role"] == "user"
    assert user["content"] == (
        "[Context]\nA wet dog.\nA dog in rain.\ndog: [0.100, 0.200, 0.500, 0.900]\n\n"
        "[Question]\nDescribe it.\n\n"
        "[Assistant 1]\nReference b3\n[End of Assistant 1]\n\n"
        "[Assistant 2]\nCandidate b3\n[End of Assistant 2]\n\n"
        f"[Instructions]\n{RULES['detail']}"
    )
    assert request.context["candidate"] == "Candidate b3"
    assert (
        "[Context]\nA red bus with 6 wheels"
        in judge.asked("llava_bench:b1")[0].messages[1]["content"]
    )


def test_teacher_errors_are_failures_without_retry(bench_files, scripted_teacher):
    judge = scripted_teacher(lambda request: None)
    result = score_llava_bench(
        bench_files["questions"],
        bench_files["answers"],
        bench_files["references"],
        judge,
        context=bench_files["context"],
    )
    assert result["n_failed"] == 4 and result["metrics"]["overall"] is None
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


def test_openai_teacher_validates_judge_replies_over_http(bench_files, tmp_path):
    """The real client against the local OpenAI-protocol server: unparsable replies are re-asked
    by the teacher's own validation (with a new seed), and a judge that never complies ends as a
    failure."""

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
            max_answer_tries=2,
            cache_path=tmp_path / "cache.sqlite",
        )
        with OpenAITeacher(config, validate=validate_scores) as teacher:
            result = score_llava_bench(
                bench_files["questions"],
                bench_files["answers"],
                bench_files["references"],
                teacher,
                context=bench_files["context"],
                config=JudgeConfig(max_attempts=1),
            )
        seeds_b1 = [
            b["seed"] for b in server.received if "Candidate b1" in b["messages"][-1]["content"]
        ]
    assert seeds_b1 == [0, 1]
    assert result["metrics"]["overall"] == pytest.approx(50.0)
    assert [f["question_id"] for f in result["failures"]] == ["b3"]
    assert "invalid answer after 2 tries" in result["failures"][0]["error"]
