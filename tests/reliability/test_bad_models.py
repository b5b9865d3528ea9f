"""Users' bad models (issue 16): pickles that reach for the service's secrets, the network, the disk, fork, exit,
eat memory, loop, raise or answer nonsense, at load or at their first predict, and uploads that are refused
outright. One good deployment (a user's TF-IDF model, skops) of another instance streams tweets the whole time
beside them; it must score every record exactly once (read_committed), the service must keep its PID and answer,
and no secret may show in any output record, API answer or the service's log.

A pickle misbehaving "at predict" loads into a `types.SimpleNamespace` whose `predict` is a function built by
`exec` at unpickling (`__reduce__` -> `eval`): it passes the upload check (the load) and misbehaves when scoring.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import secrets
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import skops.io
from confluent_kafka import Consumer, KafkaException, Producer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from tests.conftest import SCANNED_SECRETS, Figures, signing_key_of
from tests.integration.test_wml_repository_api import Raw, error_code, meta, spark
from tests.reliability.conftest import FULL
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_api.models import DeploymentCreate, KafkaConnection, StreamInput, StreamOutput
from wml_localplatform import KafkaInfo
from wml_localplatform.wmlservice import WMLService, WMLUser

TEST = "test_bad_models_fail_alone"
MEMORY_LIMIT_MB = 768
PREDICT_TIMEOUT = 3.0
LOAD_TIMEOUT = 30.0
UPLOADS_AT_ONCE = 3
RECORDS_PER_BAD = 6  # two of them hold "bad" (for the model that raises on some records)


class _Eval:
    """Unpickles as eval(src): runs at load, in the worker."""

    def __init__(self, src: str) -> None:
        self.src = src

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (self.src,))


def evil_pickle(code: str) -> bytes:
    """A pickle that runs `code` (Python statements) when loaded and loads as an object whose `predict` is the
    `predict(x)` that code defines."""
    src = (f"(lambda ns: (exec({code!r}, ns), __import__('types').SimpleNamespace(predict=ns['predict']))[1])"
           "({})")
    return pickle.dumps(_Eval(src), protocol=4)


LABELS = "return ['POSITIVE'] * len(x)"


@dataclass
class Kind:
    name: str
    when: str  # upload | load | predict
    content: Callable[[dict[str, str]], bytes]  # from the trial's paths and values
    expect: str  # refused | model_error | FAILED | scored | some model_error
    reduced: bool = True  # part of the reduced set of `make test`
    result: dict[str, Any] = field(default_factory=dict)


def _at_load(action: str) -> Callable[[dict[str, str]], bytes]:
    return lambda p: evil_pickle(action.format(**p) + f"\ndef predict(x):\n    {LABELS}\n")


def _at_predict(body: str) -> Callable[[dict[str, str]], bytes]:
    return lambda p: evil_pickle("def predict(x):\n" + "".join(f"    {line}\n" for line in
                                                               body.format(**p).splitlines()))


READ = "d = open({path!r}, 'rb').read()\n"
LEAK = "return [d[:300].decode('latin-1')] * len(x)"  # if the read worked, the label carries the secret


def _read(path_key: str, *, at: str) -> Callable[[dict[str, str]], bytes]:
    code = READ.replace("{path!r}", "{" + path_key + "!r}")
    if at == "load":
        return _at_load(code)
    return _at_predict(code + LEAK)


FORK = ("import os, time\nif not globals().get('forked'):\n    globals()['forked'] = os.fork()\n"
        "    if globals()['forked'] == 0:\n        t = time.time()\n        while time.time() < t + 300: pass\n"
        "        os._exit(0)\nreturn [str(globals()['forked'])] * len(x)")
ESCAPE = ("import os, time\nif not globals().get('forked'):\n    globals()['forked'] = os.fork()\n"
          "    if globals()['forked'] == 0:\n        try:\n            os.setsid()\n"
          "        except OSError:\n            pass\n        t = time.time()\n"
          "        while time.time() < t + {escape_seconds}: pass\n        os._exit(0)\n"
          "return ['setsid:' + str(globals()['forked'])] * len(x)")
ESCAPE_SECONDS = 20  # how long the child that left the worker's session burns a CPU if nothing stops it
TCP = "import socket\nsocket.create_connection(('127.0.0.1', {port}), 2).sendall(b'hello')\n"
WRITE = "open({written!r}, 'w').write('written by a model')\n"
HOG = "b = bytearray(4 << 30)\n"


def kinds() -> list[Kind]:
    return [
        # refused outright
        Kind("corrupt bytes", "upload", lambda p: b"\x80\x04" + secrets.token_bytes(4000), "refused", reduced=False),
        Kind("truncated pickle", "upload", lambda p: _truncated(pickle.dumps(_pipeline(p["canary_word"]))), "refused"),
        Kind("skops file with an untrusted type (posix.getcwd)", "upload",
             lambda p: skops.io.dumps(FunctionTransformer(func=os.getcwd)), "refused"),
        Kind("pickle of a module that does not exist", "upload",
             lambda p: pickle.dumps(_Eval("__import__('nosuchmodule_wso')")), "refused"),
        # at load (the upload check loads it in a sandboxed worker)
        Kind("read the service's database", "load", _read("db", at="load"), "refused"),
        Kind("read the service's key file", "load", _read("key", at="load"), "refused", reduced=False),
        Kind("read /proc/<service pid>/environ", "load", _read("environ", at="load"), "refused", reduced=False),
        Kind("read another instance's model file", "load", _read("other_model", at="load"), "refused",
             reduced=False),
        Kind("TCP connect to 127.0.0.1", "load", _at_load(TCP), "refused", reduced=False),
        Kind("write a file", "load", _at_load(WRITE), "refused", reduced=False),
        Kind("os._exit(3)", "load", _at_load("import os\nos._exit(3)"), "refused", reduced=False),
        Kind("allocate 4 GiB", "load", _at_load(HOG), "refused"),
        Kind("loop forever", "load", _at_load("while True: pass"), "refused", reduced=False),
        # at predict (passes the upload check)
        Kind("read the service's database", "predict", _read("db", at="predict"), "model_error", reduced=False),
        Kind("read the service's key file", "predict", _read("key", at="predict"), "model_error"),
        Kind("read /proc/<service pid>/environ", "predict", _read("environ", at="predict"), "model_error"),
        Kind("read another instance's model file", "predict", _read("other_model", at="predict"), "model_error"),
        Kind("TCP connect to 127.0.0.1", "predict", _at_predict(TCP + LABELS), "model_error"),
        Kind("write a file", "predict", _at_predict(WRITE + LABELS), "model_error", reduced=False),
        Kind("fork a busy child", "predict", _at_predict(FORK), "scored"),
        Kind("fork a busy child that calls setsid", "predict", _at_predict(ESCAPE), "scored", reduced=False),
        Kind("os._exit(0)", "predict", _at_predict("import os\nos._exit(0)"), "FAILED"),
        Kind("allocate 4 GiB", "predict", _at_predict(HOG + LABELS), "FAILED", reduced=False),
        Kind("loop forever", "predict", _at_predict("while True: pass"), "FAILED"),
        Kind("raise on every record", "predict", _at_predict("raise ValueError('no')"), "model_error", reduced=False),
        Kind("raise on some records", "predict",
             _at_predict("if any('bad' in t for t in x): raise ValueError('a bad record')\n" + LABELS),
             "some model_error"),
        Kind("labels of the wrong length", "predict", _at_predict("return ['POSITIVE'] * (len(x) + 1)"),
             "model_error", reduced=False),
        Kind("labels of non-JSON types", "predict",
             _at_predict("return [[object(), float('nan'), 2 ** 70, b'x', 1j][i % 5] for i in range(len(x))]"),
             "model_error"),
    ]


def _pipeline(canary_word: str) -> Pipeline:
    texts = ["I love it", "great day", "so happy", "awful", "I hate this", f"terrible {canary_word}"] * 3
    labels = (["POSITIVE"] * 3 + ["NEGATIVE"] * 3) * 3
    return Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())]).fit(texts, labels)


def _conn(kafka: KafkaInfo) -> KafkaConnection:
    user = kafka.users[-1]
    return KafkaConnection(kafka_brokers_sasl=[kafka.bootstrap], user=user.name, password=user.password,
                           security_protocol="SASL_PLAINTEXT")


def _deploy(api: WMLClient, kafka: KafkaInfo, model_id: str, source: str, target: str, name: str) -> str:
    conn = _conn(kafka)
    return api.create_deployment(model_id, DeploymentCreate(
        name=name, input=StreamInput(connection=conn, source={"topic": source}),
        output=StreamOutput(connection=conn, target={"topic": target})), spark()).id


def _client(service: WMLService, user: WMLUser) -> WMLClient:
    return WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)


def _read_all(kafka: KafkaInfo, topic: str, want: int, timeout: float) -> list[tuple[str, bytes]]:
    consumer = Consumer(kafka.client_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
                                               "isolation.level": "read_committed"}))
    consumer.subscribe([topic])
    out: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(out) < want:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            out.append((msg.key().decode(), msg.value()))
    deadline = time.monotonic() + 2  # anything written twice arrives now
    while time.monotonic() < deadline:
        msg = consumer.poll(0.3)
        if msg is not None and not msg.error():
            out.append((msg.key().decode(), msg.value()))
    consumer.close()
    return out


def _worker_pids(service_pid: int) -> list[int]:
    """Processes running workers/child.py for this service (its pid is their argument), forks of them too."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"workers/child.py") for a in argv) and str(service_pid).encode() in argv:
            pids.append(int(entry.name))
    return pids


