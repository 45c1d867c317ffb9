"""`llavakit train RECIPE.yaml [section.field=value ...]` (also under torchrun)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="run one training stage from a YAML recipe",
        description="Run one training stage (align or instruct) from a YAML recipe. Shipped "
        "recipes live in llavakit/train/recipes/; a bare recipe name (e.g. llava15_7b_pretrain) "
        "selects one of them. Works under torchrun for several processes/GPUs.",
    )
    parser.add_argument("recipe", help="recipe YAML path or shipped recipe name")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="overrides such as train.learning_rate=1e-3 data.image_folder=DIR",
    )
    parser.add_argument(
        "--skip-bad-records",
        action="store_true",
        help="leave invalid records out (reporting the count) instead of refusing to train",
    )
    parser.set_defaults(func=_train)
    merge = subparsers.add_parser(
        "merge-lora",
        help="fold a checkpoint's LoRA adapters into a standard checkpoint",
        description="Load a checkpoint with unmerged LoRA adapters (train.lora.merge_on_save: "
        "false, or a training checkpoint-N) over its base and write a standard, self-contained "
        "llavakit checkpoint with the adapters merged into the language model.",
    )
    merge.add_argument("checkpoint", help="checkpoint folder with unmerged adapters")
    merge.add_argument("output", help="folder for the merged checkpoint")
    merge.set_defaults(func=_merge_lora)


def _train(args) -> int:
    import logging

    from accelerate import PartialState

    from llavakit.config import load_recipe
    from llavakit.train.recipes import recipe_path
    from llavakit.train.run import train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides)
    if args.skip_bad_records:
        overrides.append("data.skip_bad_records=true")
    recipe = load_recipe(recipe_path(args.recipe), overrides)
    output = train(recipe)
    # Under torchrun, a rank that exits with its process group alive can abort in gloo's threads
    # ("terminate called without an active exception"), and torchrun then reports a failed run.
    PartialState().destroy_process_group()
    print(f"checkpoint: {output}")
    return 0


def _merge_lora(args) -> int:
    from llavakit.model.partial import merge_lora_checkpoint

    print(f"checkpoint: {merge_lora_checkpoint(args.checkpoint, args.output)}")
    return 0
