"""The model worker's child process, run as a script: `python -I -S child.py <parent pid>`.

It loads one user's model (untrusted code: unpickling runs whatever the pickle says) and scores batches for its
parent over stdin/stdout: 4-byte big-endian length + payload, JSON control messages, the model's bytes as one
raw frame. Before it reads the model it gives up what it must not have: its parent dies -> it dies
(PR_SET_PDEATHSIG), no core dumps, an address-space limit, no new privileges, a network namespace of its own
when the kernel lets it, and Landlock (read-only access beneath the libraries, no write anywhere, no TCP).
It imports nothing of wml_server: the parent passes the library paths, and landlock.py (standard library only)
is loaded by file path before the sandbox closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import io
import json
import math
import os
import resource
import struct
import sys
import tarfile
import zipfile
from typing import Any

EXIT_ORPHAN = 70  # the parent was gone before we started
EXIT_MEMORY = 71  # MemoryError: over the address-space limit
EXIT_PROTOCOL = 72  # the parent sent something that is not the protocol
EXIT_NO_NEW_PRIVS = 73  # prctl(PR_SET_NO_NEW_PRIVS) failed
MAX_FRAME = 1 << 30
_MODEL_SUFFIXES = (".pkl", ".pickle", ".joblib")
_PACKAGES = ("numpy", "scipy", "sklearn", "skops", "joblib", "threadpoolctl", "packaging", "prettytable", "wcwidth")
_SYSTEM_READABLE = ("/usr/lib", "/lib", "/lib64", "/usr/lib64", "/etc/ld.so.cache", "/dev/null", "/dev/urandom",
                    "/proc/cpuinfo", "/sys/devices/system/cpu")
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_HIDE: list[str] = []  # paths left out of the messages the parent may show users
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000


class LoadFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---- framing ------------------------------------------------------------------------------------------------


def read_exact(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> bytes | None:
    head = read_exact(fd, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">I", head)
    if size > MAX_FRAME:
        os._exit(EXIT_PROTOCOL)
    return read_exact(fd, size)


def write_frame(fd: int, payload: bytes) -> None:
    data = memoryview(struct.pack(">I", len(payload)) + payload)
    while data:
        data = data[os.write(fd, data):]


def send(fd: int, message: dict[str, Any]) -> None:
    write_frame(fd, json.dumps(message, allow_nan=False, separators=(",", ":")).encode())


# ---- the process's own limits -------------------------------------------------------------------------------


def harden_process(parent: int) -> None:
    """First thing: die with the parent, no core dumps, no new privileges (setuid files, file capabilities)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)  # SIGKILL
    if os.getppid() != parent:
        os._exit(EXIT_ORPHAN)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        os._exit(EXIT_NO_NEW_PRIVS)


def own_network_namespace() -> bool:
    """An empty network namespace (loopback down, no interfaces): no UDP, raw or abstract-unix way out either.
    Needs CAP_SYS_ADMIN or unprivileged user namespaces; must run while the process has one thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not any(libc.unshare(flags) == 0 for flags in (_CLONE_NEWNET, _CLONE_NEWUSER | _CLONE_NEWNET)):
        return False
    libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)  # in case the new credentials cleared it
    return True


def readable_paths(library_paths: list[str]) -> list[str]:
    """Where the imported packages, the standard library and the system's shared libraries live."""
    paths = [os.path.dirname(os.__file__), os.path.dirname(getattr(math, "__file__", os.__file__))]
    paths += [os.path.dirname(str(module.__file__)) for module in (struct, ctypes) if getattr(module, "__file__", None)]
    roots = [os.path.abspath(p) for p in library_paths]
    tops: set[str] = set()
    for name in _PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            paths += list(spec.submodule_search_locations)
            tops.update(os.path.basename(p) for p in spec.submodule_search_locations)
        elif spec.origin:
            paths.append(spec.origin)
    vendored = {f"{name}.libs" for name in (*_PACKAGES, "scikit_learn")}  # the wheels' bundled shared libraries
    for root in roots:
        with contextlib.suppress(OSError):
            paths += [os.path.join(root, entry) for entry in os.listdir(root) if entry in vendored]
    for module in list(sys.modules.values()):  # anything else imported from the library paths so far
        file = getattr(module, "__file__", None)
        for root in roots:
            if file and file.startswith(root + os.sep):
                top = os.path.relpath(file, root).split(os.sep)[0]
                paths.append(os.path.join(root, top))
    return [*paths, *_SYSTEM_READABLE]


# ---- loading ------------------------------------------------------------------------------------------------


