"""Checkpoint conversion: export to / import from transformers' LLaVA, original LLaVA layouts, deltas."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    LlavaForConditionalGeneration,
    LlavaNextForConditionalGeneration,
)

import llavakit
from llavakit.cli import main as cli_main
from llavakit.conversation import get_template, render_text
from llavakit.data.collate import collate_samples
from llavakit.model.convert import ConversionError
from llavakit.model.convert_hf import export_hf
from llavakit.model.convert_hf_import import import_hf
from llavakit.model.convert_llava import apply_delta, import_llava
from llavakit.model.convert_template import chat_template_for
from llavakit.model.io import build_model, save_checkpoint

QUESTION = "What is in the image?"
BUILTIN_TEMPLATES = [
    "vicuna_v1",
    "llava_v1",
    "llava_v0",
    "llava_llama_2",
    "mistral_instruct",
    "chatml_direct",
    "v1_mmtag",
    "v0_mmtag",
    "v0",
    "llama_2",
    "mpt",
]


def image(width=40, height=28, colour=(200, 30, 10)):
    picture = Image.new("RGB", (width, height), (250, 250, 250))
    picture.paste(Image.new("RGB", (width // 2, height // 2), colour), (3, 5))
    return picture


def make_checkpoint(folder, config, seed=0, **changes):
    torch.manual_seed(seed)
    model, processor = build_model(dataclasses.replace(config, **changes))
    save_checkpoint(model, processor, folder)
    return llavakit.load(folder)


def prompt_batch(processor, questions=(QUESTION, "How many objects are there?")):
    """Left-padded generation prompts, one image each."""
    conversations = [[{"role": "user", "content": f"<image>\n{q}"}] for q in questions]
    pictures = [[image(40 + 8 * i, 28)] for i in range(len(questions))]
    return processor.prompt_batch(conversations, pictures)


def hf_logits(hf, batch):
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return hf(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        pixel_values=batch["pixel_values"],
        position_ids=positions,
    ).logits


def assert_same_logits(ours, theirs, batch, atol=1e-4):
    """Logits of real tokens (the LLM's own vocabulary) at every non-padding position."""
    real = batch["attention_mask"].bool()
    vocab = ours.shape[-1]
    torch.testing.assert_close(theirs[..., :vocab][real], ours[real], atol=atol, rtol=1e-4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model_config):
    folder = tmp_path_factory.mktemp("ckpt")
    return folder, *make_checkpoint(folder, tiny_model_config)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, checkpoint):
    folder = tmp_path_factory.mktemp("hf") / "export"
    report = export_hf(checkpoint[0], folder)
    assert report.notes == []
    return folder


# ---- export-hf ---------------------------------------------------------------------------------
def test_export_loads_in_transformers_with_equal_logits_and_generations(checkpoint, exported):
    _, model, processor = checkpoint
    hf = LlavaForConditionalGeneration.from_pretrained(exported).eval()
    config = json.loads((exported / "config.json").read_text())
    assert config["vision_feature_select_strategy"] == "default"
    assert config["image_seq_length"] == 16 and config["vision_feature_layer"] == -2
    assert config["image_token_index"] == processor.image_token_id
    assert config["text_config"]["vocab_size"] == processor.image_token_id + 1
    # <image> was outside the LLM's vocabulary: the new row is the mean of the others.
    embed = hf.get_input_embeddings().weight
    torch.testing.assert_close(embed[-1], embed[:-1].mean(0))

    batch = prompt_batch(processor)
    with torch.no_grad():
        assert_same_logits(model(**batch).logits, hf_logits(hf, batch), batch)
    single = {k: v[:1] for k, v in prompt_batch(processor, [QUESTION]).items()}
    ours = model.generate(
        single["input_ids"], pixel_values=single["pixel_values"], max_new_tokens=8, do_sample=False
    )
    theirs = hf.generate(
        input_ids=single["input_ids"],
        pixel_values=single["pixel_values"],
        max_new_tokens=8,
        do_sample=False,
    )
    prompt_length = single["input_ids"].shape[1]
    new = theirs[:, prompt_length:]
    assert new.shape[1] > 0 and torch.equal(new, ours[:, : new.shape[1]])


