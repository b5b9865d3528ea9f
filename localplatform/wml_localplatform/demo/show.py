"""What the demo prints beyond its steps: scored records, the agreement table, status and how to look around."""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wml_localplatform.demo.console import Console
from wml_localplatform.demo.errors import DemoError
from wml_localplatform.demo.kubectl import Kubectl
from wml_localplatform.demo.state import DEFAULT_DIR, DemoState, Layout
from wml_localplatform.demo.topics import OutputReader
from wml_localplatform.tweets import Tweet
from wml_localplatform.wmloperator import OPERATOR_NAMESPACE, SERVICE_ACCOUNT


@dataclass(frozen=True)
class Summary:
    table: list[list[int]]  # rows: raters positive / negative; columns: model POSITIVE / NEGATIVE
    errors: int  # records the service could not score

    @property
    def total(self) -> int:
        return sum(map(sum, self.table)) + self.errors

    @property
    def agree(self) -> int:
        return self.table[0][0] + self.table[1][1]

    def lines(self) -> list[str]:
        t = self.table
        rows = [("", "model POSITIVE", "model NEGATIVE", "total"),
                ("raters positive", str(t[0][0]), str(t[0][1]), str(t[0][0] + t[0][1])),
                ("raters negative", str(t[1][0]), str(t[1][1]), str(t[1][0] + t[1][1])),
                ("total", str(t[0][0] + t[1][0]), str(t[0][1] + t[1][1]), str(sum(map(sum, t))))]
        out = [f"{a:<16}{b:>16}{c:>16}{d:>8}" for a, b, c, d in rows]
        scored = sum(map(sum, t))
        share = 100.0 * self.agree / scored if scored else 0.0
        out.append(f"agreement with the human raters: {self.agree} of {scored} ({share:.1f} %)")
        if self.errors:
            out.append(f"records the service could not score: {self.errors}")
        return out


def summarize(records: list[dict[str, Any]], truth: dict[str, Tweet]) -> Summary:
    table = [[0, 0], [0, 0]]
    errors = 0
    for rec in records:
        tweet = truth.get(str(rec.get("id")))
        if tweet is None or rec.get("prediction") not in ("POSITIVE", "NEGATIVE"):
            errors += 1
            continue
        table[0 if tweet.mean > 0 else 1][0 if rec["prediction"] == "POSITIVE" else 1] += 1
    return Summary(table, errors)


def shorten(text: str, width: int = 64) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def scored_line(rec: dict[str, Any], truth: dict[str, Tweet] | None = None) -> str:
    tweet = (truth or {}).get(str(rec.get("id")))
    rated = f"  (raters: {tweet.mean:+.2f})" if tweet else ""
    if "prediction" not in rec:
        return f"{'ERROR':<8}        {shorten(str(rec.get('error')))}"
    return f"{rec['prediction']:<8} {rec.get('probability', 0):.2f}  {shorten(str(rec.get('tweet', '')))}{rated}"


def show_records(console: Console, reader: OutputReader, expected: int, truth: dict[str, Tweet],
                 timeout: float = 90.0, sample: int = 8) -> float:
    """Prints the first records as they arrive, then progress, until `expected` more records were read."""
    started = last = time.monotonic()
    base = len(reader.records)
    while (done := len(reader.records) - base) < expected:
        if time.monotonic() - started > timeout:
            raise DemoError(f"only {done} of {expected} tweets were scored within {timeout:.0f} s")
        if time.monotonic() - last >= 2.0:
            console.say(f"  ... {done} of {expected} scored")
            last = time.monotonic()
        for rec in reader.poll(0.5)[:max(0, sample - done)]:
            console.say("  " + scored_line(rec, truth))
    return time.monotonic() - started


def look_around(console: Console, layout: Layout, st: DemoState) -> None:
    q = shlex.quote
    creds = "{{.data.username|base64decode}}:{{.data.password|base64decode}}"
    parse_json = 'import json, sys; print(json.load(sys.stdin)["token"])'
    down = "make demo-down"
    if layout.root != DEFAULT_DIR:
        down = f"WSO_DEMO_DIR={q(str(layout.root))} make demo-down   (or: wso-demo down)"
    console.step("The demo keeps running. To look around, in this shell:")
    console.say(f"""\
export KUBECONFIG={q(st.kubeconfig)} PATH={q(str(layout.bin))}:$PATH
kubectl get sdep -A -o wide                    # the resource, as the operator reports it
kubectl get pmodel -A                          # the data scientist's model, published from its URL
kubectl describe sdep -n {st.namespace} {st.name}    # conditions and events
kubectl patch sdep -n {st.namespace} {st.name} --type=merge -p '{{"spec": {{"state": "STOPPED"}}}}'
kubectl auth can-i --list --as=system:serviceaccount:{OPERATOR_NAMESPACE}:{SERVICE_ACCOUNT}

The WML service: {st.wml_url} (OpenAPI: {st.wml_url}/docs), instance {st.instance_id}
CREDS=$(kubectl get secret -n {st.namespace} wml-credentials -o go-template='{creds}')
TOKEN=$(curl -s -u "$CREDS" {st.wml_url}/v3/identity/token | python3 -c '{parse_json}')
curl -s -H "Authorization: Bearer $TOKEN" {st.wml_url}/v3/wml_instances/{st.instance_id}/deployments

Your own tweets in, scores out (topics {st.input_topic} -> {st.output_topic}):
wso-demo send "What a great day" "This is awful"
wso-demo scores --follow

Logs: {layout.operator_dir}/operator.log, {layout.wml_dir}/logs/wml-server.log, {layout.root}/kafka/logs/
The WML service's stored credentials are encrypted by the key in {layout.wml_dir}/keys/wml.key (README: \
"Managing the service's key").""")
    if st.spark_master:
        ui = layout.spark.info().master_ui if layout.spark.info_path.is_file() else "?"
        console.say(f"Spark: {st.spark_master} (master UI {ui}); its logs {layout.spark.dir}/logs/, the stream's "
                    f"driver's {layout.wml_dir}/data/spark/")
    console.say(f"Stop everything and remove {layout.root}: {down}")


def show_status(layout: Layout, console: Console, state: DemoState | None) -> None:
    for name, ok in layout.processes().items():
        console.say(f"{name:<36} {'running' if ok else 'stopped'}")
    if state and layout.kube.running():
        kubectl = Kubectl(Path(state.kubectl), Path(state.kubeconfig))
        console.command("kubectl get sdep -A -o wide")
        console.say(kubectl("get", "sdep", "-A", "-o", "wide", check=False).stdout.rstrip())
        look_around(console, layout, state)
