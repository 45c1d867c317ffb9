"""Does an `export-hf` folder load the same under an older transformers? (issue 17)

    python bench/export_compat.py --python /tmp/tf457/bin/python

`--python` is an interpreter with another transformers (e.g. 4.57 in a venv of its own:
`python -m venv /tmp/tf457 && /tmp/tf457/bin/pip install torch transformers==4.57.3 pillow`).
Two tiny random llavakit checkpoints are built whose language models load wrong when a reader
ignores their rotary settings: Llama with Llama-3 rope scaling (theta 500000, factor 8) and
Qwen2 (theta 1000000, tied embeddings). Each is exported with `export_hf`, then the same chat
(an image and a question, rendered by the export's own chat template) goes through
- llavakit's model (this interpreter),
- transformers' AutoProcessor + LlavaForConditionalGeneration here (5.x), and
- the same under `--python`, in a child process that imports nothing from llavakit.
The table shows whether the processors built the same input ids and pixels, the largest logit
difference, and whether greedy generation agrees. A control copy of each export without the
4.x rope keys (`rope_theta`, `rope_scaling`), and one with transformers 5's own tokenizer config
(`TokenizersBackend`, no `model_input_names`), show what the compatibility keys prevent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from child_process import PREFIX, report

QUESTION = "What colour is the square?"
NEW_TOKENS = 8
LANGUAGE_MODELS = {
    "llama3-rope": {
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
    },
    "qwen2": {"rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}},
}


def picture():
    from PIL import Image

    image = Image.new("RGB", (40, 28), (250, 250, 250))
    image.paste(Image.new("RGB", (20, 14), (200, 30, 10)), (3, 5))
    return image


def run_hf(export: Path, out: Path) -> dict:
    """Processor inputs, logits and greedy tokens of the export under this transformers."""
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(export)
    model = LlavaForConditionalGeneration.from_pretrained(export).eval()
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=picture(), text=prompt, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]  # [T, V]
        generated = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    save_file(
        {
            "logits": logits.float().contiguous(),
            "input_ids": inputs["input_ids"][0].contiguous(),
            "pixel_values": inputs["pixel_values"].float().contiguous(),
        },
        str(out),
    )
    return {
        "transformers": transformers.__version__,
        "input_names": sorted(inputs),
        "rope_theta": _rope_theta(model.config.text_config),
        "generated": generated[0, inputs["input_ids"].shape[1] :].tolist(),
    }


def _rope_theta(text_config) -> float:
    """The theta this transformers version actually uses (4.x ignores `rope_parameters`)."""
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        return text_config.rope_theta
    return text_config.rope_parameters["rope_theta"]


# ---- parent: build, export, compare --------------------------------------------------------------
def write_checkpoint(workdir: Path, kind: str, aspect: str) -> Path:
    import torch
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    from llavakit.config import ModelConfig
    from llavakit.image_config import ImageProcessorConfig
    from llavakit.model.io import build_model, save_checkpoint
    from llavakit.world.stage0.tokenizer import train_tokenizer

    torch.manual_seed(0)
    llm_dir, clip_dir = workdir / kind / "llm", workdir / kind / "clip"
    corpus = [f"USER: <image>\n{QUESTION} ASSISTANT: A red square.</s>"] * 20
    tokenizer = train_tokenizer(corpus, llm_dir, vocab_size=400)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **LANGUAGE_MODELS[kind],
    )
    if kind == "qwen2":
        Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=True, **common)).save_pretrained(llm_dir)
    else:
        LlamaForCausalLM(
            LlamaConfig(tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, **common)
        ).save_pretrained(llm_dir)
    CLIPVisionModel(
        CLIPVisionConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
        )
    ).save_pretrained(clip_dir)
    ImageProcessorConfig(size=32, crop_size=32).save_pretrained(clip_dir)
    config = ModelConfig(
        vision_tower=str(clip_dir),
        language_model=str(llm_dir),
        template="vicuna_v1",
        image_aspect_ratio=aspect,
    )
    model, processor = build_model(config)
    return save_checkpoint(model, processor, workdir / kind / "checkpoint")


def llavakit_logits(checkpoint: Path, input_ids, pixel_values):
    """llavakit's own logits on the exact inputs transformers' processor built."""
    import torch

    import llavakit

    model, _ = llavakit.load(checkpoint)
    with torch.no_grad():
        return model(input_ids=input_ids[None], pixel_values=pixel_values).logits[0]


def run_other(python: str, export: Path, out: Path) -> dict:
    command = [python, __file__, "--child", str(export), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith(PREFIX)]
    if done.returncode or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1][len(PREFIX) :])


def control_copy(export: Path, control: Path, file: str, drop: tuple[str, ...], **set_keys):
    """A copy of the export with keys of one JSON file (or of its text_config) taken back out."""
    shutil.copytree(export, control, dirs_exist_ok=True)
    config = json.loads((control / file).read_text())
    target = config["text_config"] if file == "config.json" else config
    for key in drop:
        target.pop(key, None)
    target.update(set_keys)
    (control / file).write_text(json.dumps(config, indent=2))
    return control


def controls(export: Path, kind_dir: Path) -> dict[str, Path]:
    """The export without the 4.x rope keys, and with transformers 5's own tokenizer config."""
    return {
        "no rope_theta/rope_scaling": control_copy(
            export, kind_dir / "control-rope", "config.json", ("rope_theta", "rope_scaling")
        ),
        "5.x tokenizer config": control_copy(
            export,
            kind_dir / "control-tokenizer",
            "tokenizer_config.json",
            ("model_input_names",),
            tokenizer_class="TokenizersBackend",
        ),
    }