@pytest.mark.parametrize("aspect", ["pad", "crop", "resize"])
def test_hf_processor_reproduces_llavakit_inputs(tmp_path, tiny_model_config, aspect):
    _, processor = make_checkpoint(tmp_path / "c", tiny_model_config, image_aspect_ratio=aspect)
    export_hf(tmp_path / "c", tmp_path / "hf")
    hf_processor = AutoProcessor.from_pretrained(tmp_path / "hf")
    picture = image(44, 26)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
    ]
    prompt = hf_processor.apply_chat_template(messages, add_generation_prompt=True)
    theirs = hf_processor(images=picture, text=prompt, return_tensors="pt")
    ours = processor.encode(
        [{"role": "user", "content": f"{QUESTION}\n<image>"}], [picture], add_generation_prompt=True
    )
    assert theirs["input_ids"][0].tolist() == ours.input_ids
    assert ours.input_ids.count(processor.image_token_id) == 16
    torch.testing.assert_close(
        theirs["pixel_values"], torch.from_numpy(ours.pixel_values), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize(
    ("llm", "tower", "feature"),
    [("tiny_qwen2", "tiny_siglip", "patch"), ("tiny_gpt2", "tiny_clip", "cls_patch")],
)
def test_export_other_architectures(request, tmp_path, tiny_model_config, llm, tower, feature):
    model, processor = make_checkpoint(
        tmp_path / "c",
        tiny_model_config,
        language_model=str(request.getfixturevalue(llm)),
        vision_tower=str(request.getfixturevalue(tower)),
        vision_select_feature=feature,
    )
    report = export_hf(tmp_path / "c", tmp_path / "hf")
    hf = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.vision_feature_select_strategy == "full"
    layout = json.loads((tmp_path / "hf" / "llavakit_export.json").read_text())["weights_layout"]
    assert layout == ("transformers-native" if llm == "tiny_gpt2" else "llava-hf")
    assert bool(report.notes) == (llm == "tiny_gpt2")
    batch = prompt_batch(processor)
    with torch.no_grad():
        assert_same_logits(model(**batch).logits, hf_logits(hf, batch), batch)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"projector_type": "linear"}, "projector_type 'linear' cannot be represented"),
        ({"projector_type": "mlp3x_gelu"}, "always Linear-GELU-Linear"),
        ({"projector_type": "identity"}, "projector_type 'identity' cannot be represented"),
        ({"use_im_start_end": True}, "LlavaProcessor does not insert"),
        (
            {"image_aspect_ratio": "anyres", "anyres_max_patches": 9},
            "anyres_max_patches .* cannot be exported",
        ),
        ({"highres": {"grid": 4}}, "LLaVAR's high-resolution encoder"),
    ],
)
def test_export_refuses_what_hf_llava_cannot_represent(tmp_path, checkpoint, change, message):
    document = json.loads((checkpoint[0] / "config.json").read_text())
    document["model"] |= change
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text(json.dumps(document))
    with pytest.raises(ConversionError, match=message):
        export_hf(tmp_path / "c", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_anyres_exports_to_llava_next_and_back(tmp_path, tiny_model_config):
    model, processor = make_checkpoint(
        tmp_path / "c",
        tiny_model_config,
        image_aspect_ratio="anyres",
        image_grid_pinpoints=[[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]],
        max_length=512,
    )
    export_hf(tmp_path / "c", tmp_path / "hf")
    hf = LlavaNextForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    hf_processor = AutoProcessor.from_pretrained(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "back")
    back, _ = llavakit.load(tmp_path / "back")
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
    ]
    prompt = hf_processor.apply_chat_template(messages, add_generation_prompt=True)
    for picture in (image(30, 70), image(90, 40)):
        theirs = hf_processor(images=picture, text=prompt, return_tensors="pt")
        ours = processor.encode(
            [{"role": "user", "content": f"<image>\n{QUESTION}"}], [picture], True
        )
        assert theirs["input_ids"][0].tolist() == ours.input_ids
        pixels = torch.from_numpy(ours.pixel_values)  # [1 + tiles, 3, 32, 32]
        torch.testing.assert_close(theirs["pixel_values"][0], pixels, atol=1e-5, rtol=0)
        ids, sizes = torch.tensor([ours.input_ids]), torch.tensor(ours.image_sizes)
        with torch.no_grad():
            expected = model(input_ids=ids, pixel_values=pixels, image_sizes=sizes).logits
            hf_out = hf(input_ids=ids, pixel_values=pixels[None], image_sizes=sizes).logits
            back_out = back(input_ids=ids, pixel_values=pixels, image_sizes=sizes).logits
        vocab = expected.shape[-1]
        torch.testing.assert_close(hf_out[..., :vocab], expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(back_out[..., :vocab], expected, atol=1e-5, rtol=1e-5)


def test_cli_export_and_refusal(tmp_path, checkpoint, capsys):
    assert cli_main(["export-hf", str(checkpoint[0]), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    document = json.loads((checkpoint[0] / "config.json").read_text())
    document["model"]["projector_type"] = "linear"
    (tmp_path / "lin").mkdir()
    (tmp_path / "lin" / "config.json").write_text(json.dumps(document))
    assert cli_main(["export-hf", str(tmp_path / "lin"), str(tmp_path / "x")]) == 2
    assert "llavakit export-hf: error:" in capsys.readouterr().err


def test_multi_token_stop_string_is_reported(tmp_path, tiny_model_config):
    make_checkpoint(tmp_path / "c", tiny_model_config, template="llava_v0")
    report = export_hf(tmp_path / "c", tmp_path / "hf")
    assert any("'###'" in note and "stop string" in note for note in report.notes)
    record = json.loads((tmp_path / "hf" / "llavakit_export.json").read_text())
    assert record["template"] == "llava_v0" and record["notes"] == report.notes


# ---- chat template -----------------------------------------------------------------------------
CONVERSATIONS = [
    [{"role": "user", "content": "What is this?\n<image>"}],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "<image>\nWhat is this?"},
        {"role": "assistant", "content": "A red square."},
        {"role": "user", "content": "And {the} colour?"},
    ],
    [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "<image> and <image>"},
    ],
]


