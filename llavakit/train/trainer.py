"""transformers' Trainer, taught the LLaVA things: per-component learning rates, modality-length
grouped sampling, a loss computed from trained positions only, each batch's sample tally taken
out of its inputs and counted (train/data_tally.py), and checkpoints that hold only what is
trained, taken whole from the gathered state under FSDP2 and ZeRO-3.

Each `checkpoint-N` is also a llavakit checkpoint (config.json referencing the frozen parts,
trained weights in model.safetensors, see model/partial.py), so `llavakit.load` opens it; it is
written in a staging folder and renamed into place when every process is done (checkpoints.py).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from llavakit.config import TrainConfig
from llavakit.data.sampler import ModalityLengthSampler
from llavakit.data.tally import TALLY_KEY
from llavakit.model.io import CheckpointError, save_checkpoint
from llavakit.model.partial import TRAINED_WEIGHTS, check_fits, read_trained_weights
from llavakit.train import checkpoints
from llavakit.train.callbacks import TimeBudget, budgeted_schedule
from llavakit.train.data_tally import SampleTallyCallback
from llavakit.train.sharding import enable_fsdp_on_cpu, gather_trained_fsdp, trained_tensors

log = logging.getLogger(__name__)


class LlavaTrainer(Trainer):
    def __init__(
        self,
        *args,
        llava_config: TrainConfig,
        processor,
        lengths: list[int] | None = None,
        time_budget: TimeBudget | None = None,
        **kwargs,
    ):
        self.llava_config = llava_config
        self.time_budget = time_budget
        self.processor = processor
        self.lengths = lengths
        self._staging_root: Path | None = None
        super().__init__(*args, **kwargs)
        self.sample_tally = SampleTallyCallback()  # what became of the samples, across workers
        self.add_callback(self.sample_tally)

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        if enable_fsdp_on_cpu(self.accelerator, self.args.fsdp_plugin_args):
            self.is_fsdp_enabled = True

    def _get_train_sampler(self, train_dataset=None):
        if self.lengths is None:
            return super()._get_train_sampler(train_dataset)
        return ModalityLengthSampler(
            self.lengths,
            batch_size=self.args.per_device_train_batch_size,
            world_size=self.args.world_size,
            seed=self.args.seed,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Training asks for the loss alone, so only trained positions get vocabulary logits.

        No KV cache in training: a layer checkpointed by FSDP (not by transformers, which turns
        the cache off itself) would otherwise append its keys again when recomputed."""
        self.sample_tally.count(inputs.pop(TALLY_KEY, None))  # the batch's tally is not an input
        if model.training:
            inputs = {**inputs, "use_cache": False}
        if self.llava_config.trained_logits_only and not return_outputs:
            chunk = self.llava_config.loss_chunk_tokens
            inputs = {**inputs, "loss_only": True, "loss_chunk_tokens": chunk}
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """A stage with a time budget follows its progress in steps or time, whichever leads."""
        if self.time_budget is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        self.lr_scheduler = budgeted_schedule(
            self.optimizer if optimizer is None else optimizer,
            str(self.args.lr_scheduler_type.value),
            self.args.warmup_steps,
            num_training_steps,
            self.time_budget,
        )
        return self.lr_scheduler

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(model))
        rates = {
            "projector": self.llava_config.projector_lr,
            "image_newline": self.llava_config.projector_lr,
            "vision_tower": self.llava_config.vision_lr,
        }
        groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            lr = rates.get(name.split(".", 1)[0]) or self.args.learning_rate
            weight_decay = self.args.weight_decay if name in decay else 0.0
            groups.setdefault((lr, weight_decay), []).append(parameter)
        param_groups = [
            {"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Under FSDP2 every process joins in gathering the trained parameters (and only those:
        frozen towers and LLMs stay in their folders); otherwise the Trainer's own path, which
        gathers ZeRO-3's 16-bit weights."""
        if not self.is_fsdp_enabled:
            return super().save_model(output_dir, _internal_call)
        self._save(output_dir, state_dict=gather_trained_fsdp(self.model))

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """A llavakit checkpoint of the trained parameters over the referenced frozen parts,
        taken from `state_dict` when the Trainer gathered one, never from local shards."""
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        trained = trained_tensors(
            model, state_dict, lambda m: CheckpointError(f"{output_dir}: {m}")
        )
        if trained is None:
            log.warning(
                "%s: ZeRO-3 gathered no weights (stage3_gather_16bit_weights_on_model_save is "
                "false); consolidate DeepSpeed's checkpoint with its zero_to_fp32.py",
                output_dir,
            )
            return
        save_checkpoint(
            model,
            self.processor,
            output_dir,
            copy_vision=False,
            copy_language_model=False,
            metadata={"stage": self.llava_config.stage, "global_step": self.state.global_step},
            weights=trained,
            trained=trained,
        )

    def _get_output_dir(self, trial) -> str:
        if self._staging_root is not None:
            return str(self._staging_root)
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, written under .incomplete/ and renamed into place whole."""
        run_dir = Path(self._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged = checkpoints.staging_folder(run_dir, name)
        if self.args.should_save and staged.exists():
            shutil.rmtree(staged)  # an earlier interrupted save of this step
        self.accelerator.wait_for_everyone()
        self._staging_root = staged.parent
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            checkpoints.seal(staged)
            checkpoints.publish(staged, run_dir / name)
            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Resume the trained parameters from model.safetensors (FSDP2: from its own shards)."""
        model = self.model if model is None else model
        if self.is_fsdp_enabled:
            from accelerate.utils import load_fsdp_model

            plugin = self.accelerator.state.fsdp_plugin
            with _naming(resume_from_checkpoint, "FSDP model state"):
                load_fsdp_model(plugin, self.accelerator, model, resume_from_checkpoint)
            return
        module = self.accelerator.unwrap_model(model, keep_torch_compile=False)
        path = Path(resume_from_checkpoint) / TRAINED_WEIGHTS
        weights = read_trained_weights(path)
        check_fits(module, weights, path)
        missing = [n for n, p in module.named_parameters() if p.requires_grad and n not in weights]
        if missing:
            raise CheckpointError(
                f"{path} lacks {len(missing)} trained parameter(s), e.g. {', '.join(missing[:3])}"
            )
        module.load_state_dict(weights, strict=False)

    def _load_optimizer_and_scheduler(self, checkpoint) -> None:
        with _naming(checkpoint, "optimizer/scheduler state"):
            super()._load_optimizer_and_scheduler(checkpoint)

    def _load_rng_state(self, checkpoint) -> None:
        with _naming(checkpoint, "random number generator state"):
            super()._load_rng_state(checkpoint)


class _naming:
    """Turn a failure while reading part of a checkpoint into one line naming the folder."""

    def __init__(self, folder, what: str):
        self.folder, self.what = folder, what

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or isinstance(error, CheckpointError):
            return False
        if isinstance(error, (OSError, EOFError, RuntimeError, ValueError, KeyError)):
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else kind.__name__
            raise CheckpointError(
                f"{self.folder}: the {self.what} cannot be loaded: {first_line}"
            ) from None
        return False
