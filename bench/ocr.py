"""OCR for LLaVAR: word recall, text-rich filtering quality, and images/second on this machine.

1. Word recall on rendered text: ~50 images (480-800 px) with 1-4 word lines of common English
   words in six DejaVu faces at 16-40 px, read as LLaVAR does (short edge shrunk to 384) and at
   full size. A word counts as found when the OCR output contains it (case-insensitive, as a
   multiset). Target: recall >= 0.9 for words of >= 3 letters at >= 16 px. Precision = share of
   OCR words (>= 3 letters) that are on the image.
2. The synthetic world's text-rich images (signs, posters, labels, covers at 192 px) against
   their annotated words, and the filter's precision/recall at separating them from the world's
   shape scenes with the default thresholds. Target: >= 0.95 both.
3. Throughput: images/s reading 640x480 images in one process (engine's default threads), in one
   process with one thread, and with one single-threaded worker process per CPU core (the time
   to start the workers included), best of two alternating rounds.

    .venv/bin/python bench/ocr.py [--n 50] [--throughput-images 24] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llavakit.datagen.llavar.filter import FilterThresholds, drop_reason, text_scores  # noqa: E402
from llavakit.datagen.llavar.items import ImageItem  # noqa: E402
from llavakit.datagen.llavar.ocr import OcrConfig, OcrResult, run_ocr  # noqa: E402
from llavakit.datagen.ocr.engines import make_engine, read_image  # noqa: E402

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FACES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansCondensed.ttf",
)
WORDS = """open sale coffee shop market river city north south garden bakery fresh bread daily news
paper world music night live show ticket price free entry hotel parking street avenue public
library school science history summer winter festival pizza burger station train platform exit
welcome please close door keep right left only today special offer discount store fruit green
apple orange water drink beer wine menu lunch dinner breakfast family friends house rent office
bank post museum theatre cinema movie book reading club sport football tennis golf beach island
mountain forest lake""".split()


def render_page(rng: random.Random) -> tuple[Image.Image, list[str]]:
    """One image of lines at random sizes (16-40 px), faces, cases and positions."""
    width, height = rng.choice([(640, 480), (800, 600), (512, 512), (480, 640)])
    image = Image.new("RGB", (width, height), tuple(rng.randint(150, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    truth: list[str] = []
    y = rng.randint(10, 40)
    while True:
        font = ImageFont.truetype(str(FONT_DIR / rng.choice(FACES)), rng.randint(16, 40))
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 4))]
        case = rng.random()
        words = (
            [w.upper() for w in words]
            if case < 0.3
            else ([w.capitalize() for w in words] if case < 0.5 else words)
        )
        text = " ".join(words)
        _, _, right, bottom = draw.textbbox((0, 0), text, font=font)
        if y + bottom > height - 10:
            break
        if right + 20 > width:
            y += bottom + 10
            continue
        draw.text(
            (rng.randint(10, width - right - 10), y),
            text,
            font=font,
            fill=tuple(rng.randint(0, 90) for _ in range(3)),
        )
        truth += words
        y += bottom + rng.randint(8, 30)
    return image, truth


def words_of(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Za-z]+", text) if len(w) >= 3]


def recall_precision(pages: list[tuple[list[str], list[str]]]) -> dict[str, float]:
    """Multiset recall and precision over (truth words, OCR words) pairs, words >= 3 letters."""
    hits = truth_total = found_total = 0
    for truth, found in pages:
        truth_counts = Counter(w.lower() for w in truth if len(w) >= 3)
        found_counts = Counter(found)
        hits += sum(min(n, found_counts[w]) for w, n in truth_counts.items())
        truth_total += sum(truth_counts.values())
        found_total += sum(found_counts.values())
    return {
        "recall": round(hits / truth_total, 4),
        "precision": round(hits / found_total, 4),
        "words": truth_total,
    }


def bench_recall(n: int) -> dict:
    rng = random.Random(0)
    pages = [render_page(rng) for _ in range(n)]
    engine = make_engine("rapidocr")
    results = {}
    for label, short_edge in (("short_edge_384", 384), ("full_size", None)):
        read = []
        for image, truth in pages:
            lines = read_image(image, engine, short_edge)
            read.append(
                (
                    truth,
                    [w for line in lines if line.confidence >= 0.7 for w in words_of(line.text)],
                )
            )
        results[label] = recall_precision(read)
    return {"images": n, **results}


def bench_world(n: int) -> dict | None:
    """Recall on the world's text images and the filter's separation from its scenes."""
    try:
        from llavakit.world.scenes import render_scene
        from llavakit.world.text_images import FontBook, render_text_image
    except ImportError:
        return None
    rng = random.Random(1)
    fonts = FontBook()
    engine = make_engine("rapidocr")
    thresholds = FilterThresholds()
    read, decisions = [], []
    for index in range(n):
        for kind in ("text", "scene"):
            if kind == "text":
                image, annotation = render_text_image(rng, index, f"t{index}.png", fonts)
                truth = [t.text for t in annotation.texts if t.level == "word"]
            else:
                image, annotation = render_scene(rng, index, f"s{index}.png")
                truth = []
            lines = read_image(image, engine)
            if kind == "text":
                read.append(
                    (
                        truth,
                        [
                            w
                            for line in lines
                            if line.confidence >= 0.7
                            for w in words_of(line.text)
                        ],
                    )
                )
            result = OcrResult(f"{kind}{index}", "", image.width, image.height, lines)
            kept = drop_reason(text_scores(result, thresholds), thresholds) is None
            decisions.append((kind == "text", kept))
    true_positive = sum(1 for is_text, kept in decisions if is_text and kept)
    kept_total = sum(1 for _, kept in decisions if kept)
    return {
        "text_images": n,
        "scenes": n,
        "word_recall": recall_precision(read),
        "filter_precision": round(true_positive / max(1, kept_total), 4),
        "filter_recall": round(true_positive / n, 4),
    }


def bench_throughput(n: int, rounds: int = 2) -> dict:
    rng = random.Random(2)
    folder = Path(tempfile.mkdtemp(prefix="llavakit_ocr_bench_"))
    items = []
    for index in range(n):
        image, _ = render_page(rng)
        image = image.resize((640, 480))
        path = folder / f"{index:03d}.png"
        image.save(path)
        items.append(ImageItem(path.name, path))
    config = OcrConfig()
    cores = os.cpu_count() or 1

    def one_process(threads: int) -> float:
        engine = make_engine("rapidocr", threads=threads)
        read_image(Image.open(items[0].path).convert("RGB"), engine)  # warm-up
        start = time.perf_counter()
        for item in items:
            read_image(Image.open(item.path).convert("RGB"), engine)
        return n / (time.perf_counter() - start)

    def all_cores() -> float:
        start = time.perf_counter()  # includes starting the workers, as a real run does
        assert len(list(run_ocr(items, config, workers=cores))) == n
        return n / (time.perf_counter() - start)

    runs = {
        "one_process_default_threads": lambda: one_process(0),
        "one_process_one_thread": lambda: one_process(1),
        f"{cores}_worker_processes_one_thread_each": all_cores,
    }
    # Best of `rounds`, alternating configurations: other work on a shared machine only slows.
    rates = {name: 0.0 for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            rates[name] = max(rates[name], run())
    return {
        "images": n,
        "size": "640x480 -> 384 short edge",
        "cores": cores,
        "rounds": rounds,
        "images_per_second": {k: round(v, 2) for k, v in rates.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="rendered images for recall")
    parser.add_argument("--world", type=int, default=50, help="world text images (and scenes)")
    parser.add_argument("--throughput-images", type=int, default=24)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = {
        "recall_rendered": bench_recall(args.n),
        "world": bench_world(args.world),
        "throughput": bench_throughput(args.throughput_images),
    }
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
