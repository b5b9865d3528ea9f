"""What a batch costs to cross to a scoring worker and back, per record, beside the model's own cost.

    .venv/bin/python bench/scoring_frames.py [--batch 500] [--rounds 200]

The engine hands a stream's batches to scoring workers in one frame each way (wml_server/engine/frames.py).
Printed, per record, each best of --rounds:
- pack + unpack in this process (the service's side and the worker's side of the codec);
- a round trip through a real worker over its pipes (engine/process_scorer.py), model included, minus the
  model alone in this process: what crossing adds;
- the model alone (records.score_batch: JSON in, VADER, JSON out).
Asserts nothing about time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from _tweets import tweet_records
from wml_server.engine import frames
from wml_server.engine.process_scorer import ProcessScorer
from wml_server.engine.records import score_batch
from wml_server.models.registry import default_registry
from wml_server.models.sentiment import SENTIMENT_MODEL_ID


def best(rounds: int, run: Callable[[], object]) -> float:
    fastest = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        fastest = min(fastest, time.perf_counter() - started)
    return fastest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    values: list[bytes | None] = list(tweet_records(args.batch))
    model = default_registry().get(SENTIMENT_MODEL_ID)
    assert model is not None
    scored = score_batch(model, values)
    request, reply = frames.pack_values(values), frames.pack_scored(scored)
    head = frames.SIZE.size

    codec = best(args.rounds, lambda: (frames.unpack_values(frames.pack_values(values)[head:]),
                                       frames.unpack_scored(frames.pack_scored(scored)[head:], len(values))))
    alone = best(max(10, args.rounds // 10), lambda: score_batch(model, values))
    worker = ProcessScorer(SENTIMENT_MODEL_ID, "bench").start()
    try:
        worker.score(values)
        through = best(max(10, args.rounds // 10), lambda: worker.score(values))
    finally:
        worker.close()
    per = 1e6 / args.batch
    print(f"batch of {args.batch} tweets: request frame {len(request):,} bytes, reply {len(reply):,} bytes")
    print(f"  codec, both sides, in one process:      {codec * per:6.2f} µs/record")
    print(f"  model alone (JSON in, VADER, JSON out): {alone * per:6.2f} µs/record")
    print(f"  through a worker, model included:       {through * per:6.2f} µs/record")
    print(f"  what crossing adds:                     {(through - alone) * per:6.2f} µs/record "
          f"({(through - alone) / alone:.1%} of the model)")


if __name__ == "__main__":
    main()
