"""Which frameworks the repository takes, and what a version's content must look like for each.

Everything here reads the content's bytes without running any of it: a pickle is only recognised by its
header here; whether it really loads is checked by loading it in a sandboxed worker (`validate.py`).
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

SKLEARN = "scikit-learn"
MLLIB = "mllib"
# Names the v3 clients and people use for each framework.
_ALIASES = {"scikit-learn": SKLEARN, "sklearn": SKLEARN, "scikit_learn": SKLEARN,
            "mllib": MLLIB, "spark-mllib": MLLIB, "spark": MLLIB, "sparkml": MLLIB}

# Content formats.
PICKLE = "pickle"  # a pickle or joblib file, as is
PICKLE_TAR = "pickle-tar"  # a .tar.gz holding one pickle or joblib file: how the v3 client uploads pipelines
SKOPS = "skops"  # skops's zip format: loads without running code
MLLIB_TAR = "mllib-tar"  # a .tar.gz of a saved Spark MLlib PipelineModel directory
PICKLED = frozenset({PICKLE, PICKLE_TAR})
# Formats the built-in engine can score (MLlib needs the Spark engine).
DEPLOYABLE = frozenset({PICKLE, PICKLE_TAR, SKOPS})

_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".sav")
_MAX_MEMBERS = 100_000


class ContentError(ValueError):
    """The content is not what its framework takes; `code` is the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Kind:
    framework: str  # SKLEARN or MLLIB
    version: str  # the framework's version, as declared (else what this service runs)

    @property
    def model_type(self) -> str:
        """As the v3 API named them: `scikit-learn-1.5`, `mllib-3.5`."""
        return f"{self.framework}-{self.version}"


def framework_of(name: str, version: str | None) -> Kind:
    """The framework a create names, or ContentError `unsupported_framework`."""
    canonical = _ALIASES.get(name.strip().lower())
    if canonical is None:
        raise ContentError("unsupported_framework",
                           f"Framework `{name[:60]}` is not supported: use `scikit-learn` (pickled, or in skops's "
                           "format) or `mllib` (stored for the Spark engine).")
    # The version this service loads models with (read from the package's metadata: the service's own process
    # never imports scikit-learn; models are loaded in workers).
    default = ".".join(metadata.version("scikit-learn").split(".")[:2]) if canonical == SKLEARN else "3.5"
    return Kind(canonical, (version or default).strip()[:32] or default)


def content_format(kind: Kind, path: Path) -> str:
    """The format of a version's content, or ContentError saying what is wrong with it."""
    with path.open("rb") as f:
        head = f.read(8)
    if not head:
        raise ContentError("invalid_model_content", "The content is empty.")
    if kind.framework == MLLIB:
        _check_mllib(path)
        return MLLIB_TAR
    if head.startswith(b"PK\x03\x04"):
        return _check_skops(path)
    if head.startswith(b"\x1f\x8b"):
        _one_pickle_in_tar(path)
        return PICKLE_TAR
    if _looks_pickled(head):
        return PICKLE
    raise ContentError("invalid_model_content",
                       "The content is not a scikit-learn model: expected a pickle or joblib file, a .tar.gz "
                       "holding one, or a skops file.")


def _looks_pickled(head: bytes) -> bool:
    # Protocol 2 and later open with PROTO; joblib's compressed files open with their own magic.
    return (head[:1] == b"\x80" and 2 <= head[1] <= 5) or head.startswith((b"ZF", b"\x78\x01", b"\x78\x9c",
                                                                           b"\x78\xda", b"\xfd7zXZ", b"BZh"))


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ContentError("invalid_model_content", f"The content is not a readable .tar.gz ({exc}).") from None


def _members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    try:
        for member in tar:
            members.append(member)
            if len(members) > _MAX_MEMBERS:
                raise ContentError("invalid_model_content", f"The archive has over {_MAX_MEMBERS} entries.")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ContentError("invalid_model_content", f"The archive is corrupt ({exc}).") from None
    for member in members:
        name = PurePosixPath(member.name)
        if name.is_absolute() or ".." in name.parts:
            raise ContentError("invalid_model_content", f"The archive's entry `{member.name[:100]}` leaves it.")
        if not (member.isfile() or member.isdir()):
            raise ContentError("invalid_model_content",
                               f"The archive's entry `{member.name[:100]}` is not a file or a folder.")
    return members


def _one_pickle_in_tar(path: Path) -> None:
    with _open_tar(path) as tar:
        files = [m for m in _members(tar) if m.isfile()]
        if len(files) != 1 or not files[0].name.lower().endswith(_PICKLE_SUFFIXES):
            names = ", ".join(m.name[:60] for m in files[:5]) or "nothing"
            raise ContentError("invalid_model_content",
                               "A .tar.gz of a scikit-learn model must hold exactly one pickle or joblib file "
                               f"(.pkl, .pickle, .joblib); it holds {names}.")
        extracted = tar.extractfile(files[0])
        head = extracted.read(8) if extracted is not None else b""
    if not _looks_pickled(head):
        raise ContentError("invalid_model_content", f"`{files[0].name[:100]}` in the archive is not a pickle.")


def _check_skops(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            if "schema.json" not in archive.namelist():
                raise ContentError("invalid_model_content",
                                   "The content is a zip file but not a skops file (it has no schema.json).")
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ContentError("invalid_model_content", f"The skops file is corrupt ({exc}).") from None
    if bad is not None:
        raise ContentError("invalid_model_content", f"The skops file is corrupt (entry `{bad[:100]}`).")
    from skops.io import get_untrusted_types  # reads schema.json only: builds nothing

    try:
        untrusted = get_untrusted_types(file=path)
    except Exception as exc:  # skops raises a variety of errors on malformed schemas
        raise ContentError("invalid_model_content", f"The skops file does not parse ({type(exc).__name__}).") \
            from None
    if untrusted:
        shown = ", ".join(untrusted[:5]) + (f" and {len(untrusted) - 5} more" if len(untrusted) > 5 else "")
        raise ContentError("untrusted_types",
                           f"The skops file uses types that skops does not trust by default: {shown}. Only "
                           "scikit-learn's, numpy's and scipy's own types are loaded.")
    return SKOPS


def _check_mllib(path: Path) -> None:
    """A saved PipelineModel: `metadata/part-00000*` (JSON lines) naming PipelineModel, and `stages/`."""
    with _open_tar(path) as tar:
        members = _members(tar)
        # Spark 2 and 3 write metadata/part-00000; Spark 4 metadata/part-00000-<uuid>-c000.txt.
        metadata = [m for m in members if m.isfile() and PurePosixPath(m.name).parent.name == "metadata"
                    and PurePosixPath(m.name).name.startswith("part-00000")]
        root = min(metadata, key=lambda m: len(PurePosixPath(m.name).parts), default=None)
        if root is None:
            raise ContentError("invalid_model_content",
                               "The archive is not a saved Spark MLlib model: it has no metadata/part-00000.")
        extracted = tar.extractfile(root)
        first = extracted.readline(1 << 20) if extracted is not None else b""
    try:
        klass = json.load(io.BytesIO(first)).get("class", "")
    except (ValueError, AttributeError):
        raise ContentError("invalid_model_content", "The model's metadata/part-00000 is not JSON.") from None
    if klass != "org.apache.spark.ml.PipelineModel":
        raise ContentError("invalid_model_content",
                           f"The archive holds a `{str(klass)[:100]}`, not an org.apache.spark.ml.PipelineModel.")
