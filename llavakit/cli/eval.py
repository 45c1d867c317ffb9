"""`llavakit eval <verb>`: answer benchmarks, prepare question files, score answers, report.

    llavakit eval prepare scienceqa|mme ...           question files from the official releases
    llavakit eval score TASK --questions Q --answers A [--out R]
    llavakit eval report R1.json R2.json ... --out DIR

Handlers only turn arguments into calls of `llavakit.eval`; the scorers document their files.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
from types import MappingProxyType

from llavakit.cli import CommandError

TASKS = ("scienceqa", "textvqa", "mme", "pope", "llava_bench", "world")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate: answer benchmarks, score answers, compare runs"
    )
    verbs = parser.add_subparsers(dest="eval_verb", metavar="<verb>")
    parser.set_defaults(func=lambda args: parser.print_help() or 1)
    _register_answer(verbs)
    _add_merge(verbs)
    _add_prepare(verbs)
    _add_score(verbs)
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
    from llavakit.eval.answer import main

    return main(args)


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
        "(prompts and ground truth in one file, unique question ids).",
    )
    kinds = parser.add_subparsers(dest="prepare_kind", metavar="<benchmark>", required=True)
    scienceqa = kinds.add_parser(
        "scienceqa", help="problems.json + pid_splits.json → multiple-choice questions"
    )
    scienceqa.add_argument("--problems", type=Path, required=True, help="ScienceQA problems.json")
    scienceqa.add_argument("--splits", type=Path, required=True, help="ScienceQA pid_splits.json")
    scienceqa.add_argument("--split", default="test", help="split to convert (default: test)")
    scienceqa.add_argument("--out", type=Path, required=True, help="question JSONL to write")
    scienceqa.set_defaults(func=_prepare_scienceqa)
    mme = kinds.add_parser("mme", help="MME_Benchmark_release_version/ → yes/no questions")
    mme.add_argument("--root", type=Path, required=True, help="the MME release folder")
    mme.add_argument("--out", type=Path, required=True, help="question JSONL to write")
    mme.set_defaults(func=_prepare_mme)


def _prepare_scienceqa(args: argparse.Namespace) -> int:
    from llavakit.eval.files import write_jsonl
    from llavakit.eval.tasks.scienceqa import prepare_questions

    records = prepare_questions(args.problems, args.splits, args.split)
    print(f"{len(records)} questions → {write_jsonl(records, args.out)}")
    return 0


def _prepare_mme(args: argparse.Namespace) -> int:
    from llavakit.eval.files import write_jsonl
    from llavakit.eval.tasks.mme import prepare_questions

    records = prepare_questions(args.root)
    print(f"{len(records)} questions → {write_jsonl(records, args.out)}")
    return 0


# --- score ---------------------------------------------------------------------------------


def _add_score(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "score",
        help="score an answer file against its question file",
        description="Score answers (LLaVA answer JSONL) against a question file and write a "
        "results JSON. Missing answers count as wrong and are reported; answers for unknown "
        "question ids are an error. Each task's module docstring documents its files.",
    )
    tasks = parser.add_subparsers(dest="task", metavar="<task>", required=True)
    helps = {
        "scienceqa": "ScienceQA option-letter accuracy by subject/context/grade (+ ensemble)",
        "textvqa": "text VQA contains-match accuracy (TextVQA, ST-VQA, OCR-VQA, DocVQA)",
        "mme": "MME acc / acc+ / score per subtask, perception and cognition totals",
        "pope": "POPE accuracy, precision, recall, F1, yes-ratio",
        "llava_bench": "LLaVA-Bench relative scores from a teacher LLM judge",
        "world": "the synthetic world's benchmark (exact answers by category)",
    }
    for task in TASKS:
        sub = tasks.add_parser(task, help=helps[task])
        sub.add_argument("--questions", type=Path, required=True, help="question file")
        sub.add_argument("--answers", type=Path, required=True, help="answer JSONL")
        sub.add_argument(
            "--out", type=Path, help="results JSON (default: <answers stem>.results.json)"
        )
        sub.set_defaults(func=_score)
    tasks.choices["textvqa"].add_argument(
        "--dataset",
        default="textvqa",
        help="textvqa | stvqa | ocrvqa | docvqa: the benchmark name in reports",
    )
    scienceqa = tasks.choices["scienceqa"]
    scienceqa.add_argument(
        "--ensemble",
        action="store_true",
        help="also score the LLaVA paper's ensemble with a text-only teacher LLM as arbiter",
    )
    _add_teacher_arguments(scienceqa, "ensemble teacher (with --ensemble)")
    bench = tasks.choices["llava_bench"]
    bench.add_argument(
        "--references", type=Path, required=True, help="reference answers (answers_gpt4.jsonl)"
    )
    bench.add_argument("--context", type=Path, help="context.jsonl (captions, boxes) per image")
    _add_teacher_arguments(bench, "judge")


def _add_teacher_arguments(parser: argparse.ArgumentParser, role: str) -> None:
    group = parser.add_argument_group(f"{role} (an OpenAI-compatible LLM)")
    group.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL"),
        help="endpoint, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL)",
    )
    group.add_argument(
        "--teacher-model",
        default=os.environ.get("OPENAI_MODEL"),
        help="model name (default: $OPENAI_MODEL); the API key is read from $OPENAI_API_KEY",
    )
    group.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    group.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    group.add_argument(
        "--attempts", type=int, default=3, help="tries per question when a reply is unparsable"
    )
    group.add_argument("--seed", type=int, default=0, help="sampling seed of the first try")
    group.add_argument("--price-input", type=float, default=0.0, help="price per 1M prompt tokens")
    group.add_argument(
        "--price-output", type=float, default=0.0, help="price per 1M completion tokens"
    )
    group.add_argument("--max-cost", type=float, help="stop sending once this cost is reached")
    group.add_argument("--max-requests", type=int, help="stop after this many HTTP requests")
    group.add_argument(
        "--cache", type=Path, help="SQLite answer cache (default: <results stem>.cache.sqlite)"
    )


def _score(args: argparse.Namespace) -> int:
    from llavakit.eval.files import write_results
    from llavakit.eval.report import summary

    out = args.out or args.answers.with_name(f"{args.answers.stem}.results.json")
    result = _SCORERS[args.task](args, out)
    print(summary(result))
    print(f"results: {write_results(result, out)}")
    return 0


def _score_textvqa(args: argparse.Namespace, out: Path) -> dict:
    from llavakit.eval.tasks.textvqa import score_textvqa

    return score_textvqa(args.questions, args.answers, dataset=args.dataset)


def _score_mme(args: argparse.Namespace, out: Path) -> dict:
    from llavakit.eval.tasks.mme import score_mme

    return score_mme(args.questions, args.answers)


def _score_pope(args: argparse.Namespace, out: Path) -> dict:
    from llavakit.eval.tasks.pope import score_pope

    return score_pope(args.questions, args.answers)


def _score_world(args: argparse.Namespace, out: Path) -> dict:
    from llavakit.eval.tasks.world import score_world

    return score_world(args.questions, args.answers)


def _score_scienceqa(args: argparse.Namespace, out: Path) -> dict:
    from llavakit.eval.tasks.scienceqa import EnsembleConfig, score_scienceqa, validate_letter

    if not args.ensemble:
        return score_scienceqa(args.questions, args.answers)
    # The teacher re-asks unparsable replies itself (validate), so one attempt on our side.
    config = EnsembleConfig(max_attempts=1, seed=args.seed, progress=True)
    with _JudgeTeacher(args, out, validate_letter) as teacher:
        return score_scienceqa(
            args.questions, args.answers, teacher=teacher, ensemble_config=config
        )


def _score_llava_bench(args: argparse.Namespace, out: Path) -> dict:
    from llavakit.eval.tasks.llava_bench import JudgeConfig, score_llava_bench, validate_scores

    config = JudgeConfig(max_attempts=1, seed=args.seed, progress=True)
    with _JudgeTeacher(args, out, validate_scores) as teacher:
        return score_llava_bench(
            args.questions,
            args.answers,
            args.references,
            teacher,
            context=args.context,
            config=config,
        )


_SCORERS = MappingProxyType(
    {
        "scienceqa": _score_scienceqa,
        "textvqa": _score_textvqa,
        "mme": _score_mme,
        "pope": _score_pope,
        "llava_bench": _score_llava_bench,
        "world": _score_world,
    }
)


class _JudgeTeacher:
    """The OpenAI teacher for judging, as a context manager that prints its costs on exit and
    turns its fatal errors (bad key, unreachable endpoint) into clean command errors."""

    def __init__(self, args: argparse.Namespace, out: Path, validate):
        from llavakit.datagen.teacher import OpenAITeacher, TeacherConfig

        if not args.teacher_model:
            raise CommandError("--teacher-model is required for judging (or set OPENAI_MODEL)")
        config = TeacherConfig(
            model=args.teacher_model,
            base_url=args.base_url,
            concurrency=args.concurrency,
            timeout_s=args.timeout,
            max_answer_tries=args.attempts,
            price_input_per_1m=args.price_input,
            price_output_per_1m=args.price_output,
            max_cost=args.max_cost,
            max_requests=args.max_requests,
            cache_path=args.cache or out.with_name(f"{out.stem}.cache.sqlite"),
        )
        self.teacher = OpenAITeacher(config, validate=validate)

    def __enter__(self):
        return self.teacher

    def __exit__(self, error_type, error, traceback) -> None:
        from llavakit.datagen.teacher import TeacherError

        self.teacher.close()
        print(self.teacher.stats.summary())
        if isinstance(error, TeacherError):
            raise CommandError(str(error)) from error


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
