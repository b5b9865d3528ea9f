"""The benchmarks' data: VADER's human-rated tweets from wml_localplatform.tweets, as bench needs them.

wml_localplatform.tweets fetches the vaderSentiment 3.3.2 sdist (sha256-checked, into $WSO_CACHE/data) and reads
tweets_GroundTruth.txt from its nested archive; this adds what only the benchmarks want: download notes on
stderr (stdout holds the figures) and input records for the stream benchmark.
"""

from __future__ import annotations

import json
import sys

from wml_localplatform import tweets
from wml_localplatform.tweets import Tweet


def _note(text: str) -> None:
    print(text, file=sys.stderr)


def load_tweets() -> list[Tweet]:
    """All 4,200 rated tweets, in file order."""
    return tweets.load_tweets(say=_note)


def tweet_records(count: int) -> list[bytes]:
    """`count` input records {"tweet": text, "id": i}, the texts of all 4,200 tweets cycled."""
    texts = [t.text for t in load_tweets()]
    return [json.dumps({"tweet": texts[i % len(texts)], "id": i}).encode() for i in range(count)]


if __name__ == "__main__":
    everything = load_tweets()
    polar = [t for t in everything if t.mean != 0]
    print(f"{len(everything)} tweets, {len(polar)} polar: {sum(t.mean > 0 for t in polar)} positive, "
          f"{sum(t.mean < 0 for t in polar)} negative")
