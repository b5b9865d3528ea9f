"""Renders docs/RELIABILITY.md from the figures a `make reliability` run recorded (tests/conftest.py Figures).

    python -m tests.reliability.report FIGURES.json docs/RELIABILITY.md [MORE-FIGURES.json ...]

More figure files (a case run again, alone) are merged in, section by section, and the page says so.

Every section is a table of the rows the cases added, in the order they ran; the prose around them says
what each case does and what "recovered" means, so the document stays true when counts change.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SECTIONS: dict[str, tuple[str, str]] = {
    "faults": ("Faults injected and recovered", """\
Each fault is injected into the real chain while the operator runs (its own process, watching one namespace)
and the WML service answers through the fault proxy (`localplatform/wml_localplatform/faultproxy.py`). *shown* is the
condition/reason the resource showed while the fault lasted; *recovered* counts injections after which every
resource was Ready again with exactly one WML deployment in the desired state (0 duplicates, 0 orphans,
0 stuck). For stream faults, records sent, scored (read back read_committed), scored twice and missing."""),
    "kill9": ("Operator kill -9 trials", """\
The operator process is killed with SIGKILL at a random point of an operation (before, during or after its
WML calls), started again, and the namespace is checked once it settles: duplicates are WML deployments beyond
one per resource, orphans are WML deployments of no resource, stuck are resources whose deletion never
finished (finalizer) or that never became Ready for their generation."""),
    "kill9_handover": ("Re-creates under kill -9 while records flow", """\
One resource streams a 2-partition topic while a sender keeps producing (100 records/s). Each trial rotates the
Kafka Secret, which re-creates the deployment and hands its stream over (check, drain, switch, retire), and
kills with SIGKILL the operator or the WML service right after the n-th WML write of the switch or after a
random delay (*kill points*: which process, after which writes); the killed process is started again and the
namespace must converge to one deployment. At the end every acknowledged record is read back from the output
read_committed: *duplicated* were scored twice, *missing* never; *groups left* counts consumer groups of the
deleted deployments still on the broker."""),
    "kill9_deletion": ("Deletions whose Secrets go first, under kill -9", """\
Each trial deletes a RUNNING resource whose Secrets disappear with or before it, in a namespace of its own:
*namespace* (`kubectl delete namespace`: the namespace controller takes the Secrets at once, the resource waits
on its finalizer), *secret-first* (the WML Secret, or all three, then the resource) or *prune* (`kubectl delete
-f` of the one manifest holding the Secrets and the resource, as `kubectl apply --prune`, Argo CD and Flux do).
The operator (watching the glob `wso-del-*`, under deploy/'s RBAC) is *up* the whole time, *down* (killed before,
started once the deletion is under way) or *restarting* (SIGKILL at a random point, *kill points*: before the
deletion, after the Secret went, before, during or after WML's DELETE, or after the resource was gone; started
again at once). *converged*: the resource (for *namespace*, the namespace) gone, 0 WML deployments of the
trial's user, and the operator's copy of the login (`wml-login-<uid>` in its namespace) gone; *stuck*: still
there after the timeout (90 s full, 30 s reduced); *orphaned*: WML deployments left; copies removed by the
resource's DELETED event, by the sweep (every 5 s here), or *left*. *gone s*: from the deletion (for *down*,
from the operator's start) to the 404. The *namespace* way is expected to fail while an operator matching
namespaces by glob cannot serve a namespace that was already Terminating when it started (kopf)."""),
    "leftovers": ("What the run left on the broker", """\
After every suite of the run: the consumer groups of WML deployments (`wml-<deployment id>`) still on the broker.
Deleting a deployment deletes its group (docs/WML-API.md, "What a deployment leaves on the brokers"); a group
left here belongs to a deployment that was never deleted, or one whose cleanup did not finish before the
service stopped."""),
    "bad_specs": ("Generated bad input", """\
Generated StreamingDeployment specs and Secrets (hypothesis): wrong types, unknown fields, empty and huge
strings, missing Secrets and keys, malformed connection JSON. Each must either be refused by the apiserver with
a message naming the field, or reach `Stalled` with a specific reason, with 0 WML calls and no operator crash,
while a good resource beside them stays Ready."""),
    "fuzz": ("The service's API fuzzed (schemathesis)", """\
Requests generated from the service's own OpenAPI document, with a valid token on a real instance (so ids
resolve) and without one. The checks: no 5xx, responses conform to the schema."""),
    "records": ("Malformed input records", """\
Records that cannot be scored go out with an `error` code instead of stopping the stream: every record sent
is accounted for by exactly one output record."""),
    "bad_models": ("Bad models", """\
