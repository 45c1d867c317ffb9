"""`llavakit demo --out DIR`: the whole pipeline on the embedded synthetic world."""

from __future__ import annotations

from llavakit.demo.ablations import ABLATIONS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole LLaVA + LLaVAR pipeline on the embedded world (CPU)",
        description="World -> teacher data -> stage 0 (the pretrained tokenizer, CLIP and "
        "LLM: shipped stand-ins, or trained in the run) -> stage 1 -> "
        "LLaVAR conversations -> stage 2 -> evaluation -> sample chat -> report. Finished "
        "steps are reused on a rerun; --fresh starts over.",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder")
    parser.add_argument("--fresh", action="store_true", help="ignore finished steps")
    parser.add_argument(
        "--minutes",
        type=float,
        default=10.0,
        help="training time budget (scales the training work)",
    )
    parser.add_argument(
        "--ablation",
        nargs="+",
        choices=list(ABLATIONS),
        help="also train stages 1 and 2 again at the same budget: without the text-rich "
        "(LLaVAR) data (the reading gap), or with LLaVAR's high-resolution branch (small text)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the world, the data and the models trained in the run (the shipped "
        "stage-0 stand-ins are the same for every seed; the README reports seeds 0-2)",
    )
    parser.add_argument(
        "--stage0",
        help="where the pretrained CLIP and LLM come from: 'shipped' (llavakit's stand-ins, "
        "the default), 'train' (train them inside the run), or a folder built by "
        "`llavakit world stand-ins`",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes (under a minute), for tests"
    )
    parser.set_defaults(func=_demo)


def _demo(args) -> int:
    import dataclasses
    import logging
    import sys

    from llavakit.demo.pipeline import run_demo
    from llavakit.demo.report import ablation_columns
    from llavakit.demo.sizes import SMOKE, for_budget
    from llavakit.demo.stand_ins import StandInsError

    logging.basicConfig(level=logging.WARNING)
    sizes = SMOKE if args.smoke else for_budget(args.minutes)
    sizes = dataclasses.replace(sizes, seed=args.seed)
    if args.stage0:
        sizes = dataclasses.replace(sizes, stage0=args.stage0)
    try:
        report = run_demo(args.out, sizes, fresh=args.fresh, ablation=args.ablation)
    except StandInsError as error:
        print(f"llavakit demo: {error}", file=sys.stderr)
        return 2
    print("\nheld-out accuracy (stage 1 only -> final):")
    for category, value in report["accuracy"].items():
        print(f"  {category:<14} {report['accuracy_stage1'].get(category, 0):.2f} -> {value:.2f}")
    for title, values in ablation_columns(report).items():
        print(f"{title}:")
        for category, value in values.items():
            print(f"  {category:<14} {value:.2f}")
    print(f"report: {args.out}/report.md   model: {report['checkpoint']}")
    return 0
