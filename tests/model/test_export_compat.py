"""export-hf folders that transformers 4.4x-4.57 and 5.x read the same way (issue 17).

The keys are checked here, and that this transformers still reads the folder exactly as before;
`bench/export_compat.py` loads the same kind of export under transformers 4.57 in a venv of its
own and compares logits.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import tiny
import torch
from PIL import Image
from transformers import AutoConfig, AutoProcessor, AutoTokenizer, LlavaForConditionalGeneration

from llavakit.model.convert_hf import export_hf
from llavakit.model.convert_hf_compat import (
    rewrite_tokenizer_files,
    text_config_for_all_versions,
)
from llavakit.model.io import build_model, save_checkpoint

LLAMA_3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


@pytest.fixture(scope="module")
def llama3_export(tmp_path_factory, tiny_model_config):
    """A tiny checkpoint whose Llama uses Llama-3 rope scaling, exported."""
    root = tmp_path_factory.mktemp("llama3")
    lm_dir = tiny.write_llm(root / "llm", "llama")
    config = json.loads((lm_dir / "config.json").read_text())
    config["rope_parameters"] = dict(LLAMA_3_ROPE)
    (lm_dir / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    model, processor = build_model(
        dataclasses.replace(tiny_model_config, language_model=str(lm_dir))
    )
    assert model.language_model.config.rope_parameters == LLAMA_3_ROPE
    save_checkpoint(model, processor, root / "ckpt")
    report = export_hf(root / "ckpt", root / "hf")
    assert report.notes == []
    return root / "hf", model, processor


def test_text_config_has_the_rope_in_both_spellings(llama3_export):
    folder, _, _ = llama3_export
    config = json.loads((folder / "config.json").read_text())
    text = config["text_config"]
    assert text["rope_parameters"] == LLAMA_3_ROPE  # what transformers 5 reads
    assert text["rope_theta"] == 500000.0  # what 4.x reads...
    scaling = {k: v for k, v in LLAMA_3_ROPE.items() if k != "rope_theta"}
    assert text["rope_scaling"] == scaling  # ...with the scaling beside it
    assert text["torch_dtype"] == text["dtype"] == "float32"
    assert config["torch_dtype"] == config["dtype"] == "float32"
    assert config["vision_config"]["torch_dtype"] == config["vision_config"]["dtype"]
    # The added keys change nothing for transformers 5: it reads back the same rope.
    loaded = AutoConfig.from_pretrained(folder).text_config
    assert loaded.rope_parameters == LLAMA_3_ROPE


def test_tokenizer_config_names_a_class_every_version_has(llama3_export):
    folder, _, processor = llama3_export
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["model_input_names"] == ["input_ids", "attention_mask"]
    template = (folder / "chat_template.jinja").read_text()
    assert config["chat_template"] == template
    assert json.loads((folder / "chat_template.json").read_text()) == {"chat_template": template}
    assert AutoProcessor.from_pretrained(folder).chat_template == template
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded = tokenizer("USER: <image>\nWhat is it? ASSISTANT:")
    assert set(encoded) == {"input_ids", "attention_mask"}  # no token_type_ids for generate
    ours = processor.tokenizer("USER: <image>\nWhat is it? ASSISTANT:")["input_ids"]
    assert encoded["input_ids"] == ours


def test_export_with_scaled_rope_computes_llavakits_logits(llama3_export):
    folder, model, processor = llama3_export
    hf = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    batch = processor.prompt_batch(
        [[{"role": "user", "content": "<image>\nWhat is in the image?"}]],
        [[Image.new("RGB", (40, 28), (200, 30, 10))]],
    )
    with torch.no_grad():
        ours = model(**batch).logits
        theirs = hf(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
        ).logits
    torch.testing.assert_close(theirs[..., : ours.shape[-1]], ours, atol=1e-4, rtol=1e-4)


def test_default_rope_and_partial_rotary_factor():
    notes: list[str] = []
    config = text_config_for_all_versions(
        {
            "dtype": "bfloat16",
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "partial_rotary_factor": 0.5,
            },
        },
        notes,
    )
    assert config["rope_theta"] == 1e6 and config["partial_rotary_factor"] == 0.5
    assert config["rope_scaling"] is None and config["torch_dtype"] == "bfloat16"
    assert notes == []


def test_rope_per_layer_type_is_reported_not_guessed():
    notes: list[str] = []
    nested = {
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
    }
    config = text_config_for_all_versions({"rope_parameters": nested}, notes)
    assert "rope_theta" not in config and "rope_scaling" not in config
    assert len(notes) == 1 and "full_attention, sliding_attention" in notes[0]


def test_list_of_extra_special_tokens_becomes_additional_special_tokens(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "TokenizersBackend",
                "extra_special_tokens": ["<|im_start|>", "<|im_end|>"],
                "additional_special_tokens": ["<|im_end|>"],
            }
        )
    )
    rewrite_tokenizer_files(tmp_path, None)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert "extra_special_tokens" not in config and "chat_template" not in config
    assert config["additional_special_tokens"] == ["<|im_end|>", "<|im_start|>"]
