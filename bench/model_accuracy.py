"""How well, and how fast, the sample model scores VADER's own human-rated tweets.

    .venv/bin/python bench/model_accuracy.py [--json PATH]

Data: tweets_GroundTruth.txt from the vaderSentiment 3.3.2 sdist (wml_localplatform.tweets), 4,200 tweets each
rated by 20 people. Truth: POSITIVE when the raters' mean is > 0, NEGATIVE when < 0; tweets rated exactly 0
are dropped, since the model has only the two labels. Prints figures; asserts nothing.

The paper's F1 of 0.96 for tweets (Hutto & Gilbert, ICWSM 2014, Table 4) is for three classes (positive,
neutral, negative; VADER's compound thresholded at +-0.05) and the 2014 lexicon, so the comparison with
this two-class figure is only indicative.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _machine import describe, machine
from _tweets import load_tweets
from wml_localplatform.tweets import DATA_FILE, SDIST
from wml_server.models.sentiment import NEGATIVE, POSITIVE, SentimentModel

PAPER_F1_TWEETS = 0.96
PAPER = "Hutto & Gilbert, ICWSM 2014, Table 4: tweets, 3 classes (pos/neutral/neg, thresholds +-0.05)"
CLASSES = (POSITIVE, NEGATIVE)


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int  # tweets of this class in the truth


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def class_scores(truth: list[str], predicted: list[str], label: str) -> ClassScores:
    tp = sum(t == label and p == label for t, p in zip(truth, predicted, strict=True))
    fp = sum(t != label and p == label for t, p in zip(truth, predicted, strict=True))
    fn = sum(t == label and p != label for t, p in zip(truth, predicted, strict=True))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ClassScores(precision, recall, f1, tp + fn)


def scoring_rate(model: SentimentModel, texts: list[str], runs: int) -> float:
    """Tweets per second of one batch predict over all texts, the best of `runs`."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        model.predict(texts)
        best = min(best, time.perf_counter() - started)
    return len(texts) / best


def evaluate(runs: int) -> dict[str, Any]:
    before = machine()  # the load average before this run
    tweets = load_tweets()
    polar = [t for t in tweets if t.mean != 0]
    truth = [POSITIVE if t.mean > 0 else NEGATIVE for t in polar]
    texts = [t.text for t in polar]
    model = SentimentModel()
    predicted, _ = model.predict(texts)
    per_class = {label: class_scores(truth, predicted, label) for label in CLASSES}
    accuracy = _ratio(sum(t == p for t, p in zip(truth, predicted, strict=True)), len(truth))
    macro_f1 = sum(s.f1 for s in per_class.values()) / len(per_class)
    weighted_f1 = sum(s.f1 * s.support for s in per_class.values()) / len(truth)
    return {
        "data": f"{DATA_FILE} from {SDIST}",
        "tweets": len(tweets),
        "evaluated": len(polar),
        "dropped_neutral": len(tweets) - len(polar),
        "accuracy": accuracy,
        "classes": {label: asdict(s) for label, s in per_class.items()},
        "macro_f1": macro_f1,
        "weighted_f1": weighted_f1,
        "paper_f1": PAPER_F1_TWEETS,
        "paper_setup": PAPER,
        "model_rate_per_s": scoring_rate(model, texts, runs),
        "rate_runs": runs,
        "model": model.runtime_environment,
        "machine": before,
    }


def report(figures: dict[str, Any]) -> str:
    classes = figures["classes"]
    lines = [
        f"Sample model ({figures['model']}) on {figures['data']}",
        f"{figures['evaluated']} tweets rated positive or negative "
        f"({classes[POSITIVE]['support']} / {classes[NEGATIVE]['support']}); "
        f"{figures['dropped_neutral']} rated exactly 0 dropped",
        "",
        f"{'':<22}{'precision':>10}{'recall':>10}{'F1':>10}{'support':>10}",
    ]
    for label in CLASSES:
        s = classes[label]
        lines.append(f"{label:<22}{s['precision']:>10.3f}{s['recall']:>10.3f}{s['f1']:>10.3f}{s['support']:>10}")
    lines += [
        f"{'macro F1':<22}{'':>20}{figures['macro_f1']:>10.3f}",
        f"{'weighted F1':<22}{'':>20}{figures['weighted_f1']:>10.3f}",
        f"{'accuracy':<22}{figures['accuracy']:>10.3f}",
        f"{'paper F1 (tweets)':<22}{'':>20}{figures['paper_f1']:>10.2f}   indicative only: {figures['paper_setup']}",
        "",
        f"{'model-only rate':<22}{figures['model_rate_per_s']:>10,.0f} tweets/s "
        f"(one predict() of {figures['evaluated']} texts, best of {figures['rate_runs']})",
        f"machine: {describe(figures['machine'])}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--runs", type=int, default=3, help="timed predict() runs; the best counts (default 3)")
    args = parser.parse_args(argv)
    figures = evaluate(args.runs)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