Users' scikit-learn models are untrusted code (docs/ARCHITECTURE.md, "Users' models"). Each kind below is published
by a user of one instance (`tests/reliability/test_bad_models.py`) and, when the upload is taken, deployed on a
topic of its own and fed 6 records, two of them holding "bad". *load*: the pickle misbehaves while it is
unpickled (the upload check loads it in a sandboxed worker); *predict*: it loads into an object whose `predict`
misbehaves (built with `__reduce__`), so it passes the upload check. The service runs with
`WML_SERVER_MODEL_MEMORY_LIMIT_MB=768`, `WML_SERVER_MODEL_PREDICT_TIMEOUT=3` and
`WML_SERVER_MODEL_LOAD_TIMEOUT=30`. *upload s*: the upload's answer time (up to 3 uploads at once);
*failed after s*: from the records' sending to FAILED; *started again*: the FAILED deployment set RUNNING again
(it loads its model anew and reads the aborted batch again). *others unaffected*: the good deployment beside
them (next table) scored every record exactly once. *leaked*: any of the secrets (the signing key, a canary in
the service's environment, a canary word in the other instance's model file, SQLite's header) in the kind's
output records. A child that a model forked and that called setsid outlived its deployment and the service
until setsid and setpgid were denied to workers (commit 07988e4). Alone:
`WSO_RELIABILITY=full .venv/bin/python -m pytest tests/reliability/test_bad_models.py` (all 28 kinds, about
2 minutes); `make test` runs 14 of them (about 75 s)."""),
    "bad_models_good": ("Bad models: the good deployment beside them", """\
One deployment of another instance's model (TF-IDF + logistic regression, skops) is fed tweets (50/s) for the
whole trial: *scored* counts distinct records read back read_committed, *duplicated* and *missing* against the
acknowledged ones, *errors* the ones that came out with an error. The listener on 127.0.0.1 counts the TCP
connections it got, the file a model tried to write is looked for, the service's PID is the one it started
with and /healthz answers; no secret is in any API answer or in the service's log; after the bad deployments
are deleted only the good deployment's worker process is left."""),
    "spark": ("A stream on Spark under kill -9", """\
One deployment on the run's Spark standalone cluster (a master, two workers of one core each, the stream taking
both) reads a 4-partition topic (`tests/reliability/test_spark_faults.py`). For each fault, 3,000 records are
sent, and a second into them the fault strikes: kill -9 of an executor (the worker starts another), of a worker
(started again on its ports), of the master (started again with its recovery state), of the stream's driver
(the service starts another from its checkpoint), and a restart of the broker (5 s down). *seconds to recover*:
from the fault until the deployment's group has committed every record sent and the deployment is RUNNING
(after a broker restart, tasks wait out Kafka timeouts before Spark runs them again). At the end every record
is read back read_committed: *lost* never came out, *repeated* came out twice (Spark's own Kafka sink may write
a record twice after such faults; ours is a transaction per input partition and batch that commits the
partition's offset too)."""),
    "security": ("Secrets and access", """\
What the suite checked about secrets and access in the same run."""),
    "at_rest": ("Security of the WML service: at rest, in transit, audit, brute force", """\
What the service stores encrypted (issue 21), with what, and how it was tried
(`tests/integration/test_wml_service_encryption.py`, `tests/unit/test_service_encryption.py`,
`tests/unit/test_service_signing_key.py`):

| stored | where | encrypted with |
|---|---|---|
| Kafka connections (user, password, api_key): each deployment's whole create request | `deployments.body` \
| Fernet (AES-128-CBC, HMAC-SHA256; `cryptography`), `enc:v1:` prefix |
| Spark credentials (`X-Spark-Service-Instance`: tenant secret, ...) | `deployments.spark` | the same |
| what a deleted deployment's cleanup still needs (its create request) until its group is deleted | \
`cleanups.body` | the same |
| the token signing key the service makes (a plaintext `signing.key` of an older service is taken over once) \
| `signing_key` | the same |
| a check value, so a wrong key is refused before any deployment exists | `key_check` | the same |
| the key itself | `WML_SERVER_KEY_FILE`, outside the data folder (a Secret in a cluster) | not stored by the service |

Not under that key: users' scrypt password hashes, model contents, a signing key file the service's operator
names (`WML_SERVER_SIGNING_KEY_FILE`, theirs). A Spark driver gets its credentials on stdin
(`spark/supervisor.py`), not in a file: the Spark test reads every file of the data folder (the driver's
checkpoint, status and log included) before the delete, and finds none. After a run, every file of every data
folder a test's service used (the in-cluster service's PersistentVolume included) is read raw for each Kafka
password, Spark secret, service key and signing key the tests handed out (a row of Secrets and access). Rotation
(`rotate-key`, `--drop-old`, beside a RUNNING stream; tokens issued before it still verify) was tried with the
built-in engine, not with a stream on Spark.

TLS paths tried:

| path | tested by |
|---|---|
| the in-cluster service serves HTTPS with the certificate `deploy/bootstrap-tls.sh` made; the operator pod \
verifies it with the default CA Secret (`WML_OPERATOR_WML_CA_SECRET`) through the whole lifecycle | \
`tests/e2e/test_in_cluster.py` |
| a client with the bootstrap CA verifies each of the Service's four names; another name and the system trust \
store are refused | `tests/integration/test_wml_tls_default_ca.py` |
| the operator with the default CA: a wrong CA is Stalled `WMLTLSError` with a Warning event and no unverified \
call; a missing CA Secret is Stalled naming the setting; the right CA put back is Ready again | \
`tests/integration/test_wml_tls_default_ca.py`, `tests/integration/test_operator_process_tls.py` |
| a renewed certificate served without a restart; a rotated CA bundle (new and previous) used at once | \
`tests/integration/test_wml_tls_default_ca.py`, `tests/unit/test_bootstrap_tls.py` |
| a resource's own `caSecretRef` against a service with its own CA | `tests/integration/test_wml_api_tls.py` |
| plain HTTP off loopback refused unless `WML_SERVER_PLAIN_HTTP` says so (the image's 0.0.0.0 included) | \
`tests/unit/test_service_settings.py`, `tests/unit/test_deploy_tls.py` |

The audit trail (one JSON line per change, `WML_SERVER_AUDIT_LOG`, default `<data dir>/audit.jsonl`, 0600): every
event (`token.issued`, `token.refused` (429s included), `deployment.created`/`patched`/`deleted`,
`model.created`/`published`/`version.deleted`/`deleted`, `user.added`/`removed`) is checked line by line against
a real service (`tests/integration/test_wml_service_audit.py`), and read back after the operator's
create/stop/start/delete and a re-create (`tests/e2e/test_lifecycle.py`, `tests/e2e/test_handover.py`): each
line has time, user, instance and client address, and no secret; the scanner reads every trail.

Brute force: token requests are limited per client address by default (`WML_SERVER_TOKEN_RATE_LIMIT`, 60 a minute
in bursts of 60; 429 with Retry-After before the password is checked; `X-Forwarded-For` believed only from
`WML_SERVER_TRUSTED_PROXIES`), and counted in `/metrics` (`wml_token_requests_failed_total{reason}`,
`wml_tokens_issued_total`): `tests/integration/test_wml_service_security.py` guesses passwords against a real
service (the row below)."""),
}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(c.replace("_", " ") for c in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def render(sections: dict[str, list[dict[str, Any]]], mode: str, runs: int = 1) -> str:
    cores = os.cpu_count()
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        kib = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        memory = f", {kib / 1024 / 1024:.0f} GiB memory"
    out = [
        "# Reliability and security figures",
        "",
        "<!-- Generated by `make reliability` (tests/reliability/report.py); edit the generator, not this file. -->",
        "",
        f"Run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, counts: **{mode}**, on {cores} cores{memory}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}.",
        "`make test` runs every case below with reduced counts; `make reliability` runs the full counts and "
        "rewrites this file.",
    ]
    if runs > 1:
        out += ["", f"These figures merge {runs} runs: the suite, and {runs - 1} case(s) run alone after it (a case "
                "added since, or run again after a race in its own check, not in the product, was fixed)."]
    for key, (title, prose) in SECTIONS.items():
        rows = sections.get(key)
        if not rows:
            continue
        out += ["", f"## {title}", "", prose, "", _table(rows)]
    for key in sorted(set(sections) - set(SECTIONS)):
        out += ["", f"## {key}", "", _table(sections[key])]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    sections: dict[str, list[dict[str, Any]]] = json.loads(Path(argv[1]).read_text())
    for extra in argv[3:]:
        for key, rows in json.loads(Path(extra).read_text()).items():
            if key != "security":  # the scanner's row describes one whole run
                sections.setdefault(key, []).extend(rows)
    mode = "full" if os.environ.get("WSO_RELIABILITY") == "full" else "reduced"
    Path(argv[2]).write_text(render(sections, mode, runs=len(argv) - 2))
    print(f"wrote {argv[2]} ({sum(len(rows) for rows in sections.values())} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