def test_bad_models_fail_alone(make_wml_service: Callable[..., WMLService], kafka: KafkaInfo,
                               kafka_topic: Callable[..., str], tmp_path: Path, figures: Figures) -> None:
    started = time.monotonic()
    canary_env = "wso-canary-env-" + secrets.token_hex(12)
    canary_word = "wsocanaryword" + secrets.token_hex(8)
    SCANNED_SECRETS.update({canary_env, canary_word})
    service = make_wml_service(WML_SERVER_MODEL_MEMORY_LIMIT_MB=str(MEMORY_LIMIT_MB),
                               WML_SERVER_MODEL_PREDICT_TIMEOUT=str(PREDICT_TIMEOUT),
                               WML_SERVER_MODEL_LOAD_TIMEOUT=str(LOAD_TIMEOUT), WSO_BAD_MODELS_CANARY=canary_env)
    assert service.proc is not None
    service_pid = service.proc.pid
    data = service.dir / "data"
    # The token signing key is in the database (encrypted by the key file, which is outside the data folder).
    signing_key = signing_key_of(data, service.key_file)
    assert signing_key is not None
    fernet_key = service.key_file.read_text().split()[0]
    leak_markers = {canary_env, canary_word, signing_key[:32], fernet_key[:32], "SQLite format 3"}
    leak_markers |= {signing_key.encode("latin-1").hex()[:32]}
    SCANNED_SECRETS.add(signing_key)

    # The good deployment: another instance's skops TF-IDF model, fed the whole trial.
    good_user = service.add_user()
    good = _client(service, good_user)
    asset = good.publish_model(meta("Tweets (good)"), io.BytesIO(skops.io.dumps(_pipeline(canary_word))))
    assert asset.entity.latest_version is not None
    other_model = data / "models" / asset.id / asset.entity.latest_version.guid
    assert canary_word.encode() in other_model.read_bytes()
    good_in, good_out = kafka_topic("good-in", partitions=2), kafka_topic("good-out")
    good_id = _deploy(good, kafka, asset.id, good_in, good_out, "good")
    _wait(good, good_id, {"RUNNING"}, 90)

    stop = threading.Event()
    acked: list[str] = []

    def feed() -> None:
        producer = Producer(kafka.client_config(**{"linger.ms": 5}))
        i = 0
        while not stop.is_set():
            key = f"g-{i}"
            try:
                producer.produce(good_in, json.dumps({"tweet": f"what a lovely day {i}"}).encode(), key.encode(),
                                 on_delivery=lambda err, msg: acked.append(msg.key().decode()) if err is None else None)
            except KafkaException:  # the topic is gone: the test failed and tidies up
                return
            producer.poll(0)
            i += 1
            time.sleep(0.02)
        producer.flush(30)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    connections: list[str] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            connections.append(str(peer))
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    written = tmp_path / "written-by-a-model"
    paths = {"db": str(data / "wml.sqlite3"), "key": str(service.key_file),
             "environ": f"/proc/{service_pid}/environ", "other_model": str(other_model),
             "port": str(listener.getsockname()[1]), "written": str(written), "canary_word": canary_word,
             "escape_seconds": str(ESCAPE_SECONDS)}

    bad_user = service.add_user()  # another instance: the good model is not its to read
    bad = _client(service, bad_user)
    raw = Raw(service, bad_user)
    answers: list[str] = []  # every API answer the bad models got
    trial = [k for k in kinds() if FULL or k.reduced]
    deployed: dict[str, tuple[Kind, str, str]] = {}  # deployment id -> kind, model, target topic

    def publish(kind: Kind) -> None:
        t0 = time.monotonic()
        model_id, version_id = raw.new_model(meta(f"bad: {kind.name}"))
        resp = raw.upload(model_id, version_id, kind.content(paths))
        answers.append(resp.text)
        kind.result["upload s"] = round(time.monotonic() - t0, 1)
        if resp.status_code != 200:
            kind.result.update(outcome=f"refused at upload: {resp.status_code} {error_code(resp)}",
                               detail=resp.json()["errors"][0]["message"])
            return
        source, target = kafka_topic("bad-in"), kafka_topic("bad-out")
        did = _deploy(bad, kafka, model_id, source, target, f"bad-{uuid.uuid4().hex[:6]}")
        deployed[did] = (kind, model_id, target)
        kind.result["source"] = source

    with ThreadPoolExecutor(UPLOADS_AT_ONCE) as pool:  # the service checks uploads side by side
        list(pool.map(publish, trial))
    for did in deployed:
        _wait(bad, did, {"RUNNING", "FAILED"}, 120, fail_ok=True)

    producer = Producer(kafka.client_config())
    for did, (kind, _, _) in deployed.items():
        for i in range(RECORDS_PER_BAD):
            text = f"a bad record {i}" if i % 3 == 0 else f"a fine record {i}"
            producer.produce(kind.result["source"], json.dumps({"tweet": text}).encode(), f"{did}/{i}".encode())
    assert producer.flush(30) == 0
    sent_at = time.monotonic()
    bad_outputs = _collect(kafka, bad, deployed, answers, sent_at)

    # A FAILED deployment can be started again: it loads its model anew and reads the aborted batch again.
    retried = {did: kind for did, (kind, _, _) in deployed.items() if kind.result.get("failed")}
    for did, kind in retried.items():
        kind.result.pop("failed")
        bad.set_deployment_status(deployed[did][1], did, "RUNNING", spark())
    retried_at = time.monotonic()
    _collect(kafka, bad, {did: deployed[did] for did in retried}, answers, retried_at, outputs=bad_outputs,
             key="retried")
    for kind in retried.values():
        kind.result["retry"] = kind.result.pop("retried", "?")

    # The busy child a model forked goes with its deployment's worker.
    forked = {int(p) for k in trial for p in k.result.get("forked", []) or [] if str(p).isdigit()}
    escaped = {int(str(p).split(":")[1]) for k in trial for p in k.result.pop("forked", []) or []
               if str(p).startswith("setsid:")}
    deleted_at = time.monotonic()
    for did in deployed:
        bad.delete_instance_deployment(did)
    deadline = time.monotonic() + 20  # each worker gets EOF and up to 2 s to exit before its group is killed
    while time.monotonic() < deadline and (len(_worker_pids(service_pid)) > 1 or _alive(forked | escaped)):
        time.sleep(0.2)
    workers_gone_s = round(time.monotonic() - deleted_at, 1)
    assert _alive(forked) == []
    outlived = _alive(escaped)
    for kind in trial:  # setsid fails with EPERM in a worker (seccomp); before, the child left the group kill
        if "setsid" in kind.name:
            kind.result["detail"] = f"setsid: EPERM; the child outlived its deployment: {'YES' if outlived else 'no'}"
    for pid in outlived:  # it is ours: the test's own model made it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert outlived == []
    assert len(_worker_pids(service_pid)) == 1  # the good deployment's worker, nothing else

    time.sleep(3)  # the good stream keeps going after the bad ones went
    stop.set()
    feeder.join(60)
    outputs = _read_all(kafka, good_out, len(acked), 120)
    scored = Counter(k for k, _ in outputs)
    good_errors = [v for _, v in outputs if b'"error"' in v]
    missing = [k for k in acked if k not in scored]
    twice = [k for k, n in scored.items() if n > 1]
    assert good.get_instance_deployment(good_id).status == "RUNNING"
    assert service.proc is not None
    assert service.proc.pid == service_pid
    assert service.proc.poll() is None
    assert requests.get(f"{service.url}/healthz", timeout=5).json()["status"] == "ok"

    log = service.log.read_text(errors="replace")
    leaks = {k.name + " (" + k.when + ")": [m[:12] for m in leak_markers if m in k.result.get("outputs", "")]
             for k in trial}
    leaks = {k: v for k, v in leaks.items() if v}
    api_leaks = [m[:12] for m in leak_markers if any(m in a for a in answers)]
    log_leaks = [m[:12] for m in leak_markers - {"SQLite format 3"} if m in log]
    wrong = {f"{k.name} ({k.when})": k.result.get("outcome") for k in trial
             if not _matches(k.expect, str(k.result.get("outcome")))}
    # Exactly once for the bad ones too: a deployment that put records out put each out once.
    wrong |= {f"{k.name} ({k.when}) records": k.result["records"] for k in trial
              if k.result.get("status") and k.result["records"] != RECORDS_PER_BAD}
    wrong |= {f"{k.name} ({k.when}) retry": k.result["retry"] for k in trial
              if "retry" in k.result and not str(k.result["retry"]).startswith(str(k.result["outcome"]))}

    for kind in trial:
        figures.add("bad_models", kind=kind.name, when=kind.when, what_happened=kind.result.get("outcome"),
                    detail=str(kind.result.get("detail", "")).replace(str(data), "DATA_DIR")
                    .replace(str(tmp_path.parent), "TMP").replace(f"/proc/{service_pid}/", "/proc/PID/")[:160],
                    upload_s=kind.result.get("upload s"),
                    failed_after_s=kind.result.get("FAILED after s", ""), records_out=kind.result.get("records", ""),
                    started_again=kind.result.get("retry", ""),
                    others_unaffected="yes" if not (missing or twice or good_errors) else "NO",
                    leaked="none" if not leaks.get(f"{kind.name} ({kind.when})") else "YES", test=TEST)
    figures.add("bad_models_good", good_records_sent=len(acked), scored=len(scored), duplicated=len(twice),
                missing=len(missing), errors=len(good_errors), bad_models=len(trial),
                tcp_connections=len(connections), file_written="yes" if written.exists() else "no",
                service_pid_same="yes", workers_gone_after_delete_s=workers_gone_s,
                trial_s=round(time.monotonic() - started))
    assert missing == [], missing[:10]
    assert twice == [], twice[:10]
    assert good_errors == [], good_errors[:3]
    assert leaks == {}, leaks
    assert api_leaks == []
    assert log_leaks == []
    assert connections == []
    assert not written.exists()
    assert wrong == {}, wrong
    good.delete_instance_deployment(good_id)