def compare(reference: dict, tensors: dict, other: dict, other_file: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    if "error" in other:
        return {"loads": False, "error": other["error"]}
    theirs = load_file(str(other_file))
    vocab = min(tensors["logits"].shape[-1], theirs["logits"].shape[-1])
    same_ids = torch.equal(tensors["input_ids"], theirs["input_ids"])
    return {
        "loads": True,
        "transformers": other["transformers"],
        "rope_theta": other["rope_theta"],
        "same_input_ids": same_ids,
        "same_pixels": torch.allclose(tensors["pixel_values"], theirs["pixel_values"], atol=1e-6),
        "token_type_ids": "token_type_ids" in other["input_names"],
        "max_abs_logit_diff": (
            (tensors["logits"][:, :vocab] - theirs["logits"][:, :vocab]).abs().max().item()
            if same_ids
            else None
        ),
        "same_generation": other["generated"] == reference["generated"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="interpreter with the other transformers version")
    parser.add_argument("--child", nargs=2, metavar=("EXPORT", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, help="keep the checkpoints and exports here")
    parser.add_argument(
        "--aspect",
        default="pad",
        choices=("pad", "crop"),
        help="image_aspect_ratio of the checkpoints (pad needs transformers >= 4.49)",
    )
    args = parser.parse_args()
    if args.child:
        report(run_hf(Path(args.child[0]), Path(args.child[1])))
        return
    if not args.python:
        parser.error("--python is required")

    from safetensors.torch import load_file

    from llavakit.model.convert_hf import export_hf

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="export-compat-"))
    rows = []
    for kind in LANGUAGE_MODELS:
        checkpoint = write_checkpoint(workdir, kind, args.aspect)
        export = workdir / kind / "hf"
        export_hf(checkpoint, export)
        here_file = workdir / kind / "here.safetensors"
        reference = run_hf(export, here_file)
        tensors = load_file(str(here_file))
        ours = llavakit_logits(checkpoint, tensors["input_ids"], tensors["pixel_values"])
        vocab = ours.shape[-1]
        row = {
            "model": kind,
            "here": reference["transformers"],
            "rope_theta_here": reference["rope_theta"],
            "llavakit_vs_here_max_abs_logit_diff": (
                (ours - tensors["logits"][:, :vocab]).abs().max().item()
            ),
        }
        row["max_abs_logit"] = tensors["logits"].abs().max().item()
        row["folders"] = {}
        for number, (label, folder) in enumerate(
            {"export": export, **controls(export, workdir / kind)}.items()
        ):
            other_file = workdir / kind / f"other-{number}.safetensors"
            other = run_other(args.python, folder, other_file)
            row["folders"][label] = compare(reference, tensors, other, other_file)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        "\n| model | other transformers | loads | same ids / pixels | token_type_ids | "
        "rope theta (5.x / other) | max abs logit diff | same greedy tokens |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        for label, r in row["folders"].items():
            name = f"{row['model']} ({label})"
            if not r["loads"]:
                print(f"| {name} | | no: {r['error']} | | | | | |")
                continue
            diff = r["max_abs_logit_diff"]
            print(
                f"| {name} | {r['transformers']} | yes | {r['same_input_ids']} / "
                f"{r['same_pixels']} | {r['token_type_ids']} | {row['rope_theta_here']:g} / "
                f"{r['rope_theta']:g} | {'n/a' if diff is None else f'{diff:.2e}'} | "
                f"{r['same_generation']} |"
            )
    for row in rows:
        print(
            f"{row['model']}: llavakit vs transformers {row['here']} max abs logit diff "
            f"{row['llavakit_vs_here_max_abs_logit_diff']:.2e}; largest |logit| "
            f"{row['max_abs_logit']:.3f}"
        )
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
