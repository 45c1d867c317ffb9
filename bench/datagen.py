"""Teacher throughput against concurrency, on the local OpenAI-protocol server.

Every reply is delayed by a fixed latency (100 ms by default), as a remote model would be, so
throughput should grow with the number of requests in flight until this machine's CPU becomes
the limit. Target: at least 8 requests/s at concurrency 16.

    .venv/bin/python bench/datagen.py [--latency 0.1] [--seconds 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from fake_openai import FakeOpenAIServer  # noqa: E402

from llavakit.datagen.llava import build_request  # noqa: E402
from llavakit.datagen.prompts import load_task_prompt  # noqa: E402
from llavakit.datagen.teacher import OpenAITeacher, TeacherConfig  # noqa: E402

ANSWER = "Question:\nWhat is shown?\n===\nAnswer:\nA dog in a park."
TARGET_AT_16 = 8.0


def measure(server: FakeOpenAIServer, concurrency: int, n_requests: int) -> float:
    """Requests per second for n real pipeline requests (full LLaVA prompts) at a concurrency."""
    prompt = load_task_prompt("conversation")
    requests = [
        build_request(
            {"image_id": i, "captions": [f"A dog in a park, take {i}."], "instances": []},
            "conversation",
            prompt,
            {"temperature": 1.0},
        )
        for i in range(n_requests)
    ]
    config = TeacherConfig(model="bench", base_url=server.base_url, concurrency=concurrency)
    with OpenAITeacher(config) as teacher:
        start = time.perf_counter()
        results = list(teacher.complete(requests))
        elapsed = time.perf_counter() - start
    assert all(result.ok for result in results), "the local server failed a request"
    return n_requests / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added per reply")
    parser.add_argument("--seconds", type=float, default=2.0, help="ideal duration per row")
    args = parser.parse_args()
    rows = []
    with FakeOpenAIServer(respond=lambda body: ANSWER, latency_s=args.latency) as server:
        measure(server, 4, 8)  # warm up: imports, connections
        for concurrency in (1, 4, 16):
            n_requests = max(concurrency, round(args.seconds * concurrency / args.latency))
            rate = measure(server, concurrency, n_requests)
            rows.append((concurrency, n_requests, rate, concurrency / args.latency))
    print(f"teacher throughput, {args.latency * 1000:.0f} ms per reply, local server")
    print(f"{'concurrency':>11} {'requests':>9} {'req/s':>8} {'ideal':>8} {'efficiency':>10}")
    for concurrency, n_requests, rate, ideal in rows:
        print(f"{concurrency:>11} {n_requests:>9} {rate:>8.1f} {ideal:>8.1f} {rate / ideal:>10.0%}")
    at_16 = rows[-1][2]
    verdict = "meets" if at_16 >= TARGET_AT_16 else "MISSES"
    print(f"concurrency 16: {at_16:.1f} req/s, {verdict} the target of {TARGET_AT_16:.0f} req/s")
    return 0 if at_16 >= TARGET_AT_16 else 1


if __name__ == "__main__":
    sys.exit(main())
