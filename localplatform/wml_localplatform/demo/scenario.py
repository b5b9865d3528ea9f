"""The scenario `up` runs once the platform is set up: score tweets, stop the stream, start it again."""

from __future__ import annotations

import base64
import json
import random
import urllib.request
from typing import Any

from wml_localplatform.demo.console import Console
from wml_localplatform.demo.errors import DemoError
from wml_localplatform.demo.kubectl import Kubectl, watch
from wml_localplatform.demo.show import show_records, summarize
from wml_localplatform.demo.start import Running
from wml_localplatform.demo.state import DemoState
from wml_localplatform.demo.topics import OutputReader, produce
from wml_localplatform.tweets import DATA_FILE, SDIST, Tweet
from wml_localplatform.wmlservice import WMLUser

BEFORE_STOP, WHILE_STOPPED = 240, 60  # tweets sent while RUNNING, then while STOPPED
QUIET_SECONDS = 5.0  # how long the demo watches the output topic while the stream is STOPPED
SEED = 2017  # which tweets are picked: the same ones every run
# How long a change of state and a batch of records may take: on Spark a driver JVM starts (or stops) at each
# change of state and its first micro-batch plans the query, so the waits are longer there.
WATCH_SECONDS, SPARK_WATCH_SECONDS = 120.0, 300.0
RECORDS_SECONDS, SPARK_RECORDS_SECONDS = 90.0, 240.0


def pick_tweets(tweets: list[Tweet], count: int, seed: int = SEED) -> list[Tweet]:
    """A fixed random sample of the polar tweets, so every run sends the same ones."""
    return random.Random(seed).sample(tweets, count)  # noqa: S311 - picks data, not secrets


def timeouts(spark: bool) -> tuple[float, float]:
    """(a change of state, a batch of records): seconds the scenario waits for each."""
    return (SPARK_WATCH_SECONDS, SPARK_RECORDS_SECONDS) if spark else (WATCH_SECONDS, RECORDS_SECONDS)


def set_state(kubectl: Kubectl, console: Console, st: DemoState, state: str, timeout: float = WATCH_SECONDS) -> float:
    """Patches spec.state as a user would, then watches until the WML deployment has it and is Ready."""
    patch = json.dumps({"spec": {"state": state}})
    console.command(f"kubectl patch sdep {st.name} -n {st.namespace} --type=merge -p '{patch}'")
    kubectl("patch", "sdep", st.name, "-n", st.namespace, "--type=merge", "-p", patch)
    return watch(kubectl, console, st.namespace, st.name,
                 [f"jsonpath={{.status.wmlStatus}}={state}", "condition=Ready"], timeout)


def runtime_environment(st: DemoState, user: WMLUser, deployment_id: str) -> str:
    """The deployment's entity.runtime_environment, read from the WML v3 API as any client would."""
    basic = base64.b64encode(f"{user.username}:{user.password}".encode()).decode()
    token = _get_json(f"{st.wml_url}/v3/identity/token", f"Basic {basic}")["token"]
    deployment = _get_json(f"{st.wml_url}/v3/wml_instances/{st.instance_id}/deployments/{deployment_id}",
                           f"Bearer {token}")
    return str(deployment["entity"].get("runtime_environment"))


def _get_json(url: str, authorization: str) -> Any:
    if not url.startswith(("http://", "https://")):
        raise DemoError(f"not a WML URL: {url}")
    request = urllib.request.Request(url, headers={"Authorization": authorization})  # noqa: S310 - checked above
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - checked above
        return json.load(response)


def scenario(run: Running, console: Console, tweets: list[Tweet]) -> list[dict[str, object]]:
    """Returns the scored records (each tweet once)."""
    kubectl, kafka, st = run.kubectl, run.kafka, run.state
    truth = {t.id: t for t in tweets}
    first, second = tweets[:BEFORE_STOP], tweets[BEFORE_STOP:]
    wait, records_wait = timeouts(run.spark)

    console.step(f"Waiting for sdep/{st.name} to be Ready (the operator creates the WML stream deployment)")
    if run.spark:
        console.say(f"The stream runs on Spark: secret/spark-credentials names cluster_master_url "
                    f"{st.spark_master}, which the WML service allows (a driver JVM starts: a minute or so)")
    took = watch(kubectl, console, st.namespace, st.name, ["condition=Ready"], wait)
    obj = kubectl.json("get", "sdep", st.name, "-n", st.namespace)
    deployment_id = obj["status"].get("deploymentId")
    console.say(f"Ready after {took:.1f} s: WML deployment {deployment_id} is {obj['status'].get('wmlStatus')}")
    if run.spark:
        console.say(f"its runtime_environment (GET /v3/wml_instances/{st.instance_id}/deployments/{deployment_id})"
                    f": {runtime_environment(st, run.user, deployment_id)}")

    reader = OutputReader(kafka, st.output_topic)
    try:
        console.step(f"Sending {len(first)} real tweets to topic {st.input_topic}")
        console.say(f"(human-rated tweets from {DATA_FILE} in the {SDIST} source distribution; each record is "
                    '{"id": ..., "tweet": ...}; the raters\' mean is kept aside to compare)')
        produce(kafka, st.input_topic, first)
        console.say(f"Scored records from topic {st.output_topic}, as they arrive (read_committed):")
        took = show_records(console, reader, len(first), truth, timeout=records_wait)
        console.say(f"scored {len(reader.records)} of {len(first)} tweets in {took:.1f} s")
        console.say()
        for line in summarize(reader.records, truth).lines():
            console.say(line)

        console.pause("stop the stream")
        console.step("Stopping the stream: spec.state STOPPED (the same WML deployment is stopped, not deleted)")
        took = set_state(kubectl, console, st, "STOPPED", wait)
        console.say(f"STOPPED and Ready after {took:.1f} s")
        before = len(reader.records)
        produce(kafka, st.input_topic, second)
        console.say(f"sent {len(second)} more tweets to {st.input_topic} while STOPPED; watching "
                    f"{st.output_topic} for {QUIET_SECONDS:.0f} s ...")
        late = reader.poll(QUIET_SECONDS)
        if late:
            raise DemoError(f"{len(late)} records were scored while the stream was STOPPED")
        console.say(f"while STOPPED: 0 records scored in {QUIET_SECONDS:.0f} s "
                    f"({len(second)} tweets waiting on {st.input_topic})")

        console.pause("start the stream again")
        console.step("Starting it again: spec.state RUNNING (it resumes where it stopped)")
        took = set_state(kubectl, console, st, "RUNNING", wait)
        console.say(f"RUNNING and Ready after {took:.1f} s; the tweets sent meanwhile:")
        show_records(console, reader, len(second), truth, timeout=records_wait, sample=5)
        reader.poll(2.0)  # anything scored a second time would show up now
        check_exactly_once(console, reader, before, first + second)
        console.say()
        for line in summarize(reader.records, truth).lines():
            console.say(line)
        return list(reader.records)
    finally:
        reader.close()


def check_exactly_once(console: Console, reader: OutputReader, before: int, sent: list[Tweet]) -> None:
    twice = sorted(k for k, n in reader.by_key.items() if n > 1)
    missing = sorted({t.id for t in sent} - set(reader.by_key))
    extra = sorted(set(reader.by_key) - {t.id for t in sent})
    if twice or missing or extra:
        raise DemoError(f"exactly-once broken: scored twice {twice[:10]}, missing {missing[:10]}, "
                        f"unexpected {extra[:10]}")
    console.say(f"after RUNNING again: {len(reader.records) - before} records sent while stopped were scored; "
                f"{len(sent)} tweets in, {len(reader.records)} scored, none twice, none missing")
