"""lmms-eval drives a llavakit model both ways the README describes (issue 17).

    python bench/lmms_eval_check.py --lmms-python /tmp/lmms/bin/python

`--lmms-python` is an interpreter with lmms-eval installed (its own venv: it pins its own
transformers; `pip install torch lmms-eval` there). A tiny random llavakit checkpoint answers a
small local task (coloured squares, written here, so nothing is downloaded) three ways:
- llavakit's own engine (greedy), the reference;
- lmms-eval `--model openai` against `llavakit serve` (the task asks for 4096 new tokens, more
  than the server's 1024, and names a model the server does not call itself);
- lmms-eval `--model llava_hf` on the `llavakit export-hf` folder, under the lmms-eval venv's
  transformers.
It prints the exact command lines it ran and how many answers equal llavakit's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from export_compat import write_checkpoint

COLOURS = {
    "red": (200, 30, 30),
    "green": (30, 160, 60),
    "blue": (40, 60, 200),
    "yellow": (230, 210, 40),
}
QUESTIONS = ("What colour is the square?", "Describe the image briefly.")
TASK = "llavakit_squares"
SHORT_TOKENS = 16
PROJECTOR_GAIN = 30.0
CONTEXT = 224
"""Prompts here are 174-188 tokens, so the server's cut leaves 36-50 tokens for an answer."""
LONG_TOKENS = 4096
TASK_UTILS = '''"""doc_to_* functions of the llavakit check task (written by bench/lmms_eval_check.py)."""
from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"exact_match": float(results[0].strip().lower() == doc["answer"])}
'''


