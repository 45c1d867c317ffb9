"""`llavakit export-hf | import-hf | import-llava | apply-delta | convert-bin`: conversions."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    export = subparsers.add_parser(
        "export-hf",
        help="write a llavakit checkpoint as a transformers LlavaForConditionalGeneration folder",
        description="Write a folder that transformers' LlavaForConditionalGeneration (AnyRes "
        "models: LlavaNextForConditionalGeneration) and AutoProcessor load, and vLLM, SGLang, "
        "lmms-eval serve: config, safetensors weights, tokenizer with <image>, chat template, "
        "image processor. Models the HF classes cannot represent (linear/mlp3x/identity "
        "projectors, <im_start>/<im_end>, anyres_max_N, LLaVAR high-res) are refused.",
    )
    export.add_argument("checkpoint", help="llavakit checkpoint folder")
    export.add_argument("out", help="output folder")
    export.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="weights dtype")
    export.add_argument("--max-shard-size", default="5GB", help="largest weight file (e.g. 2GB)")
    export.set_defaults(func=_export_hf)

    imp = subparsers.add_parser(
        "import-hf",
        help="read a transformers LlavaForConditionalGeneration (or LlavaNext) folder into a "
        "llavakit checkpoint",
    )
    imp.add_argument("hf_dir", help="folder with a LlavaForConditionalGeneration checkpoint")
    imp.add_argument("out", help="output llavakit checkpoint folder")
    imp.add_argument(
        "--template", help="conversation template (default: the export's record, else vicuna_v1)"
    )
    imp.add_argument(
        "--image-aspect-ratio",
        choices=("pad", "crop", "resize"),
        help="image preprocessing (default: the export's record, else pad)",
    )
    imp.set_defaults(func=_import_hf)

    orig = subparsers.add_parser(
        "import-llava",
        help="read an original LLaVA checkpoint (mm_* config keys) into a llavakit checkpoint",
        description="Read a checkpoint of the original LLaVA repository (LlavaLlamaForCausalLM "
        "layout: mm_* config keys, model.mm_projector.* weights), or stage 1's projector-only "
        "output (mm_projector.safetensors) together with --llm. Pickled .bin weights are refused: "
        "convert them first with `llavakit convert-bin`.",
    )
    orig.add_argument("source", help="folder whose config.json has the mm_* keys")
    orig.add_argument("out", help="output llavakit checkpoint folder")
    orig.add_argument(
        "--vision-tower",
        required=True,
        help="local CLIP/SigLIP folder (original configs name a hub id in mm_vision_tower)",
    )
    orig.add_argument("--llm", help="base LLM folder, when SOURCE holds only the projector")
    orig.add_argument("--projector", help="projector file (mm_projector.safetensors)")
    orig.add_argument("--template", default="vicuna_v1", help="conversation template")
    orig.set_defaults(func=_import_llava)

    delta = subparsers.add_parser(
        "apply-delta",
        help="rebuild released LLaVA/LLaVAR weights from a base LLaMA and a weight delta",
        description="target = base + delta for every base tensor (extra rows and tensors come "
        "from the delta); writes an original-layout LLaVA folder for `llavakit import-llava`.",
    )
    delta.add_argument("base", help="base LLM folder (e.g. LLaMA-13B in HF format)")
    delta.add_argument("delta", help="released delta folder")
    delta.add_argument("out", help="output folder")
    delta.set_defaults(func=_apply_delta)

    to_safetensors = subparsers.add_parser(
        "convert-bin",
        help="rewrite pickled PyTorch weights (.bin) as safetensors, once",
        description="llavakit never unpickles weights on its own. This reads a pickled weight file "
        "(or every weight pickle of a folder, copying its other files) with torch's restricted "
        "loader (weights_only=True, which refuses code hidden in the file) and writes "
        "safetensors: IN.bin -> OUT.safetensors, or folder IN -> folder OUT "
        "(pytorch_model*.bin -> model*.safetensors).",
    )
    to_safetensors.add_argument("source", help="a .bin/.pt file, or a folder holding them")
    to_safetensors.add_argument("out", help="output .safetensors file, or output folder")
    to_safetensors.set_defaults(func=_convert_bin)


def _report(report) -> int:
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(report.folder)
    return 0


def _export_hf(args) -> int:
    from llavakit.model.convert_hf import export_hf

    return _report(export_hf(args.checkpoint, args.out, args.dtype, args.max_shard_size))


def _import_hf(args) -> int:
    from llavakit.model.convert_hf_import import import_hf

    return _report(import_hf(args.hf_dir, args.out, args.template, args.image_aspect_ratio))


def _import_llava(args) -> int:
    from llavakit.model.convert_llava import import_llava

    return _report(
        import_llava(
            args.source,
            args.out,
            args.vision_tower,
            llm=args.llm,
            projector=args.projector,
            template=args.template,
        )
    )


def _apply_delta(args) -> int:
    from llavakit.model.convert_llava import apply_delta

    return _report(apply_delta(args.base, args.delta, args.out))


def _convert_bin(args) -> int:
    from llavakit.model.convert_bin import convert_bin

    return _report(convert_bin(args.source, args.out))
