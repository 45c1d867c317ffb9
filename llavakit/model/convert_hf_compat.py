"""Make an exported folder read the same way by transformers 4.4x–4.57 and by 5.x.

transformers 5 saves some settings under names that 4.x does not know, and 4.x then falls back
to defaults without a word:
- the text config keeps the rotary embedding only in `rope_parameters`; 4.x reads `rope_theta`
  and `rope_scaling`, so a Llama-3 or Qwen2 export (theta 500000 / 1000000) would load with
  theta 10000 and answer nonsense. Both spellings are written, with the same values; 5.x merges
  `rope_theta` + `rope_scaling` back into exactly the `rope_parameters` it wrote.
- `dtype` was `torch_dtype` before 4.56; both are written.
- the tokenizer class is `TokenizersBackend`, which 4.x does not have. `PreTrainedTokenizerFast`
  is the class both read from tokenizer.json alone (in 5.x it *is* TokenizersBackend), so no
  version rebuilds a normaliser or pre-tokenizer of its own.
- without `model_input_names` 4.x's generic tokenizer also returns `token_type_ids`, which
  `generate` refuses; the list is written explicitly.
- 5.x writes list-valued `extra_special_tokens`, which 4.x reads as a name -> token mapping;
  the list goes to `additional_special_tokens`, which both read as a list.
- the chat template lives in chat_template.jinja, which older 4.x do not read; it is also
  written into tokenizer_config.json (the tokenizer's template in every version) and into
  chat_template.json (the processor's in every version; 4.57 and 5.x read it first, and it
  holds the same text).
LLaVA-1.5's pad-to-square preprocessing is transformers' `LlavaImageProcessor`, which exists from
4.49 on; exports with `image_aspect_ratio: pad` therefore need transformers >= 4.49.
"""

from __future__ import annotations

import json
from pathlib import Path

TOKENIZER_CLASS = "PreTrainedTokenizerFast"
MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]
_ROPE_TOP_LEVEL = ("rope_theta", "partial_rotary_factor")
"""rope_parameters entries that transformers 4.x reads from the top of the text config."""


def rewrite_model_config(folder: Path, notes: list[str]) -> None:
    """Add the 4.x spellings to config.json in `folder` (after transformers has written it)."""
    path = folder / "config.json"
    config = _with_torch_dtype(json.loads(path.read_text()))
    if isinstance(config.get("vision_config"), dict):
        config["vision_config"] = _with_torch_dtype(config["vision_config"])
    if isinstance(config.get("text_config"), dict):
        config["text_config"] = text_config_for_all_versions(config["text_config"], notes)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _with_torch_dtype(config: dict) -> dict:
    config = dict(config)
    if config.get("dtype") is not None:
        config.setdefault("torch_dtype", config["dtype"])
    return config


def text_config_for_all_versions(text_config: dict, notes: list[str]) -> dict:
    """The text config with the 4.x spellings of its rope and dtype settings added."""
    config = _with_torch_dtype(text_config)
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict) or not rope:
        return config
    if "rope_type" not in rope and all(isinstance(value, dict) for value in rope.values()):
        notes.append(
            f"rope_parameters are set per layer type ({', '.join(rope)}): transformers before "
            "5.0 may read a different rotary embedding for this language model"
        )
        return config
    for key in _ROPE_TOP_LEVEL:
        if key in rope:
            config[key] = rope[key]
    rope_type = rope.get("rope_type", "default")
    config["rope_scaling"] = (
        None
        if rope_type == "default"
        else {key: value for key, value in rope.items() if key not in _ROPE_TOP_LEVEL}
    )
    return config


def rewrite_tokenizer_files(folder: Path, chat_template: str | None) -> None:
    """Tokenizer config and chat template files that transformers 4.x and 5.x both read alike."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = TOKENIZER_CLASS
    config["model_input_names"] = list(MODEL_INPUT_NAMES)
    extra = config.get("extra_special_tokens")
    if isinstance(extra, list):
        del config["extra_special_tokens"]
        additional = config.get("additional_special_tokens") or []
        config["additional_special_tokens"] = additional + [t for t in extra if t not in additional]
    if chat_template:
        config["chat_template"] = chat_template
        legacy = json.dumps({"chat_template": chat_template}, indent=2, ensure_ascii=False)
        (folder / "chat_template.json").write_text(legacy + "\n")
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
