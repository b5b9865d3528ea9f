"""Users' models in sandboxed worker processes (issue 16): real processes, good and malicious models."""

from __future__ import annotations

import io
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import joblib
import pytest
import skops.io as sio
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer

from wml_server.workers import ModelLoadError, ModelWorker, ModelWorkerDied, Prediction

pytestmark = pytest.mark.integration

SECRET = "wso-test-secret-7f3a9c1e5b"
TEXTS = ["I love this", "I hate this", "what a great day", "what an awful day", "so happy now", "so sad now",
         "best thing ever", "worst thing ever", "wonderful", "terrible"]
LABELS = ["positive", "negative"] * 5


class _Eval:
    """Unpickles as eval(source) in the worker: the child cannot import this module, only builtins."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (eval, (self.source,))


def code_model(source: str) -> bytes:
    """A pickle whose loading runs `source` (Python statements) and yields its variable `model`."""
    return pickle.dumps(_Eval(f"(lambda g: (exec({textwrap.dedent(source)!r}, g), g['model'])[1])({{}})"))


def worker(content: bytes, framework: str = "scikit-learn", **options: Any) -> ModelWorker:
    options.setdefault("load_timeout", 30.0)
    options.setdefault("predict_timeout", 30.0)
    return ModelWorker(framework=framework, content=content, fields=["text"], name="test", **options)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.fixture(scope="module")
def text_pipeline() -> Pipeline:
    return make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS * 3, LABELS * 3)


def _targz(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _joblib(model: Any, compress: int) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer, compress=compress)
    return buffer.getvalue()


@pytest.mark.parametrize("form", ["pickle", "joblib", "joblib-zlib", "tar.gz", "skops"])
def test_a_text_pipeline_scores_as_it_does_in_process(text_pipeline: Pipeline, form: str) -> None:
    framework, content = {
        "pickle": ("scikit-learn", pickle.dumps(text_pipeline)),
        "joblib": ("scikit-learn", _joblib(text_pipeline, 0)),
        "joblib-zlib": ("scikit-learn", _joblib(text_pipeline, 3)),
        "tar.gz": ("scikit-learn", _targz("model/pipeline.pkl", pickle.dumps(text_pipeline))),
        "skops": ("skops", sio.dumps(text_pipeline)),
    }[form]
    tweets = [f"{TEXTS[i % len(TEXTS)]} #{i}" for i in range(50)]
    with worker(content, framework) as w:
        assert w.sandbox == "landlock-abi-7+seccomp"
        assert w.pid is not None
        assert alive(w.pid)
        got = w.predict(tweets)
    expected = list(text_pipeline.predict(tweets))
    proba = text_pipeline.predict_proba(tweets)
    classes = list(text_pipeline.classes_)
    assert got.labels == expected
    assert all(type(label) is str for label in got.labels)
    assert got.errors == [None] * len(tweets)
    assert got.probabilities == pytest.approx([proba[i][classes.index(label)] for i, label in enumerate(expected)])


def test_a_numeric_model_scores_rows() -> None:
    x = [[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]] * 5
    model = LogisticRegression().fit(x, [1, 0, 1, 0] * 5)
    rows = [[0.1, 0.8], [0.7, 0.2], [1, 0]]
    with worker(pickle.dumps(model)) as w:
        got = w.predict(rows)
        assert w.predict([]) == Prediction([], [], [])
    assert got.labels == [int(v) for v in model.predict(rows)]
    assert all(type(label) is int for label in got.labels)
    assert got.probabilities == pytest.approx(list(model.predict_proba(rows).max(axis=1)))


def test_a_model_without_predict_proba_has_no_probabilities() -> None:
    with worker(code_model("import types; model = types.SimpleNamespace(predict=lambda X: [len(x) > 3 for x in X])")) \
            as w:
        assert w.predict(["abc", "abcdef"]) == Prediction([False, True], [None, None], [None, None])


# ---- what a malicious model cannot reach ----------------------------------------------------------------------

LOOTING = """
import os, socket
class Model:
    def __init__(self):
        self.loot = []
        for attempt in ATTEMPTS:
            try:
                self.loot.append(repr(attempt()))
            except BaseException as exc:
                self.loot.append(repr(exc))
    def predict(self, X):
        return ['|'.join(self.loot)[:3000] for _ in X]
