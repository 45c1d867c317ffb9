"""Text VQA: both protocols, LLaVA-1.5's file layouts, MultimodalOCR's answer files, prompts.

The protocols' decisions on 81 crafted answers are in test_eval_crafted.py; LLaVAR's released
predictions are scored in test_eval_conformance.py."""

from __future__ import annotations

import json

import pytest

from llavakit.eval.tasks.textvqa import (
    prepare_questions,
    question_from_prompt,
    score_multimodalocr_answers,
    score_textvqa,
)
from llavakit.eval.vqa_answers import (
    has_whole_answer,
    llava15_normalize,
    multimodalocr_normalize,
    vqa_accuracy,
)


def test_normalisers_differ_only_where_the_references_do():
    # LLaVA-1.5 deletes commas and question marks and splits "'s" before anything else
    assert llava15_normalize("It's Bob's, ok?") == "it 's bob 's ok"
    assert multimodalocr_normalize("It's Bob's, ok?") == "it's bob's ok"
    for normalize in (llava15_normalize, multimodalocr_normalize):
        assert normalize("The  TWO dogs.") == "2 dogs"
        assert normalize("x" + "." * 40) == "x" + "." * 8  # only 32 periods are deleted


def test_vqa_accuracy_needs_ten_answers():
    assert vqa_accuracy("a", ["a"] * 10) == 1.0
    with pytest.raises(ValueError, match="needs 10 human answers, got 3"):
        vqa_accuracy("a", ["a"] * 3)
    assert has_whole_answer("I see a cat.", ["cat"]) and not has_whole_answer("category", ["cat"])


@pytest.fixture
def annotation_file(tmp_path):
    """TextVQA's annotation layout: two questions about one image, one about another."""
    data = [
        {"question_id": 1, "image_id": "img1", "question": "what brand?", "answers": ["sony"] * 10},
        {"question_id": 2, "image_id": "img1", "question": "what year?", "answers": ["1999"] * 10},
        {"question_id": 3, "image_id": "img2", "question": "what word?", "answers": ["stop"] * 10},
    ]
    path = tmp_path / "TextVQA_0.5.1_val.json"
    path.write_text(json.dumps({"dataset_name": "textvqa", "data": data}))
    return path


def test_llava15_answer_layout_scores_against_the_annotation_file(annotation_file, write_jsonl):
    # LLaVA-1.5's answers: question_id is the image id; the prompt names the question
    ocr = "\nReference OCR token: SONY, 1999\nAnswer the question using a single word or phrase."
    answers = write_jsonl(
        "answers.jsonl",
        [
            {"question_id": "img1", "prompt": "What year?" + ocr, "text": "1999"},
            {"question_id": "img1", "prompt": "What brand?" + ocr, "text": "Sony"},
        ],
    )
    result = score_textvqa(annotation_file, answers)
    assert (result["benchmark"], result["protocol"]) == ("TextVQA", "llava15")
    assert [(i["question_id"], i["score"]) for i in result["items"]] == [
        ("1", 1.0),
        ("2", 1.0),
        ("3", 0.0),
    ]
    assert result["missing_ids"] == ["3"]
    assert result["metrics"]["accuracy"] == pytest.approx(200 / 3)
    stray = write_jsonl(
        "stray.jsonl", [{"question_id": "img9", "prompt": "What?\nA.", "text": "x"}]
    )
    with pytest.raises(
        ValueError, match=r"answer 1 \(image 'img9', question 'what\?'\) matches no"
    ):
        score_textvqa(annotation_file, stray)


def test_question_from_prompt_reads_the_reference_layouts():
    assert question_from_prompt("Reference OCR token: A\nWhat?\nShort.", "f", 1) == "what?"
    assert question_from_prompt("What?\nReference OCR token: A\nShort.", "f", 1) == "what?"
    assert question_from_prompt("What?\nShort.", "f", 1) == "what?"
    assert question_from_prompt("OCR tokens: a. Question: Why? Short answer:", "f", 1) == "why?"
    with pytest.raises(ValueError, match="f: answer 4: cannot find the question"):
        question_from_prompt("just one line", "f", 4)


def test_protocol_choice_is_per_run(annotation_file, write_jsonl):
    answers = write_jsonl("a.jsonl", [{"question_id": 1, "text": "It is a Sony."}])
    assert score_textvqa(annotation_file, answers)["items"][0]["score"] == 0.0
    mmocr = score_textvqa(annotation_file, answers, protocol="multimodalocr")
    assert (mmocr["protocol"], mmocr["items"][0]["score"]) == ("multimodalocr", 1.0)
    few = write_jsonl("q.jsonl", [{"question_id": 1, "answers": ["sony", "sony tv"]}])
    with pytest.raises(ValueError, match="llava15 protocol .* needs the 10 human answers"):
        score_textvqa(few, answers, protocol="llava15")
    with pytest.raises(ValueError, match="TextVQA has no scoring protocol 'vqa'"):
        score_textvqa(annotation_file, answers, protocol="vqa")


def test_multimodalocr_answer_files_score_as_released(tmp_path):
    path = tmp_path / "ocrVQA.json"
    path.write_text(
        json.dumps(
            [
                {
                    "question": "Who?",
                    "answer": "By Sandra Boynton.",
                    "gt_answers": "Sandra Boynton",
                },
                {"question": "Genre?", "answer": "A novel", "gt_answers": "Romance"},
            ]
        )
    )
    result = score_multimodalocr_answers(path, dataset="ocrvqa")
    assert (result["benchmark"], result["protocol"]) == ("OCR-VQA", "multimodalocr")
    assert result["metrics"]["accuracy"] == 50.0 and result["questions_file"] is None
    path.write_text(json.dumps([{"question_id": 1, "text": "Sony"}]))
    with pytest.raises(ValueError, match="not a MultimodalOCR answer file"):
        score_multimodalocr_answers(path, dataset="textvqa")


def test_bad_inputs(write_jsonl):
    answers = write_jsonl("a.jsonl", [])
    with pytest.raises(ValueError, match="unknown text-VQA dataset 'vqav2'"):
        score_textvqa(
            write_jsonl("q.jsonl", [{"question_id": 1, "answer": "x"}]), answers, dataset="vqav2"
        )
    with pytest.raises(ValueError, match=r"question 1: all answers are empty"):
        score_textvqa(write_jsonl("q1.jsonl", [{"question_id": 1, "answers": ["", " "]}]), answers)
    with pytest.raises(ValueError, match=r"question 1: expected 'answers' \(a list of strings\)"):
        score_textvqa(write_jsonl("q2.jsonl", [{"question_id": 1, "answers": [3]}]), answers)


def test_prepare_writes_the_llava15_prompt(annotation_file, tmp_path):
    ocr = tmp_path / "ocr.json"
    ocr.write_text(json.dumps({"data": [{"image_id": "img1", "ocr_tokens": ["SONY", "1999"]}]}))
    records = prepare_questions(annotation_file, ocr)
    assert records[0]["text"] == (
        "What brand?\nReference OCR token: SONY, 1999\n"
        "Answer the question using a single word or phrase."
    )
    assert records[2]["text"] == "What word?\nAnswer the question using a single word or phrase."
    assert (records[0]["image"], records[0]["question_id"]) == ("img1.jpg", 1)
    plain = prepare_questions(annotation_file, protocol="multimodalocr")
    assert plain[0]["text"] == "what brand?"