@pytest.mark.parametrize("name", BUILTIN_TEMPLATES + ["plain"])
def test_chat_template_renders_like_llavakit(tiny_llama, name):
    template = get_template(name)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.chat_template = chat_template_for(template)
    conversations = CONVERSATIONS[:1] if template.drops_instruction else CONVERSATIONS
    for messages in conversations:
        expected, _ = render_text(template, messages, add_generation_prompt=True)
        assert tokenizer.apply_chat_template(messages, tokenize=False) == expected
    parts = [{"role": "user", "content": [{"type": "text", "text": QUESTION}, {"type": "image"}]}]
    expected, _ = render_text(template, [{"role": "user", "content": f"<image>{QUESTION}"}], True)
    assert tokenizer.apply_chat_template(parts, tokenize=False) == expected
    with pytest.raises(Exception, match="must alternate"):
        tokenizer.apply_chat_template([{"role": "assistant", "content": "x"}], tokenize=False)


# ---- import-hf ---------------------------------------------------------------------------------
def test_import_hf_round_trips(tmp_path, checkpoint, exported):
    _, model, processor = checkpoint
    report = import_hf(exported, tmp_path / "back")
    assert report.notes == []
    loaded, loaded_processor = llavakit.load(tmp_path / "back")
    assert loaded.config.template == "vicuna_v1" and loaded.config.image_aspect_ratio == "pad"
    assert loaded.config.max_length == model.config.max_length
    batch = prompt_batch(processor)
    assert torch.equal(prompt_batch(loaded_processor)["input_ids"], batch["input_ids"])
    with torch.no_grad():
        assert_same_logits(model(**batch).logits, loaded(**batch).logits, batch, atol=1e-5)
    # Without an export record the defaults are LLaVA-1.5's, and they are reported.
    foreign = tmp_path / "foreign"
    shutil.copytree(exported, foreign)
    (foreign / "llavakit_export.json").unlink()
    report = import_hf(foreign, tmp_path / "b2", template="llava_v0")
    assert [n for n in report.notes if "image-aspect-ratio" in n]
    assert llavakit.load(tmp_path / "b2")[1].template.name == "llava_v0"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vision_feature_layer": [-2, -1]}, "concatenates several layers"),
        ({"projector_hidden_act": "relu"}, "exact GELU"),
        ({"model_type": "llava_onevision"}, "model_type 'llava_onevision'"),
        ({"vision_config": {"model_type": "siglip_vision_model"}}, "without a CLS token"),
    ],
)
def test_import_hf_refusals(tmp_path, exported, change, message):
    config = json.loads((exported / "config.json").read_text()) | change
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=message):
        import_hf(tmp_path / "hf", tmp_path / "out")