"""


def _looted(content: bytes, caplog: pytest.LogCaptureFixture) -> tuple[str, str]:
    """Load and run a looting model; everything that came back from it, and the logs."""
    caplog.set_level(logging.DEBUG)
    with worker(content) as w:
        got = w.predict(["x"])
        assert got.errors == [None]
        loot = str(got.labels[0])
    return loot, caplog.text


def test_a_model_cannot_read_the_services_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    database, key = tmp_path / "wml.db", tmp_path / "signing.key"
    database.write_text(f"users table {SECRET}")
    key.write_text(SECRET)
    service_source = Path(__file__).resolve().parents[2] / "server" / "wml_server" / "settings.py"
    attempts = [f"lambda: open({str(p)!r}).read()" for p in (database, key, service_source)]
    attempts += [f"lambda: os.listdir({str(tmp_path)!r})", "lambda: os.listdir('/tmp')",
                 f"lambda: open({str(tmp_path / 'dropped')!r}, 'w').write('x')", "lambda: os.listdir('/proc')"]
    content = code_model(LOOTING + f"ATTEMPTS = [{', '.join(attempts)}]\nmodel = Model()\n")
    loot, logs = _looted(content, caplog)
    assert SECRET not in loot
    assert SECRET not in logs
    assert loot.count("PermissionError") == len(attempts), loot
    assert not (tmp_path / "dropped").exists()

    failing = code_model(f"model = open({str(key)!r}).read()")
    with pytest.raises(ModelLoadError) as failure, worker(failing):
        pass
    assert failure.value.code == "model_load_failed"
    assert "PermissionError" in failure.value.message
    assert SECRET not in str(failure.value)


def test_a_model_cannot_read_the_services_environment(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WSO_SIGNING_KEY", SECRET)
    attempts = [f"lambda: open('/proc/{os.getpid()}/environ', 'rb').read()",
                "lambda: open(f'/proc/{os.getppid()}/environ', 'rb').read()",
                "lambda: open('/proc/self/environ', 'rb').read()", "lambda: dict(os.environ)",
                f"lambda: open('/proc/{os.getpid()}/cmdline', 'rb').read()"]
    content = code_model(LOOTING + f"ATTEMPTS = [{', '.join(attempts)}]\nmodel = Model()\n")
    loot, logs = _looted(content, caplog)
    assert SECRET not in loot
    assert SECRET not in logs
    assert "WSO_SIGNING_KEY" not in loot


def test_a_model_cannot_reach_the_network(tmp_path: Path) -> None:
    with socket.socket() as listener, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.socket(socket.AF_UNIX) as unix:
        listener.bind(("127.0.0.1", 0))
        udp.bind(("127.0.0.1", 0))
        unix.bind(str(tmp_path / "service.sock"))  # Landlock does not mediate connecting by path: seccomp does
        for server in (listener, unix):
            server.listen()
            server.setblocking(False)
        udp.setblocking(False)
        tcp_port, udp_port = listener.getsockname()[1], udp.getsockname()[1]
        attempts = [f"lambda: socket.create_connection(('127.0.0.1', {tcp_port}), timeout=2).send(b'{SECRET}')",
                    f"lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {udp_port}))",
                    "lambda: socket.socket().bind(('127.0.0.1', 0))",
                    f"lambda: socket.socket(socket.AF_UNIX).connect({str(tmp_path / 'service.sock')!r})",
                    "lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)"]
        content = code_model(LOOTING + f"ATTEMPTS = [{', '.join(attempts)}]\nmodel = Model()\n")
        with worker(content) as w:
            loot = str(w.predict(["x"]).labels[0])
        time.sleep(0.2)
        for server in (listener, unix):
            with pytest.raises(BlockingIOError):
                server.accept()
        with pytest.raises(BlockingIOError):
            udp.recvfrom(100)
    assert loot.count("PermissionError(1, 'Operation not permitted')") == len(attempts), loot


# ---- models that misbehave ------------------------------------------------------------------------------------


def test_a_model_that_exits_at_load() -> None:
    with pytest.raises(ModelLoadError) as failure, worker(code_model("import os; os._exit(3)")):
        pass
    assert failure.value.code == "model_worker_exited"
    assert "exited with code 3" in failure.value.message


def test_a_model_that_never_finishes_loading_is_killed() -> None:
    w = worker(code_model("while True: pass\nmodel = None"), load_timeout=3.0)
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as failure:
        w.start()
    assert failure.value.code == "model_load_timeout"
    assert time.monotonic() - started < 10
    pid = w._proc.pid if w._proc else None
    w.close()
    assert pid is not None
    assert not alive(pid)


def test_records_a_model_raises_on_get_an_error_each() -> None:
    model = code_model("""
        import types
        model = types.SimpleNamespace(predict=lambda X: [float("nan") if row[0] == 3 else 10 ** 30 if row[0] == 4
                                                         else 10 // int(row[0]) for row in X])
    """)
    with worker(model) as w:
        got = w.predict([[2], [0], [5], [0.0], [3], [4]])
    assert got.labels == [5, None, 2, None, None, None]
    assert got.errors[5] == "TypeError: the model predicted an integer beyond 64 bits"
    assert got.errors[0] is None
    assert got.errors[1] == got.errors[3] == "ZeroDivisionError: integer division or modulo by zero"
    assert got.errors[4] == "TypeError: the model predicted nan, not a finite number"
    assert got.probabilities == [None] * 6


def test_a_model_over_its_memory_limit_dies_and_a_new_worker_works(text_pipeline: Pipeline) -> None:
    hog = code_model("""
        import types
        model = types.SimpleNamespace(predict=lambda X: [len(bytearray(1 << 30)) for _ in X])
    """)
    with worker(hog, memory_limit_bytes=768 << 20) as w, pytest.raises(ModelWorkerDied) as died:
        w.predict(["x"])
    assert died.value.code == "model_worker_exited"
    assert "memory" in died.value.message
    with worker(pickle.dumps(text_pipeline), memory_limit_bytes=768 << 20) as w:
        assert w.predict(["I love this"]).labels == ["positive"]


def test_a_slow_prediction_times_out_and_close_interrupts_a_wait() -> None:
    sleeper = code_model("import time, types\nmodel = types.SimpleNamespace(predict=lambda X: time.sleep(60))")
    with worker(sleeper, predict_timeout=2.0) as w, pytest.raises(ModelWorkerDied) as died:
        w.predict(["x"])
    assert died.value.code == "model_timeout"
    w = worker(sleeper)
    w.start()
    pid = w.pid
    assert pid is not None
    threading.Timer(1.0, w.close).start()
    started = time.monotonic()
    with pytest.raises(ModelWorkerDied):
        w.predict(["x"])
    assert time.monotonic() - started < 5
    assert not alive(pid)
    w.close()


def test_a_reply_over_64_mib_is_a_protocol_error() -> None:
    flood = code_model("import types\nmodel = types.SimpleNamespace(predict=lambda X: ['x' * (70 << 20) for _ in X])")
    with worker(flood) as w, pytest.raises(ModelWorkerDied) as died:
        w.predict(["x"])
    assert died.value.code == "model_protocol_error"


def test_skops_with_an_untrusted_type_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    model = Pipeline([("run", FunctionTransformer(func=os.system, kw_args={"command": f"touch {marker}"})),
                      ("classify", LogisticRegression())])
    content = sio.dumps(model)
    untrusted = sio.get_untrusted_types(data=content)
    assert untrusted
    with pytest.raises(ModelLoadError) as failure, worker(content, "skops"):
        pass
    assert failure.value.code == "model_load_failed"
    assert all(name in failure.value.message for name in untrusted)
    assert not marker.exists()


# ---- the worker's life ends with the service's -----------------------------------------------------------------

PARENT = """
import pickle, sys, threading, time
from wml_server.workers import ModelWorker
workers = []
def start():  # from a thread that ends: the worker must outlive it
    w = ModelWorker(framework="scikit-learn", content=pickle.loads(sys.stdin.buffer.read()), fields=["text"],
                    name="orphan")
    w.start()
    workers.append(w)
thread = threading.Thread(target=start)
thread.start()
thread.join()
time.sleep(0.5)
print(workers[0].pid, workers[0].predict(["I love this"]).labels[0], flush=True)
time.sleep(600)
"""


def test_a_killed_service_leaves_no_worker_behind(text_pipeline: Pipeline) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert parent.stdin is not None
        assert parent.stdout is not None
        parent.stdin.write(pickle.dumps(pickle.dumps(text_pipeline)))
        parent.stdin.close()
        pid_text, label = parent.stdout.readline().decode().split()
        pid = int(pid_text)
        assert label == "positive"
        assert alive(pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)


def test_what_a_model_forks_dies_with_its_worker() -> None:
    forking = code_model("""
        import os, time, types
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        model = types.SimpleNamespace(predict=lambda X: [pid for _ in X])
    """)
    with worker(forking) as w:
        label = w.predict(["x"]).labels[0]
        assert isinstance(label, int)
        assert alive(label)
    deadline = time.monotonic() + 5
    while alive(label) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(label)


def test_what_a_model_forks_cannot_leave_the_workers_session_or_group() -> None:
    """Issue 16's bad models: a child that called setsid (or setpgid) escaped the group kill and outlived its
    deployment, burning CPU; setsid and setpgid fail with EPERM now, and the child dies with its worker."""
    forking = code_model("""
        import os, time, types
        pid = os.fork()
        if pid == 0:
            tries = []
            for call in (os.setsid, lambda: os.setpgid(0, 0)):
                try:
                    call()
                    tries.append("ok")
                except OSError as exc:
                    tries.append(exc.errno)
            os.write(2, f"tries {tries}\\n".encode())
            time.sleep(600)
            os._exit(0)
        model = types.SimpleNamespace(predict=lambda X: [pid for _ in X])
    """)
    with worker(forking) as w:
        label = w.predict(["x"]).labels[0]
        assert isinstance(label, int)
        assert alive(label)
        time.sleep(0.5)
        assert "tries [1, 1]" in w._stderr_tail()  # EPERM, EPERM
    deadline = time.monotonic() + 5
    while alive(label) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(label)


def test_what_a_model_prints_stays_off_the_protocol(caplog: pytest.LogCaptureFixture) -> None:
    chatty = code_model("""
        import os, signal, sys, types
        print("loading" * 20000)
        def predict(X):
            print("stdout " * 20000, flush=True)
            print("stderr " * 20000, file=sys.stderr, flush=True)
            if X[0] == "die":
                print("last words", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGSEGV)
            return list(X)
        model = types.SimpleNamespace(predict=predict)
    """)
    caplog.set_level(logging.DEBUG)
    with worker(chatty) as w:
        assert w.predict(["a", "b"]).labels == ["a", "b"]
        with pytest.raises(ModelWorkerDied) as died:
            w.predict(["die"])
        assert w.pid is None
        with pytest.raises(ModelWorkerDied):
            w.predict(["a"])
    assert died.value.code == "model_worker_exited"
    assert died.value.message == "the model's worker was killed by SIGSEGV: over its memory limit? (last words)"
    logged = [r.getMessage() for r in caplog.records if "stderr" in r.getMessage()]
    assert logged
    assert all(len(message) < 4500 for message in logged)


def test_workers_leave_no_descriptor_or_thread_behind(text_pipeline: Pipeline) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    worker(pickle.dumps(text_pipeline)).close()  # the spawner thread starts once; never-started workers are fine
    before, threads = fds(), threading.active_count()
    for content in (code_model("import os; os._exit(3)"), code_model("model = 1 / 0"), b"not a pickle"):
        with pytest.raises(ModelLoadError):
            worker(content).start()  # no close(): a failed start cleans up by itself
    w = worker(pickle.dumps(text_pipeline))
    w.start()
    w.close()
    w.close()
    with pytest.raises(ModelWorkerDied) as died:
        w.predict(["I love this"])
    assert died.value.code == "model_worker_exited"
    assert fds() == before
    assert threading.active_count() == threads


@pytest.mark.parametrize(("framework", "content", "says"), [
    ("scikit-learn", _targz("a.txt", b"x"), "holds 0"),
    ("scikit-learn", _targz("a.pkl", b"x") + b"", "UnpicklingError"),
    ("scikit-learn", b"\x80\x04not really a pickle", "the model could not be loaded"),
    ("skops", pickle.dumps([1]), "not a skops file"),
    ("tensorflow", b"", "unknown model framework"),
])
def test_content_that_is_no_model_fails_to_load(framework: str, content: bytes, says: str) -> None:
    with pytest.raises(ModelLoadError) as failure, worker(content, framework):
        pass
    assert failure.value.code == "model_load_failed"
    assert says in failure.value.message
    assert "/" not in failure.value.message.replace("a .tar.gz", "")
