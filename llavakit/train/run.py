"""`llavakit train RECIPE.yaml [overrides]`: one training stage, end to end.

Builds the model (fresh from HF folders, or from a previous stage's checkpoint via
`train.init_from`), applies the stage's freezing, reads and validates the data, trains with
transformers' Trainer (so torchrun, DeepSpeed, FSDP, resume and loggers come from there), and
writes a llavakit checkpoint plus the loss history (JSON and PNG) to `train.output_dir`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from transformers import TrainingArguments, set_seed

from llavakit.config import ConfigError, RecipeConfig, save_recipe
from llavakit.data.collate import Collator, PackingCollator
from llavakit.data.dataset import LlavaDataset, load_entries
from llavakit.data.feature_cache import FeatureCache, fill_feature_cache
from llavakit.data.records import record_images
from llavakit.data.tally import TallyingCollator
from llavakit.model.io import CheckpointError, build_model, load_checkpoint, save_checkpoint
from llavakit.model.partial import TRAINED_WEIGHTS, read_trained_weights
from llavakit.train import checkpoints
from llavakit.train.callbacks import TimeBudget
from llavakit.train.data_tally import data_metadata, describe_data
from llavakit.train.sharding import check_fsdp_keys_read, deepspeed_config_for, fsdp_config_for
from llavakit.train.stages import apply_stage, check_quantised_training, trainable_summary
from llavakit.train.trainer import LlavaTrainer

log = logging.getLogger(__name__)
IMAGE_CHECK_CACHE = "image_check.json"
"""In train.output_dir: which images decoded, by path, size and mtime (a rerun decodes none)."""

# Fields of a previous stage's model config that the new stage's recipe sets (they do not change
# the weights); everything architectural comes from the checkpoint.
_STAGE_OVERRIDABLE = (
    "template",
    "max_length",
    "dtype",
    "attn_implementation",
    "image_aspect_ratio",
)


def build_for_stage(recipe: RecipeConfig):
    """Model + processor for this stage: fresh, or continuing from `train.init_from`.

    A quantised base (QLoRA) is placed whole on this process's GPU."""
    bits = recipe.model.load_in_bits
    device_map = {"": int(os.environ.get("LOCAL_RANK", 0))} if bits else None
    if not recipe.train.init_from:
        return build_model(recipe.model, device_map=device_map)
    overrides = {name: getattr(recipe.model, name) for name in _STAGE_OVERRIDABLE}
    overrides["load_in_bits"] = bits
    return load_checkpoint(recipe.train.init_from, overrides=overrides, device_map=device_map)


def packaged_path(path: str | None) -> str | None:
    """A config path as given, or the copy shipped inside the package (llavakit/train/configs/)."""
    if path is None or Path(path).exists():
        return path
    shipped = Path(__file__).parent / "configs" / Path(path).name
    if shipped.exists():
        return str(shipped)
    raise FileNotFoundError(f"config file {path} does not exist")


def training_arguments(recipe: RecipeConfig, model) -> TrainingArguments:
    """transformers' arguments for this stage. CPU processes under torchrun train as one gloo
    group (without `use_cpu`, accelerate runs each process alone, on all the data, with no
    gradient sync); FSDP (FSDP2) is selected by `train.fsdp_config`, DeepSpeed by
    `train.deepspeed`."""
    t = recipe.train
    if t.deepspeed and t.fsdp_config:
        raise ConfigError(
            f"train.deepspeed ({t.deepspeed}) and train.fsdp_config ({t.fsdp_config}) are both "
            "set; choose one (e.g. add train.deepspeed=null to select FSDP)"
        )
    fsdp_path, deepspeed_path = packaged_path(t.fsdp_config), packaged_path(t.deepspeed)
    fsdp = fsdp_config_for(fsdp_path, model) if fsdp_path else None
    # FSDP checkpoints activations itself when its config says so; both at once is refused.
    fsdp_checkpointing = fsdp is not None and bool(dict.get(fsdp, "activation_checkpointing"))
    args = TrainingArguments(
        output_dir=t.output_dir,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # a float < 1 is a ratio of the total steps
        lr_scheduler_type=t.lr_scheduler,
        bf16=t.precision == "bf16",
        fp16=t.precision == "fp16",
        activation_checkpointing=t.gradient_checkpointing and not fsdp_checkpointing,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        deepspeed=deepspeed_config_for(deepspeed_path, model) if deepspeed_path else None,
        fsdp=fsdp is not None,
        fsdp_config=fsdp,
        report_to=t.report_to or "none",
        remove_unused_columns=False,
        dataloader_num_workers=recipe.data.num_workers,
        torch_compile=t.torch_compile,
        disable_tqdm=False,
        use_cpu=not _has_accelerator(),
    )
    if fsdp is not None:
        check_fsdp_keys_read(fsdp, fsdp_path)
        args.fsdp_config = dict(fsdp)
    return args


