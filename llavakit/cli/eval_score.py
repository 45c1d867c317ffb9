"""`llavakit eval score TASK`: score an answer file (or results) against a benchmark's truth.

Handlers only turn arguments into calls of `llavakit.eval.tasks`; judged tasks (LLaVA-Bench, the
ScienceQA ensemble) take the shared teacher options (`cli/teacher_options.py`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import MappingProxyType

from llavakit.cli import CommandError
from llavakit.cli.teacher_options import add_teacher_arguments, teacher_config

TASKS = ("scienceqa", "textvqa", "mme", "pope", "llava_bench", "world")


def register(verbs: argparse._SubParsersAction) -> None:
    """Add `score` to the `llavakit eval` verbs."""
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
    scienceqa.add_argument("--seed", type=int, default=0, help="sampling seed of the first try")
    add_teacher_arguments(scienceqa, "ensemble teacher (with --ensemble)")
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
    bench.add_argument("--seed", type=int, default=0, help="sampling seed of the first try")
    add_teacher_arguments(bench, "judge")
    bench.set_defaults(answer_tries=1)  # the reference asks the judge once per question


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
    config = JudgeConfig(max_attempts=args.answer_tries, seed=args.seed, progress=True)
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
        from llavakit.datagen.teacher import OpenAITeacher

        config = teacher_config(args, default_cache=out.with_name(f"{out.stem}.cache.sqlite"))
        self.teacher = OpenAITeacher(config, validate=validate)

    def __enter__(self):
        return self.teacher

    def __exit__(self, error_type, error, traceback) -> None:
        from llavakit.datagen.teacher import TeacherError

        self.teacher.close()
        print(self.teacher.stats.summary())
        if isinstance(error, TeacherError):
            raise CommandError(str(error)) from error