def _short(exc: BaseException) -> str:
    """The exception's type and the first 200 characters of its text, the library paths left out."""
    text = str(exc)
    for path in _HIDE:
        text = text.replace(path, "…")
    return f"{type(exc).__name__}: {text[:200]}"


def _pickle_member(content: bytes) -> bytes:
    """The one .pkl/.joblib/.pickle file of a .tar.gz (how the v3 client uploaded pipelines)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:*") as archive:
            members = [m for m in archive.getmembers() if m.isfile() and m.name.lower().endswith(_MODEL_SUFFIXES)]
            if len(members) != 1:
                raise LoadFailed("model_load_failed", "the archive must hold exactly one .pkl, .pickle or .joblib "
                                 f"file; it holds {len(members)}")
            extracted = archive.extractfile(members[0])
            assert extracted is not None
            return extracted.read()
    except tarfile.TarError as exc:
        raise LoadFailed("model_load_failed", f"the archive could not be read: {exc}") from None


def _is_joblib(data: bytes) -> bool:
    """joblib.dump's files: a pickle with its numpy arrays stored beside it (NumpyArrayWrapper), or that
    compressed (zlib, gzip, bz2, xz, lzma, lz4 magic), which plain pickle cannot read."""
    compressed = data[:2] in (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"\x1f\x8b", b"BZ") or \
        data[:6] == b"\xfd7zXZ\x00" or data[:4] == b"\x04\x22\x4d\x18" or data[:3] == b"\x5d\x00\x00"
    return compressed or b"joblib.numpy_pickle" in data


def load_model(framework: str, content: bytes) -> Any:
    if framework == "skops":
        sio = importlib.import_module("skops.io")
        if not zipfile.is_zipfile(io.BytesIO(content)):
            raise LoadFailed("model_load_failed", "the content is not a skops file (a zip archive)")
        untrusted = sio.get_untrusted_types(data=content)
        if untrusted:
            raise LoadFailed("model_load_failed", "the skops file holds types that are not trusted: "
                             + ", ".join(sorted(untrusted))[:400])
        return sio.loads(content)
    if framework != "scikit-learn":
        raise LoadFailed("model_load_failed", f"unknown framework {framework!r}")
    data = content
    if content[:2] == b"\x1f\x8b" and _looks_like_tar(content):
        data = _pickle_member(content)
    if _is_joblib(data):
        joblib = importlib.import_module("joblib")
        return joblib.load(io.BytesIO(data))
    import pickle
    return pickle.loads(data)  # noqa: S301 - the whole point of this sandboxed process


def _looks_like_tar(content: bytes) -> bool:
    try:
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz"):
            return True
    except (tarfile.TarError, OSError, EOFError):
        return False


# ---- scoring ------------------------------------------------------------------------------------------------


def shape(features: list[Any]) -> Any:
    np = importlib.import_module("numpy")
    if all(isinstance(value, str) for value in features):
        return features
    numeric = all(isinstance(v, int | float) and v is not None for row in features for v in row)
    return np.asarray(features, dtype=float if numeric else object)


def _subset(x: Any, index: int) -> Any:
    return [x[index]] if isinstance(x, list) else x[index:index + 1]


def _label(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool) and not -(1 << 63) <= value < 1 << 64:
        raise TypeError("the model predicted an integer beyond 64 bits")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"the model predicted {value}, not a finite number")
        return value
    raise TypeError(f"the model predicted a {type(value).__name__}, not a string, number or boolean")


def _probability(row: Any, label: Any, index: dict[Any, int]) -> float | None:
    position = index.get(label)
    value = float(row[position]) if position is not None and position < len(row) else float(max(row))
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def predict(model: Any, features: list[Any]) -> dict[str, Any]:
    count = len(features)
    labels: list[Any] = [None] * count
    probabilities: list[float | None] = [None] * count
    errors: list[str | None] = [None] * count
    if not count:
        return {"ok": True, "labels": labels, "probabilities": probabilities, "errors": errors}
    try:
        x = shape(features)
    except Exception as exc:
        message = _short(exc)
        return {"ok": True, "labels": labels, "probabilities": probabilities, "errors": [message] * count}
    try:
        raw = list(model.predict(x))
        if len(raw) != count:
            raise ValueError(f"the model returned {len(raw)} predictions for {count} records")
        batch = True
    except MemoryError:
        raise
    except Exception:
        raw, batch = [None] * count, False
        for i in range(count):
            try:
                (raw[i],) = list(model.predict(_subset(x, i)))
            except MemoryError:
                raise
            except Exception as exc:
                errors[i] = _short(exc)
    for i in range(count):
        if errors[i] is None:
            try:
                labels[i] = _label(raw[i])
            except TypeError as exc:
                errors[i] = _short(exc)
    if hasattr(model, "predict_proba"):
        index: dict[Any, int] = {}
        with contextlib.suppress(Exception):
            index = {_label(c): n for n, c in enumerate(model.classes_)}
        rows: list[Any] = [None] * count
        try:
            rows = list(model.predict_proba(x)) if batch else rows
        except MemoryError:
            raise
        except Exception:
            rows = [None] * count
        for i in range(count):
            if errors[i] is not None:
                continue
            try:
                row = rows[i] if rows[i] is not None else model.predict_proba(_subset(x, i))[0]
                probabilities[i] = _probability(row, labels[i], index)
            except MemoryError:
                raise
            except Exception:  # noqa: S112 - the label stands; the probability is unknown
                continue
    return {"ok": True, "labels": labels, "probabilities": probabilities, "errors": errors}


# ---- the process --------------------------------------------------------------------------------------------


def _setup(header: dict[str, Any]) -> str | None:
    """Limits, imports, the sandbox. Returns a description of the sandbox, or None when there is none."""
    limit = int(header["memory_limit"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    library_paths = [str(p) for p in header["library_paths"]]
    sys.path[:0] = library_paths
    landlock, seccomp = _sibling("landlock"), _sibling("seccomp")
    modules = ["numpy", "scipy.sparse", "sklearn", "sklearn.pipeline", "sklearn.base", "joblib", "pickle"]
    if header["framework"] == "skops":
        modules.append("skops.io")  # a second more to start: only for skops files
    for name in modules:
        importlib.import_module(name)
    readable = readable_paths(library_paths)
    source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # above wml_server/
    _HIDE[:] = sorted({*library_paths, os.path.dirname(os.__file__), source, sys.prefix, sys.base_prefix},
                      key=len, reverse=True)
    try:
        sandbox: str | None = f"landlock-abi-{landlock.restrict(readable)}"
    except landlock.LandlockUnavailable:
        if header["require_sandbox"]:
            raise LoadFailed("model_sandbox_unavailable", "this kernel has no Landlock: models are not run "
                             "without a sandbox") from None
        sandbox = None
    except OSError as exc:
        if header["require_sandbox"]:
            raise LoadFailed("model_sandbox_unavailable", f"the sandbox could not be set up: {exc.strerror}") from None
        sandbox = None
    try:
        seccomp.deny_sockets()
    except seccomp.SeccompUnavailable:
        return sandbox
    return f"{sandbox}+seccomp" if sandbox else None


def _sibling(name: str) -> Any:
    """landlock.py or seccomp.py, loaded by path (not as part of wml_server, whose __init__ would run)."""
    spec = importlib.util.spec_from_file_location(
        f"_wml_{name}", os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    harden_process(int(sys.argv[1]))
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the model's own reads and prints never touch the protocol
    os.dup2(2, 1)
    os.close(devnull)
    network_namespace = own_network_namespace()  # before any import starts a thread
    frame = read_frame(proto_in)
    if frame is None:
        return
    header = json.loads(frame)
    try:
        sandbox = _setup(header)
        content = read_frame(proto_in)
        if content is None:
            return
        try:
            model = load_model(str(header["framework"]), content)
        except LoadFailed:
            raise
        except MemoryError:
            os._exit(EXIT_MEMORY)
        except BaseException as exc:
            raise LoadFailed("model_load_failed", f"the model could not be loaded: {_short(exc)}") from None
        del content
        if not callable(getattr(model, "predict", None)):
            raise LoadFailed("model_load_failed", f"the model (a {type(model).__name__}) has no predict method")
    except LoadFailed as failure:
        send(proto_out, {"ok": False, "code": failure.code, "message": failure.message})
        return
    send(proto_out, {"ok": True, "sandbox": sandbox, "network_namespace": network_namespace,
                     "probabilities": hasattr(model, "predict_proba")})
    while (frame := read_frame(proto_in)) is not None:
        request = json.loads(frame)
        if request.get("op") != "predict" or not isinstance(request.get("features"), list):
            os._exit(EXIT_PROTOCOL)
        try:
            reply = predict(model, request["features"])
        except MemoryError:
            os._exit(EXIT_MEMORY)
        send(proto_out, reply)


if __name__ == "__main__":
    try:
        main()
    except MemoryError:
        os._exit(EXIT_MEMORY)
    sys.stdout.flush()
    os._exit(0)