def _has_accelerator() -> bool:
    """A GPU (CUDA/ROCm) or other torch accelerator; torch.accelerator exists from torch 2.6."""
    accelerator = getattr(torch, "accelerator", None)
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def training_collator(recipe: RecipeConfig, processor):
    """Packed rows (train.packing) or right-padded rows, one sample each."""
    if not recipe.train.packing:
        return Collator(processor.pad_token_id)
    length = recipe.train.packing_length or processor.model_config.max_length
    if length < processor.model_config.max_length:
        raise ConfigError(
            f"train.packing_length ({length}) is shorter than model.max_length "
            f"({processor.model_config.max_length}): the longest samples would not fit a row"
        )
    return PackingCollator(processor.pad_token_id, length)


def prepare_feature_cache(recipe: RecipeConfig, model, processor, entries, args) -> FeatureCache:
    """Open the data.feature_cache folder for this tower and compute what it lacks.

    The main process fills it first; the other ranks then find every image cached.
    """
    if recipe.train.tune_vision_tower:
        raise ConfigError(
            "data.feature_cache needs a frozen vision tower, but train.tune_vision_tower is set"
        )
    if model.config.highres is not None:
        raise ConfigError(
            "data.feature_cache feeds cached base-tower features instead of images, but "
            "model.highres (LLaVAR's high-resolution branch) needs every image's pixels"
        )
    paths = [entry.image_folder / name for entry in entries for name in record_images(entry.record)]
    with args.main_process_first(desc="vision feature cache"):
        tower = model.vision_tower.to(args.device)
        cache = FeatureCache.for_model(recipe.data.feature_cache, tower, processor)
        added = fill_feature_cache(cache, paths, processor, tower)
    log.info("feature cache %s: %d images, %d computed now", cache.folder, len(cache), added)
    return cache


def train(recipe: RecipeConfig, callbacks: list | None = None) -> Path:
    """Run one stage; returns the folder of the final llavakit checkpoint.

    `callbacks` are transformers TrainerCallbacks (progress displays, early stops).
    """
    t = recipe.train
    set_seed(t.seed)
    check_quantised_training(recipe.model, t)
    output_dir = Path(t.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model, processor = build_for_stage(recipe)
    apply_stage(model, t)
    log.info("trainable parameters: %s", trainable_summary(model))
    args = training_arguments(recipe, model)  # FSDP and ZeRO settings are filled from the model
    with args.main_process_first(desc="checking records and images"):  # others use its verdicts
        cache = output_dir / IMAGE_CHECK_CACHE
        entries, report = load_entries(recipe.data, t.seed, cache, progress=args.should_log)
    feature_cache = None
    if recipe.data.feature_cache:
        feature_cache = prepare_feature_cache(recipe, model, processor, entries, args)
    dataset = LlavaDataset(
        entries, processor, model.config.max_length, recipe.data.skip_bad_records, feature_cache
    )
    callbacks = list(callbacks or [])
    budget = None
    if t.time_budget_s:
        # Evaluation that callbacks run during training (paused_seconds) is not training time.
        budget = TimeBudget(t.time_budget_s, [c for c in callbacks if hasattr(c, "paused_seconds")])
        callbacks.append(budget)
    trainer = LlavaTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        # Batches also carry a tally of their samples (dropped, truncated) for the trainer to count.
        data_collator=TallyingCollator(
            training_collator(recipe, processor), processor.pad_token_id
        ),
        llava_config=t,
        processor=processor,
        lengths=dataset.lengths() if recipe.data.group_by_modality_length else None,
        time_budget=budget,
        callbacks=callbacks,
    )
    resume = resume_checkpoint(output_dir) if t.resume else None
    if resume is not None:
        checkpoints.check_same_strategy(resume, strategy_of(trainer))
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    counts = trainer.sample_tally.total()  # on every rank: the ranks' counts are summed
    log.info(describe_data(report, counts))
    trained = checkpoints.staging_folder(output_dir, "trained")
    trainer.save_model(str(trained))  # every process joins the gathering
    if trainer.args.should_save:
        publish_final_checkpoint(recipe, trainer, trained, result, budget, report, counts)
    trainer.accelerator.wait_for_everyone()  # the other ranks return once the checkpoint is whole
    return output_dir