def task_yaml(name: str, data: Path, max_new_tokens: int) -> str:
    return f"""task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  temperature: 0
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def image_sensitive(checkpoint: Path) -> Path:
    """The random checkpoint with its projector scaled up, so that answers depend on the image
    (a random projector's small features barely move a random language model), and a context of
    CONTEXT tokens, so that answers cut by it stay short on a CPU."""
    import torch

    from llavakit.model.io import load_checkpoint, save_checkpoint

    model, processor = load_checkpoint(checkpoint, overrides={"max_length": CONTEXT})
    with torch.no_grad():
        model.projector[2].weight.mul_(PROJECTOR_GAIN)
    return save_checkpoint(model, processor, checkpoint.parent / "checkpoint-image-sensitive")


def write_task(workdir: Path) -> list[dict]:
    """Images, questions and two task configs (short and long answers) under workdir/task."""
    from PIL import Image

    folder = workdir / "task"
    folder.mkdir(parents=True, exist_ok=True)
    docs = []
    for name, rgb in COLOURS.items():
        for size in (28, 44):
            image = Image.new("RGB", (size + 12, size), (245, 245, 245))
            image.paste(Image.new("RGB", (size // 2, size // 2), rgb), (4, 6))
            path = folder / f"{name}_{size}.png"
            image.save(path)
            for question in QUESTIONS:
                docs.append(
                    {"id": len(docs), "image": str(path), "question": question, "answer": name}
                )
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    (folder / "utils.py").write_text(TASK_UTILS)
    (folder / f"{TASK}.yaml").write_text(task_yaml(TASK, data, SHORT_TOKENS))
    (folder / f"{TASK}_long.yaml").write_text(task_yaml(f"{TASK}_long", data, LONG_TOKENS))
    return docs


def llavakit_answers(
    checkpoint: Path, docs: list[dict], max_new_tokens: int, room: bool
) -> list[str]:
    """llavakit's own greedy answers; `room`: as the server caps them (by the context's room)."""
    from PIL import Image

    from llavakit.infer.engine import Engine, Request, SamplingParams

    engine = Engine.load(checkpoint, device="cpu")
    answers = []
    for doc in docs:
        messages = [{"role": "user", "content": f"<image>\n{doc['question']}"}]
        image = Image.open(doc["image"]).convert("RGB")
        limit = max_new_tokens
        if room:
            prompt = engine.processor.encode(messages, [image], add_generation_prompt=True)
            limit = min(limit, 1024, engine.context_length - len(prompt.input_ids))
        answers.append(
            engine.complete(Request(messages, [image], SamplingParams(max_new_tokens=limit))).text
        )
    return answers


def lmms_eval(python: str, model: str, model_args: str, task: str, workdir: Path, out: Path):
    """Run lmms-eval; returns (command line, answers by doc id, seconds)."""
    command = [python, "-m", "lmms_eval", "--model", model, "--model_args", model_args]
    command += ["--tasks", task, "--include_path", str(workdir / "task"), "--batch_size", "1"]
    command += ["--log_samples", "--output_path", str(out)]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
    }
    env["OMP_NUM_THREADS"] = "1"
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - started
    if done.returncode:
        sys.exit(f"lmms-eval failed ({shlex.join(command)}):\n{done.stderr[-4000:]}")
    samples = sorted(out.rglob(f"*samples_{task}.jsonl"))
    if not samples:
        sys.exit(f"lmms-eval wrote no samples under {out}:\n{done.stderr[-2000:]}")
    answers = {}
    for line in samples[-1].read_text().splitlines():
        record = json.loads(line)  # lmms-eval 0.7: doc_id, filtered_resps (a string or a list)
        response = record["filtered_resps"]
        answers[record["doc_id"]] = response[0] if isinstance(response, list) else response
    return shlex.join(command), answers, seconds


def serve(checkpoint: Path, port: int, log: Path) -> subprocess.Popen:
    import httpx

    command = [sys.executable, "-m", "llavakit", "serve", str(checkpoint), "--port", str(port)]
    command += ["--device", "cpu"]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.3)
    process.terminate()
    sys.exit(f"the server did not start:\n{log.read_text()[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmms-python", required=True, help="python of a venv with lmms-eval")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    args = parser.parse_args()

    from llavakit.model.convert_hf import export_hf

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lmms-eval-check-"))
    checkpoint = image_sensitive(write_checkpoint(workdir, "llama3-rope", "pad"))
    export_hf(checkpoint, workdir / "hf")
    docs = write_task(workdir)
    print(f"work folder: {workdir}; {len(docs)} questions", flush=True)
    reference = {
        "short": llavakit_answers(checkpoint, docs, SHORT_TOKENS, room=False),
        "long": llavakit_answers(checkpoint, docs, LONG_TOKENS, room=True),
    }
    runs = []
    server = serve(checkpoint, args.port, workdir / "serve.log")
    try:
        base = f"http://127.0.0.1:{args.port}/v1"
        openai_args = f"model=llava-hf/llava-1.5-7b-hf,base_url={base},api_key=none"
        openai_args += ",num_concurrent=8,timeout=600"  # lmms-eval's default 10 s: short on a CPU
        for task, kind in ((TASK, "short"), (f"{TASK}_long", "long")):
            out = workdir / f"out-openai-{kind}"
            runs.append(
                (
                    "openai",
                    kind,
                    *lmms_eval(args.lmms_python, "openai", openai_args, task, workdir, out),
                )
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    hf_args = f"pretrained={workdir / 'hf'},device=cpu,device_map=cpu,dtype=float32"
    out = workdir / "out-llava_hf-short"
    runs.append(
        ("llava_hf", "short", *lmms_eval(args.lmms_python, "llava_hf", hf_args, TASK, workdir, out))
    )

    print("\n| lmms-eval model | max_new_tokens | answers equal to llavakit's | seconds |")
    print("|---|---|---|---|")
    for model, kind, _, answers, seconds in runs:
        expected = reference[kind]
        same = sum(answers.get(doc["id"], "").strip() == expected[doc["id"]] for doc in docs)
        tokens = SHORT_TOKENS if kind == "short" else LONG_TOKENS
        print(f"| {model} | {tokens} | {same}/{len(docs)} | {seconds:.0f} |")
    print("\ncommand lines:")
    for _, _, command, _, _ in runs:
        print(" ", command)


if __name__ == "__main__":
    main()