# ---- original LLaVA layout ---------------------------------------------------------------------
def original_config(model, **extra) -> dict:
    config = model.language_model.config.to_dict()
    config |= {
        "model_type": "llava_llama",
        "architectures": ["LlavaLlamaForCausalLM"],
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_projector_type": model.config.projector_type,
        "mm_hidden_size": model.vision_tower.hidden_size,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": model.config.use_im_start_end,
        "image_aspect_ratio": "pad",
        "tokenizer_model_max_length": 128,
    }
    return config | extra


def write_original(folder, model, processor, tower_weights=False, **extra):
    """An original-layout LLaVA folder: LLM + model.mm_projector.* (+ tower) in one state dict."""
    folder.mkdir(parents=True)
    state = dict(model.language_model.state_dict())
    state |= {f"model.mm_projector.{k}": v for k, v in model.projector.state_dict().items()}
    if tower_weights:
        for key, value in model.vision_tower.encoder.state_dict().items():
            state[f"model.vision_tower.vision_tower.vision_model.{key}"] = value
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(original_config(model, **extra)))
    processor.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def changed_tower_model(tmp_path_factory, tiny_model_config):
    """A model whose LLM and vision tower were both changed by 'training'."""
    model, processor = build_model(tiny_model_config)
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return model.eval(), processor


def test_import_llava_full_checkpoint(tmp_path, changed_tower_model, tiny_clip):
    model, processor = changed_tower_model
    source = write_original(tmp_path / "orig", model, processor, tower_weights=True)
    report = import_llava(source, tmp_path / "out", vision_tower=tiny_clip)
    assert any("openai/clip-vit-large-patch14-336" in note for note in report.notes)
    assert any("own vision tower weights" in note for note in report.notes)
    loaded, _ = llavakit.load(tmp_path / "out")
    assert loaded.config.max_length == 128 and loaded.config.image_aspect_ratio == "pad"
    batch = prompt_batch(processor)
    with torch.no_grad():
        assert_same_logits(model(**batch).logits, loaded(**batch).logits, batch, atol=1e-5)


