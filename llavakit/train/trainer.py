"""transformers' Trainer, taught four LLaVA things: per-component learning rates, modality-length
grouped sampling, a loss computed from trained positions only, and checkpoints that hold only
what is trained (resume loads them over the frozen parts, which come from their original
folders)."""

from __future__ import annotations

import os

import torch
from safetensors.torch import save_file
from transformers import Trainer

from llavakit.config import TrainConfig
from llavakit.data.sampler import ModalityLengthSampler
from llavakit.data.tally import TALLY_KEY
from llavakit.train.data_tally import SampleTallyCallback

WEIGHTS_NAME = "model.safetensors"


class LlavaTrainer(Trainer):
    def __init__(
        self, *args, llava_config: TrainConfig, lengths: list[int] | None = None, **kwargs
    ):
        self.llava_config = llava_config
        self.lengths = lengths
        super().__init__(*args, **kwargs)
        self.sample_tally = SampleTallyCallback()  # what became of the samples, across workers
        self.add_callback(self.sample_tally)

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
        """Training asks for the loss alone, so only trained positions get vocabulary logits."""
        self.sample_tally.count(inputs.pop(TALLY_KEY, None))  # the batch's tally is not an input
        if self.llava_config.trained_logits_only and not return_outputs:
            chunk = self.llava_config.loss_chunk_tokens
            inputs = {**inputs, "loss_only": True, "loss_chunk_tokens": chunk}
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

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

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Trainable parameters only: frozen towers/LLMs are not rewritten at every checkpoint."""
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        trained = {
            name: parameter.detach().contiguous().cpu()
            for name, parameter in model.named_parameters()
            if parameter.requires_grad
        }
        save_file(trained, os.path.join(output_dir, WEIGHTS_NAME), metadata={"format": "pt"})

    def _issue_warnings_after_load(self, load_result) -> None:
        """Missing keys are expected on resume (frozen parts); unexpected ones are not."""
        if load_result.unexpected_keys:
            raise RuntimeError(
                "checkpoint holds weights this model does not have: "
                + ", ".join(load_result.unexpected_keys[:10])
            )
