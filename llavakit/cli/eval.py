"""`llavakit eval <verb>`: answer benchmarks, prepare question files, score answers, report.

    llavakit eval prepare scienceqa|mme|textvqa|pope ...   question files from official releases
    llavakit eval score TASK --questions Q --answers A [--out R]
    llavakit eval report R1.json R2.json ... --out DIR

Handlers only turn arguments into calls of `llavakit.eval`; the scorers document their files.
`score` lives in `cli/eval_score.py`.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from llavakit.cli import eval_score


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate: answer benchmarks, score answers, compare runs"
    )
    verbs = parser.add_subparsers(dest="eval_verb", metavar="<verb>")
    parser.set_defaults(func=lambda args: parser.print_help() or 1)
    _register_answer(verbs)
    _add_merge(verbs)
    _add_prepare(verbs)
    eval_score.register(verbs)
    _add_report(verbs)


# --- answer --------------------------------------------------------------------------------
# `eval answer` runs a checkpoint over a question file through the inference engine. It lives in
# llavakit/eval/answer.py (written with the engine, entry point `main(args)`) and is offered only
# once that module exists.


def _register_answer(verbs: argparse._SubParsersAction) -> None:
    if importlib.util.find_spec("llavakit.eval.answer") is None:
        return
    parser = verbs.add_parser(
        "answer",
        help="answer a question file with a checkpoint (sharded, resumable)",
        description="Write one answer per question (LLaVA answer JSONL); rerunning skips answered "
        "ids; --num-chunks/--chunk-idx answer one contiguous shard of the questions.",
    )
    parser.add_argument("--model", required=True, help="llavakit checkpoint folder")
    parser.add_argument("--questions", type=Path, required=True, help="question JSONL")
    parser.add_argument("--image-folder", type=Path, default=Path("."), help="image root")
    parser.add_argument("--out", type=Path, required=True, help="answer JSONL to write")
    parser.add_argument("--num-chunks", type=int, default=1, help="number of shards")
    parser.add_argument("--chunk-idx", type=int, default=0, help="which shard this run answers")
    parser.add_argument("--batch-size", type=int, default=8, help="questions per batch")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="answer length limit")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 for greedy decoding")
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    parser.set_defaults(func=_answer)


def _answer(args: argparse.Namespace) -> int:
    from llavakit.eval.answer import AnswerSettings, answer_questions
    from llavakit.eval.files import read_records
    from llavakit.infer.engine import Engine

    engine = Engine.load(args.model, device=args.device)
    settings = AnswerSettings(
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        num_chunks=args.num_chunks,
        chunk_idx=args.chunk_idx,
    )
    n = answer_questions(
        engine,
        read_records(args.questions),
        args.image_folder,
        args.out,
        settings,
        model_id=Path(args.model).name,
    )
    print(f"answered {n} question(s) -> {args.out}")
    return 0


def _add_merge(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "merge",
        help="join answer shards into one file",
        description="Join the answer files of --num-chunks shards into one (one answer per id).",
    )
    parser.add_argument("shards", nargs="+", type=Path, help="shard answer JSONL files")
    parser.add_argument("--out", type=Path, required=True, help="merged answer JSONL")
    parser.set_defaults(func=_merge)


def _merge(args: argparse.Namespace) -> int:
    from llavakit.eval.answer import merge_answers

    print(f"merged {merge_answers(args.shards, args.out)} answer(s) -> {args.out}")
    return 0


# --- prepare -------------------------------------------------------------------------------


def _add_prepare(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "prepare",
        help="make a question file from a benchmark's official release",
        description="Convert an official benchmark release into llavakit's question JSONL "
        "(the papers' evaluation prompts and the ground truth in one file, unique question ids).",
    )
    kinds = parser.add_subparsers(dest="prepare_kind", metavar="<benchmark>", required=True)
    scienceqa = kinds.add_parser(
        "scienceqa", help="problems.json + pid_splits.json (or LLaVA's prompts) → questions"
    )
    scienceqa.add_argument("--problems", type=Path, required=True, help="ScienceQA problems.json")
    source = scienceqa.add_mutually_exclusive_group(required=True)
    source.add_argument("--splits", type=Path, help="ScienceQA pid_splits.json (our prompts)")
    source.add_argument(
        "--llava-questions",
        type=Path,
        help="LLaVA-1.5's llava_test_CQM-A.json: its prompts + the single-answer instruction",
    )
    scienceqa.add_argument("--split", default="test", help="split to convert (default: test)")
    scienceqa.add_argument("--out", type=Path, required=True, help="question JSONL to write")
    scienceqa.set_defaults(func=_prepare_scienceqa)
    mme = kinds.add_parser("mme", help="MME_Benchmark_release_version/ → yes/no questions")
    mme.add_argument("--root", type=Path, required=True, help="the MME release folder")
    _add_instruction(mme)
    mme.add_argument("--out", type=Path, required=True, help="question JSONL to write")
    mme.set_defaults(func=_prepare_mme)
    textvqa = kinds.add_parser("textvqa", help="TextVQA_0.5.1_val.json (+ OCR) → questions")
    textvqa.add_argument("--annotations", type=Path, required=True, help="TextVQA_0.5.1_val.json")
    textvqa.add_argument(
        "--ocr", type=Path, help="TextVQA_Rosetta_OCR_v0.2_val.json (OCR tokens for llava15)"
    )
    textvqa.add_argument(
        "--protocol",
        default="llava15",
        help="llava15 (OCR-token prompt, short-answer instruction) or multimodalocr (question "
        "only)",
    )
    textvqa.add_argument("--out", type=Path, required=True, help="question JSONL to write")
    textvqa.set_defaults(func=_prepare_textvqa)
    pope = kinds.add_parser("pope", help="coco_pope_{adversarial,popular,random}.json → questions")
    pope.add_argument(
        "--annotation-dir", type=Path, required=True, help="folder with the coco_pope_*.json files"
    )
    _add_instruction(pope)
    pope.add_argument("--out", type=Path, required=True, help="question JSONL to write")
    pope.set_defaults(func=_prepare_pope)


def _add_instruction(parser: argparse.ArgumentParser) -> None:
    from llavakit.eval.files import SHORT_ANSWER_INSTRUCTION

    parser.add_argument(
        "--instruction",
        default=SHORT_ANSWER_INSTRUCTION,
        help="line appended to every question (default: LLaVA-1.5's short-answer instruction; "
        "'' for none)",
    )


def _prepare_scienceqa(args: argparse.Namespace) -> int:
    from llavakit.eval.tasks.scienceqa import prepare_from_llava, prepare_questions

    if args.llava_questions:
        records = prepare_from_llava(args.llava_questions, args.problems)
    else:
        records = prepare_questions(args.problems, args.splits, args.split)
    return _write_questions(records, args.out)


def _prepare_mme(args: argparse.Namespace) -> int:
    from llavakit.eval.tasks.mme import prepare_questions

    return _write_questions(prepare_questions(args.root, args.instruction), args.out)


def _prepare_textvqa(args: argparse.Namespace) -> int:
    from llavakit.eval.tasks.textvqa import prepare_questions

    return _write_questions(prepare_questions(args.annotations, args.ocr, args.protocol), args.out)


def _prepare_pope(args: argparse.Namespace) -> int:
    from llavakit.eval.tasks.pope import prepare_questions

    return _write_questions(prepare_questions(args.annotation_dir, args.instruction), args.out)


def _write_questions(records: list[dict], out: Path) -> int:
    from llavakit.eval.files import write_jsonl

    print(f"{len(records)} questions → {write_jsonl(records, out)}")
    return 0


# --- report --------------------------------------------------------------------------------


def _add_report(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "report",
        help="compare results files in a Markdown table and a bar chart",
        description="Group results by benchmark, add the LLaVA/LLaVAR papers' numbers where the "
        "benchmark matches, and write DIR/report.md, DIR/report.png and DIR/report.json.",
    )
    parser.add_argument("results", type=Path, nargs="+", help="results JSON files")
    parser.add_argument("--out", type=Path, required=True, help="folder for the report")
    parser.add_argument("--no-published", action="store_true", help="leave out the papers' numbers")
    parser.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from llavakit.eval.report import write_report

    paths = write_report(args.results, args.out, include_published=not args.no_published)
    print(paths["markdown"].read_text(encoding="utf-8"))
    print(f"report: {paths['markdown']}, chart: {paths['chart']}")
    return 0
