"""FSDP2 and DeepSpeed through transformers' Trainer: configs read as the installed version reads
them, sharding on CPU processes too, and the trained parameters gathered whole.

transformers 5.x configures FSDP from `fsdp_config` alone (FSDP2 by default) and silently skips
keys it does not read, such as FSDP1's `backward_prefetch` or `use_orig_params`; a config is
therefore handed to TrainingArguments through a mapping that records which keys were read, and
any key left unread is an error naming it. accelerate enables FSDP only on accelerator devices;
CPU processes (gloo), which is how the tests run it, get the same FSDP2 plugin instead of falling
back to plain DDP. Under FSDP2 and ZeRO-3 each process holds shards, so what a checkpoint stores
comes from a gathered state dict, never from the module's own (local) tensors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from llavakit.config import ConfigError

log = logging.getLogger(__name__)

# DeepSpeed bucket sizes that transformers fills from `model.config.hidden_size`; a LLaVA model's
# config is llavakit's, so they are filled here from the language model's hidden size, with the
# same formulas.
_ZERO_AUTO_SIZES = {
    "reduce_bucket_size": lambda hidden: hidden * hidden,
    "stage3_prefetch_bucket_size": lambda hidden: int(0.9 * hidden * hidden),
    "stage3_param_persistence_threshold": lambda hidden: 10 * hidden,
}


def read_json_config(path: str, what: str) -> dict:
    try:
        config = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: {what} is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: {what} must be a JSON object")
    return config


class _ReadRecorder(dict):
    """A dict that remembers which keys were looked up (get, [], in, setdefault)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)

    def setdefault(self, key, default=None):
        self.read.add(key)
        return super().setdefault(key, default)


def fsdp_layer_classes(model: nn.Module) -> list[str]:
    """The classes FSDP2 wraps one by one: the LLM's and the towers' `_no_split_modules`."""
    present = {type(module).__name__ for module in model.modules()}
    declared = set()
    for module in model.modules():
        declared.update(getattr(module, "_no_split_modules", None) or ())
    return sorted(declared & present)


def fsdp_config_for(path: str, model: nn.Module) -> dict:
    """The FSDP config file as a mapping for TrainingArguments, with the wrap classes filled from
    the model when the file names none. Returned as a read recorder (see `check_fsdp_keys_read`)."""
    config = read_json_config(path, "the FSDP config")
    config = {key.removeprefix("fsdp_"): value for key, value in config.items()}
    config.setdefault("transformer_layer_cls_to_wrap", fsdp_layer_classes(model))
    return _ReadRecorder(config)


def check_fsdp_keys_read(config: dict, path: str) -> None:
    """Refuse keys that the installed transformers did not read while setting FSDP up."""
    if not isinstance(config, _ReadRecorder):
        return
    ignored = sorted(set(config) - config.read)
    if ignored:
        import transformers

        version = config.get("version", 2)
        raise ConfigError(
            f"{path}: key {ignored[0]!r} is ignored by transformers {transformers.__version__} "
            f"with FSDP version {version}"
            + (f" (also {', '.join(map(repr, ignored[1:]))})" if len(ignored) > 1 else "")
            + f"; it reads: {', '.join(sorted(config.read & set(config)))}"
        )


def deepspeed_config_for(path: str, model: nn.Module) -> dict:
    """The DeepSpeed config with the hidden-size-based `auto` bucket sizes filled in."""
    config = read_json_config(path, "the DeepSpeed config")
    zero = config.get("zero_optimization", {})
    hidden = model.language_model.config.get_text_config().hidden_size
    for key, size in _ZERO_AUTO_SIZES.items():
        if zero.get(key) == "auto":
            zero[key] = size(hidden)
    return config


def enable_fsdp_on_cpu(accelerator, fsdp_plugin_args: dict | None) -> bool:
    """Give CPU processes the FSDP2 plugin accelerate reserves for accelerator devices.

    Returns whether it did (the Trainer then treats the run as FSDP)."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if fsdp_plugin_args is None or state.distributed_type != DistributedType.MULTI_CPU:
        return False
    plugin = FullyShardedDataParallelPlugin(**fsdp_plugin_args)
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    return True


def gather_trained_fsdp(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trained parameter, whole, on the main process (all processes must call this)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    return get_model_state_dict(model, options=options)


# Modules that wrappers (activation checkpointing, torch.compile, FSDP1) insert into parameter
# names; state dicts are written without them.
_WRAPPER_NAMES = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def _plain_name(name: str) -> str:
    for wrapper in _WRAPPER_NAMES:
        name = name.replace(wrapper, "")
    return name


def trained_tensors(
    model: nn.Module, gathered: dict[str, torch.Tensor] | None, on_error: Callable[[str], Exception]
) -> dict[str, torch.Tensor] | None:
    """The trained parameters, taken from `gathered` (FSDP2/ZeRO-3) or, with None, from the
    module itself (one process, DDP). None when a ZeRO-3 run gathers nothing
    (`stage3_gather_16bit_weights_on_model_save: false`): DeepSpeed's own checkpoint then holds
    the weights. A local shard where a whole tensor belongs is an error."""
    parameters = {_plain_name(n): p for n, p in model.named_parameters() if p.requires_grad}
    if gathered is not None and not gathered:
        return None
    source = gathered
    if gathered is None:
        source = {_plain_name(n): p for n, p in model.named_parameters()}
    missing = [name for name in parameters if name not in source]
    if missing:
        raise on_error(
            f"the gathered state dict lacks {len(missing)} trained parameter(s), e.g. "
            + ", ".join(missing[:3])
        )
    trained = {}
    for name, parameter in parameters.items():
        tensor = source[name]
        whole = tuple(getattr(parameter, "ds_shape", parameter.shape))  # ZeRO-3 keeps it aside
        if isinstance(tensor, DTensor) or tuple(tensor.shape) != whole:
            raise on_error(f"{name} is a local shard, not the whole {whole} tensor")
        trained[name] = tensor.detach()
    return trained