def publish_final_checkpoint(recipe, trainer, trained: Path, result, budget, report, counts):
    """Rebuild the llavakit checkpoint from the Trainer's export and move it into output_dir."""
    t = recipe.train
    output_dir = Path(t.output_dir)
    if trainer.is_deepspeed_enabled:
        # The final checkpoint is rebuilt by this process alone: no ZeRO-3 partitioned loading.
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    final = checkpoints.staging_folder(output_dir, "final")
    shutil.rmtree(final, ignore_errors=True)
    write_final_checkpoint(
        recipe,
        trained,
        final,
        metadata={
            "stage": t.stage,
            "train_loss": result.training_loss,
            "steps": trainer.state.global_step,
            "stopped_by_time_budget": bool(budget and budget.stopped),
            **data_metadata(report, counts),
        },
    )
    save_recipe(recipe, final / "recipe.yaml")
    write_loss_history(trainer.state.log_history, final, title=output_dir.name)
    checkpoints.publish_into(final, output_dir)
    shutil.rmtree(trained)
    checkpoints.remove_empty_staging(output_dir)


def strategy_of(trainer: LlavaTrainer) -> str:
    if trainer.is_fsdp_enabled:
        return "FSDP"
    return "DeepSpeed" if trainer.is_deepspeed_enabled else "one process or DDP"


def resume_checkpoint(output_dir: Path) -> Path | None:
    """The newest resumable checkpoint-N in output_dir; each incomplete or damaged one is named
    and skipped."""
    if not output_dir.is_dir():
        return None
    newest, skipped = checkpoints.newest_complete(output_dir)
    for reason in skipped:
        log.warning("skipping an incomplete or damaged checkpoint: %s", reason)
    if newest is not None:
        log.info("resuming from %s", newest)
    return newest


def write_final_checkpoint(recipe: RecipeConfig, trained: Path, final: Path, metadata: dict):
    """The stage's llavakit checkpoint, built from the gathered trained weights in `trained`
    (the same for one process, DDP, FSDP2 and ZeRO-3). LoRA adapters are merged into a plain
    model, or kept over the referenced base with `lora.merge_on_save: false`; a quantised base is
    reloaded unquantised for this."""
    t = recipe.train
    if not (trained / TRAINED_WEIGHTS).is_file():
        raise CheckpointError(
            f"{trained}: no gathered weights to build the final checkpoint from (with ZeRO-3 set "
            "stage3_gather_16bit_weights_on_model_save, or consolidate with zero_to_fp32.py)"
        )
    keep_adapters = t.lora is not None and not t.lora.merge_on_save
    model, processor = load_checkpoint(
        trained, overrides={"load_in_bits": None}, merge_lora=not keep_adapters
    )
    copy_frozen = t.save_frozen == "copy" or (t.save_frozen == "auto" and t.stage != "align")
    llm_trained = t.stage == "instruct" or model.config.use_im_start_end
    save_checkpoint(
        model,
        processor,
        final,
        copy_vision=copy_frozen or t.tune_vision_tower,
        copy_language_model=(copy_frozen or llm_trained) and not keep_adapters,
        metadata=metadata,
        trained=read_trained_weights(trained / TRAINED_WEIGHTS) if keep_adapters else None,
    )


def write_loss_history(history: list[dict], output_dir: Path, title: str | None = None):
    """loss_history.json (step, loss, lr) and loss.png."""
    points = [
        {"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate")}
        for h in history
        if "loss" in h
    ]
    (output_dir / "loss_history.json").write_text(json.dumps(points, indent=1))
    if points:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([p["step"] for p in points], [p["loss"] for p in points])
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title(title or output_dir.name)
        fig.tight_layout()
        fig.savefig(output_dir / "loss.png", dpi=100)
        plt.close(fig)
    return points


def describe(recipe: RecipeConfig) -> str:
    return json.dumps(dataclasses.asdict(recipe), indent=2, default=str)