def test_import_llava_stage1_projector(tmp_path, tiny_model_config, tiny_clip, tiny_llama):
    torch.manual_seed(0)
    model, processor = build_model(dataclasses.replace(tiny_model_config, projector_type="linear"))
    stage1 = tmp_path / "stage1"
    stage1.mkdir()
    (stage1 / "config.json").write_text(json.dumps(original_config(model)))
    projector = {f"model.mm_projector.{k}": v for k, v in model.projector.state_dict().items()}
    torch.save(projector, stage1 / "mm_projector.bin")
    with pytest.raises(ConversionError, match="name the base LLM folder with --llm"):
        import_llava(stage1, tmp_path / "out", vision_tower=tiny_clip)
    with pytest.raises(ValueError, match="pickled PyTorch weights.*llavakit convert-bin"):
        import_llava(stage1, tmp_path / "out", vision_tower=tiny_clip, llm=tiny_llama)
    # Converted on request (the one reader of pickles), the projector imports.
    projector_file = stage1 / "mm_projector.bin"
    assert (
        cli_main(["convert-bin", str(projector_file), str(stage1 / "mm_projector.safetensors")])
        == 0
    )
    projector_file.unlink()
    command = ["import-llava", str(stage1), str(tmp_path / "out"), "--vision-tower", str(tiny_clip)]
    assert cli_main([*command, "--llm", str(tiny_llama)]) == 0
    loaded, _ = llavakit.load(tmp_path / "out")
    assert loaded.config.projector_type == "linear"
    batch = prompt_batch(processor)
    with torch.no_grad():
        assert_same_logits(model(**batch).logits, loaded(**batch).logits, batch, atol=1e-5)
    # The same projector as safetensors given explicitly, and a config that contradicts it.
    save_file(projector, str(tmp_path / "proj.safetensors"))
    (stage1 / "config.json").write_text(
        json.dumps(original_config(model, mm_projector_type="mlp2x_gelu"))
    )
    with pytest.raises(ConversionError, match="form a 'linear' projector"):
        import_llava(
            stage1,
            tmp_path / "o2",
            tiny_clip,
            llm=tiny_llama,
            projector=tmp_path / "proj.safetensors",
        )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"model_type": "llava_mpt", "architectures": ["LlavaMptForCausalLM"]}, "cannot tell"),
        ({"mm_hidden_size": 1024}, "mm_hidden_size 1024 but the vision tower"),
        ({"image_aspect_ratio": "anyres"}, "mm_patch_merge_type 'flat'"),
        ({"mm_vision_select_feature": "cls"}, "unsupported mm_vision_select_feature"),
    ],
)
def test_import_llava_refusals(tmp_path, changed_tower_model, tiny_clip, extra, message):
    model, processor = changed_tower_model
    source = write_original(tmp_path / "orig", model, processor, **extra)
    with pytest.raises(ConversionError, match=message):
        import_llava(source, tmp_path / "out", vision_tower=tiny_clip)


# ---- apply-delta -------------------------------------------------------------------------------
def test_apply_delta_rebuilds_released_weights(
    tmp_path, tiny_model_config, tiny_clip, tiny_llama, capsys
):
    """LLaVA v1 style: <im_start>/<im_end> rows beyond the base vocabulary live in the delta."""
    torch.manual_seed(0)
    model, processor = build_model(dataclasses.replace(tiny_model_config, use_im_start_end=True))
    with torch.no_grad():
        for parameter in model.language_model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    target = write_original(tmp_path / "target", model.eval(), processor)
    base = llavakit.model.convert.load_weight_file(tiny_llama / "model.safetensors")
    delta_state = {}
    for key, value in llavakit.model.convert.load_weight_file(target / "model.safetensors").items():
        if key in base:
            value = value.clone()
            value[tuple(slice(0, n) for n in base[key].shape)] -= base[key]
        delta_state[key] = value
    assert (
        delta_state["model.embed_tokens.weight"].shape[0]
        > base["model.embed_tokens.weight"].shape[0]
    )
    delta = tmp_path / "delta"
    shutil.copytree(target, delta)
    save_file(delta_state, str(delta / "model.safetensors"))

    command = ["apply-delta", str(tiny_llama), str(delta), str(tmp_path / "merged")]
    assert cli_main(command) == 0
    assert "taken from the delta alone" in capsys.readouterr().err
    merged = llavakit.model.convert.load_weight_file(tmp_path / "merged" / "model.safetensors")
    expected = llavakit.model.convert.load_weight_file(target / "model.safetensors")
    assert merged.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(merged[key], expected[key], atol=1e-6, rtol=0)

    import_llava(tmp_path / "merged", tmp_path / "out", vision_tower=tiny_clip)
    loaded, loaded_processor = llavakit.load(tmp_path / "out")
    assert loaded.config.use_im_start_end
    batch = collate_samples(
        [
            loaded_processor.encode(
                [{"role": "user", "content": f"<image>\n{QUESTION}"}], [image()], True
            )
        ],
        loaded_processor.pad_token_id,
    )
    assert loaded_processor.wrap_ids[0] in batch["input_ids"][0].tolist()
    with torch.no_grad():
        assert_same_logits(model(**batch).logits, loaded(**batch).logits, batch, atol=1e-5)

    incomplete = {k: v for k, v in delta_state.items() if k != "model.norm.weight"}
    save_file(incomplete, str(delta / "model.safetensors"))
    with pytest.raises(ConversionError, match="lacks 1 tensor.*model.norm.weight"):
        apply_delta(tiny_llama, delta, tmp_path / "bad")
