"""The benchmarks' data: VADER's own tweet ground truth (Hutto & Gilbert, ICWSM 2014), fetched at bench time.

`tweets_GroundTruth.txt` ships inside the source distribution of vaderSentiment 3.3.2 (in a nested archive,
additional_resources/hutto_ICWSM_2014.tar.gz). pip downloads the sdist from its configured index into a
cache folder outside the repository; the data is never committed. Format, one tweet a line (CRLF):
`id<TAB>mean human rating (-4..4, 20 raters)<TAB>text`.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from localplatform.config import cache_dir

PACKAGE, VERSION = "vaderSentiment", "3.3.2"
SDIST = f"{PACKAGE}-{VERSION}.tar.gz"
# The sdist as published for 3.3.2: a different file would give different figures.
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
DATA_FILE = "tweets_GroundTruth.txt"


@dataclass(frozen=True)
class Tweet:
    id: str
    mean: float  # the raters' mean sentiment, -4 (extremely negative) .. 4 (extremely positive)
    text: str


def bench_cache() -> Path:
    """~/.cache/wml-stream-operator/bench (or $WSO_CACHE/bench, as for the local platform)."""
    return cache_dir() / "bench"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sdist_path() -> Path:
    """The sdist in the cache, downloaded with pip (its configured index) when missing."""
    folder = bench_cache()
    path = folder / SDIST
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        print(f"downloading the {PACKAGE} {VERSION} sdist into {folder} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"{PACKAGE}=={VERSION}", "-d", str(folder)], check=True)
    digest = _sha256(path)
    if digest != SDIST_SHA256:
        raise RuntimeError(f"{path}: sha256 {digest}, expected {SDIST_SHA256}; delete it to download it again")
    return path


def _find(archive: tarfile.TarFile, name: str) -> bytes | None:
    """The content of the member called `name`, looking into nested .tar.gz / .tgz archives too."""
    nested: list[tarfile.TarInfo] = []
    for member in archive.getmembers():
        if not member.isfile():
            continue
        if Path(member.name).name == name:
            handle = archive.extractfile(member)
            assert handle is not None
            return handle.read()
        if member.name.endswith((".tar.gz", ".tgz")):
            nested.append(member)
    for member in nested:
        handle = archive.extractfile(member)
        assert handle is not None
        with tarfile.open(fileobj=io.BytesIO(handle.read()), mode="r:gz") as inner:
            found = _find(inner, name)
        if found is not None:
            return found
    return None


def parse(raw: bytes) -> list[Tweet]:
    tweets = []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(f"{DATA_FILE} line {number}: {len(fields)} tab-separated fields, expected 3")
        tweets.append(Tweet(fields[0], float(fields[1]), fields[2]))
    return tweets


def load_tweets() -> list[Tweet]:
    """All 4,200 rated tweets, in file order."""
    with tarfile.open(sdist_path(), mode="r:gz") as archive:
        raw = _find(archive, DATA_FILE)
    if raw is None:
        raise RuntimeError(f"no {DATA_FILE} in {SDIST}")
    return parse(raw)


def tweet_records(count: int) -> list[bytes]:
    """`count` input records {"tweet": text, "id": i}, the texts of all 4,200 tweets cycled."""
    texts = [t.text for t in load_tweets()]
    return [json.dumps({"tweet": texts[i % len(texts)], "id": i}).encode() for i in range(count)]


if __name__ == "__main__":
    everything = load_tweets()
    polar = [t for t in everything if t.mean != 0]
    print(f"{len(everything)} tweets, {len(polar)} polar: {sum(t.mean > 0 for t in polar)} positive, "
          f"{sum(t.mean < 0 for t in polar)} negative")
