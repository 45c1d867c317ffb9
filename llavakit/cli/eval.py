"""`llavakit eval <verb>`: answer benchmarks, prepare question files, score answers, report.

    llavakit eval prepare scienceqa|mme|textvqa|pope ...   question files from official releases
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


# --- score ---------------------------------------------------------------------------------


def _add_score(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "score",
        help="score an answer file against its question file",
        description="Score answers (LLaVA answer JSONL) against a question file and write a "
        "results JSON. Every benchmark's default protocol is `official`: the reference "
        "implementation's decision on every item; results record the protocol used. Missing "
        "answers count as wrong and are reported; answers for unknown question ids are an "
        "error. Each task's module docstring documents its files and protocols.",
    )
    tasks = parser.add_subparsers(dest="task", metavar="<task>", required=True)
    helps = {
        "scienceqa": "ScienceQA option-letter accuracy by subject/context/grade (+ ensemble)",
        "textvqa": "text VQA accuracy (TextVQA, ST-VQA, OCR-VQA, DocVQA): llava15 | multimodalocr",
        "mme": "MME acc / acc+ / score per subtask, perception and cognition totals",
        "pope": "POPE F1, accuracy, precision, recall, yes-ratio (means over the splits)",
        "llava_bench": "LLaVA-Bench relative scores from an LLM judge (rule.json prompts)",
        "world": "the synthetic world's benchmark (exact answers by category)",
    }
    protocols = {
        "scienceqa": "official (eval_science_qa.py) | lenient",
        "textvqa": "official (llava15 for TextVQA, multimodalocr otherwise) | llava15 | "
        "multimodalocr",
        "mme": "official (calculation.py) | lenient",
        "pope": "official (eval_pope.py) | lenient",
        "llava_bench": "official (eval_gpt_review_bench.py + summarize_gpt_review.py) | lenient",
    }
    optional_files = ("textvqa", "mme")  # scored from other layouts without a question file
    for task in TASKS:
        sub = tasks.add_parser(task, help=helps[task])
        sub.add_argument(
            "--questions", type=Path, required=task not in optional_files, help="question file"
        )
        sub.add_argument(
            "--answers", type=Path, required=task != "mme", help="answer JSONL (LLaVA layout)"
        )
        sub.add_argument(
            "--out", type=Path, help="results JSON (default: <answers stem>.results.json)"
        )
        if task in protocols:
            sub.add_argument(
                "--protocol", default=None, help=f"scoring protocol: {protocols[task]}"
            )
        sub.set_defaults(func=_score)
    textvqa = tasks.choices["textvqa"]
    textvqa.add_argument(
        "--dataset",
        default="textvqa",
        help="textvqa | stvqa | ocrvqa | docvqa: the benchmark name and its official protocol",
    )
    textvqa.description = (
        "Without --questions, --answers is a MultimodalOCR answer file (question, answer, "
        "gt_answers per record, as LLaVAR released them)."
    )
    mme = tasks.choices["mme"]
    mme.add_argument(
        "--results",
        type=Path,
        nargs="+",
        help="instead of --questions/--answers: MME result files (<subtask>.txt, "
        "image<TAB>question<TAB>Yes|No<TAB>reply) or folders of them",
    )
    mme.add_argument("--subtask", help="the subtask of a single --results file not named after it")
    tasks.choices["pope"].add_argument(
        "--annotation-dir",
        type=Path,
        help="coco_pope_<split>.json folder: labels for a question file without them (LLaVA's "
        "llava_pope_test.jsonl), given in file order within each split",
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
    bench.add_argument(
        "--dataset",
        default="wild",
        help="wild (LLaVA-Bench In-the-Wild: captions only) or coco (captions and boxes)",
    )
    bench.add_argument(
        "--rules", type=Path, help="a rule.json-layout file of judge prompts (default: LLaVA's)"
    )
    _add_teacher_arguments(bench, "judge")
    bench.set_defaults(attempts=1)  # the reference asks the judge once per question


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
        "--attempts",
        type=int,
        default=3,
        help="tries per question when a reply is unparsable (LLaVA-Bench default: 1, as LLaVA)",
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

    anchor = args.answers or (args.results[0] if getattr(args, "results", None) else None)
    if anchor is None:
        raise CommandError("give --answers (with --questions) or --results")
    stem = anchor.stem if anchor.suffix else anchor.name
    out = args.out or anchor.with_name(f"{stem}.results.json")
    result = _SCORERS[args.task](args, out)
    print(summary(result))
    print(f"results: {write_results(result, out)}")
    return 0


def _score_textvqa(args: argparse.Namespace, out: Path) -> dict:
    from llavakit.eval.tasks.textvqa import score_multimodalocr_answers, score_textvqa

    if args.questions is None:
        return score_multimodalocr_answers(
            args.answers, dataset=args.dataset, protocol=args.protocol
        )
    return score_textvqa(args.questions, args.answers, dataset=args.dataset, protocol=args.protocol)


def _score_mme(args: argparse.Namespace, out: Path) -> dict:
    from llavakit.eval.tasks.mme import score_mme, score_mme_results

    if args.results:
        if args.questions or args.answers:
            raise CommandError("give either --results or --questions and --answers, not both")
        return score_mme_results(args.results, subtask=args.subtask, protocol=args.protocol)
    if args.questions is None or args.answers is None:
        raise CommandError("give --questions and --answers (or MME result files with --results)")
    return score_mme(args.questions, args.answers, protocol=args.protocol)


def _score_pope(args: argparse.Namespace, out: Path) -> dict:
    from llavakit.eval.tasks.pope import score_pope

    return score_pope(
        args.questions, args.answers, protocol=args.protocol, annotation_dir=args.annotation_dir
    )


def _score_world(args: argparse.Namespace, out: Path) -> dict:
    from llavakit.eval.tasks.world import score_world

    return score_world(args.questions, args.answers)


def _score_scienceqa(args: argparse.Namespace, out: Path) -> dict:
    from llavakit.eval.tasks.scienceqa import score_scienceqa

    if not args.ensemble:
        return score_scienceqa(args.questions, args.answers, protocol=args.protocol)
    from llavakit.eval.tasks.scienceqa_ensemble import EnsembleConfig, validate_letter

    # The teacher re-asks unparsable replies itself (validate), so one attempt on our side.
    config = EnsembleConfig(max_attempts=1, seed=args.seed, progress=True)
    with _JudgeTeacher(args, out, validate_letter) as teacher:
        return score_scienceqa(
            args.questions,
            args.answers,
            protocol=args.protocol,
            teacher=teacher,
            ensemble_config=config,
        )


def _score_llava_bench(args: argparse.Namespace, out: Path) -> dict:
    from llavakit.eval.tasks.llava_bench import JudgeConfig, score_llava_bench

    # Retries happen here, not inside the teacher, so that the result can count them.
    config = JudgeConfig(max_attempts=args.attempts, seed=args.seed, progress=True)
    with _JudgeTeacher(args, out, validate=None) as teacher:
        return score_llava_bench(
            args.questions,
            args.answers,
            args.references,
            teacher,
            context=args.context,
            dataset=args.dataset,
            protocol=args.protocol,
            rule_file=args.rules,
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