def _matches(expect: str, outcome: str) -> bool:
    if expect == "refused":
        return outcome.startswith("refused at upload: 400")
    if expect == "FAILED":
        return outcome.startswith("deployment FAILED")
    if expect == "model_error":
        return outcome == f"records out: model_error {RECORDS_PER_BAD}"
    if expect == "some model_error":
        return outcome.startswith("records out: model_error") and "scored" in outcome
    return outcome == f"records out: scored {RECORDS_PER_BAD}"


def _wait(api: WMLClient, did: str, statuses: set[str], timeout: float, fail_ok: bool = False) -> str:
    deadline = time.monotonic() + timeout
    while (status := api.get_instance_deployment(did).status) not in statuses:
        assert fail_ok or status != "FAILED", api.get_instance_deployment(did).failure_message
        assert time.monotonic() < deadline, f"still {status}"
        time.sleep(0.5)
    return status


def _truncated(content: bytes) -> bytes:
    return content[:len(content) // 2]


def _collect(kafka: KafkaInfo, api: WMLClient, deployed: dict[str, tuple[Kind, str, str]], answers: list[str],
             since: float, *, outputs: dict[str, list[bytes]] | None = None, key: str = "") -> dict[str, list[bytes]]:
    """Reads every bad deployment's output (read_committed) until each is FAILED or has put out all its
    records; records in each kind's result what happened (under `key` when given: a retry)."""
    outputs = outputs if outputs is not None else {did: [] for did in deployed}
    consumer = Consumer(kafka.client_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest",
                                               "isolation.level": "read_committed"}))
    consumer.subscribe([target for _, _, target in deployed.values()])
    pending = set(deployed)
    deadline = time.monotonic() + 120
    checked = 0.0
    while pending and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            outputs[msg.key().decode().split("/")[0]].append(msg.value())
        if time.monotonic() - checked < 1.0:
            continue
        checked = time.monotonic()
        for did in sorted(pending):
            kind = deployed[did][0]
            dep = api.get_instance_deployment(did)
            answers.append(dep.model_dump_json())
            details = dep.entity.status_details
            if dep.status == "FAILED":
                code = details.failure.errors[0].code if details and details.failure else "?"
                outcome = f"deployment FAILED: {code}"
                if key:
                    kind.result[key] = f"{outcome} again after {time.monotonic() - since:.0f} s"
                else:
                    kind.result.update(outcome=outcome, detail=dep.failure_message, failed=True,
                                       **{"FAILED after s": round(time.monotonic() - since, 1)})
                pending.discard(did)
            elif len(outputs[did]) >= RECORDS_PER_BAD and not key:
                codes = Counter(json.loads(v).get("error") or "scored" for v in outputs[did])
                messages = {json.loads(v).get("message") for v in outputs[did]} - {None}
                kind.result.update(outcome="records out: " + ", ".join(f"{c} {n}" for c, n in sorted(codes.items())),
                                   detail="; ".join(sorted(str(m) for m in messages))[:300], status=dep.status,
                                   forked=[json.loads(v).get("prediction") for v in outputs[did]])
                pending.discard(did)
    end = time.monotonic() + 2  # anything written twice arrives now
    while time.monotonic() < end:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            outputs[msg.key().decode().split("/")[0]].append(msg.value())
    consumer.close()
    for did in pending:
        deployed[did][0].result[key or "outcome"] = f"neither FAILED nor {RECORDS_PER_BAD} records in 120 s " \
            f"({len(outputs[did])})"
    for did in deployed:
        values = outputs[did]
        deployed[did][0].result["outputs"] = b"".join(values).decode("utf-8", "replace")
        deployed[did][0].result["records"] = len(values)
    return outputs


def _alive(pids: set[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state not in ("Z", "X"):
            alive.append(pid)
    return alive
