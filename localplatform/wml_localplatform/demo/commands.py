"""What each command does: `up` (set up and run the scenario), `down`, `send` and `scores`."""

from __future__ import annotations

import shutil
import time
import uuid

from confluent_kafka import KafkaException

from wml_localplatform import process, sample_models
from wml_localplatform.config import MissingPrerequisite, PlatformConfig
from wml_localplatform.demo.console import Console
from wml_localplatform.demo.errors import DemoError
from wml_localplatform.demo.own_model import own_model
from wml_localplatform.demo.prereqs import check_port_free, check_prerequisites
from wml_localplatform.demo.scenario import BEFORE_STOP, WHILE_STOPPED, pick_tweets, scenario
from wml_localplatform.demo.show import look_around, scored_line, show_status
from wml_localplatform.demo.start import start_platform
from wml_localplatform.demo.state import MARKER, Layout, running_kafka
from wml_localplatform.demo.topics import OutputReader, produce
from wml_localplatform.process import StartFailed
from wml_localplatform.tweets import DATA_FILE, Tweet, TweetsUnavailable, polar_tweets


def up(layout: Layout, console: Console, config: PlatformConfig, wml_port: int, spark: bool = False) -> int:
    state = layout.state()
    procs = layout.processes()
    if layout.is_demo_dir() and state and all(procs.values()):
        console.step(f"A demo is already running in {layout.root} (started {state.started}); nothing to start")
        show_status(layout, console, state)
        return 0
    if layout.root.exists() and any(layout.root.iterdir()) and not layout.is_demo_dir():
        raise DemoError(f"{layout.root} exists and is not the demo's folder: set WSO_DEMO_DIR to another path")

    problems = check_prerequisites(config, spark)
    if problems:
        raise MissingPrerequisite("\n  ".join(["the local platform is not ready:", *problems]))
    if layout.is_demo_dir():
        stale = [name for name, ok in procs.items() if not ok]
        why = f"{', '.join(stale)} stopped" if stale else "its setup did not finish"
        console.step(f"Cleaning up the previous demo in {layout.root} ({why}) to start afresh")
        down(layout, console)
    if wml_port:
        check_port_free(wml_port)

    console.say("The scenario: a marketing team wants the opinion of tweets on a topic. A published sentiment "
                "model runs as a stream:\ntweets in on one Kafka topic, POSITIVE/NEGATIVE out on another, "
                "declared as a StreamingDeployment and watched with kubectl.")
    try:
        console.step("Loading the tweets")
        tweets = polar_tweets(say=console.say)
        # Only tweets the data scientist's model was not trained on (its held-out split): the comparison with
        # VADER at the end is then a fair one.
        held_out = set(sample_models.split_tweets(tweets).test_ids)
        picked = pick_tweets([t for t in tweets if t.id in held_out], BEFORE_STOP + WHILE_STOPPED)
        console.say(f"{DATA_FILE}: {len(tweets)} tweets whose raters leaned positive or negative "
                    f"(mean rating not 0); {len(picked)} picked for the demo")
        run = start_platform(layout, console, config, wml_port, spark)
        scored = scenario(run, console, picked)
        own_model(run, console, layout.models_dir, picked, scored)
    except (DemoError, StartFailed, TweetsUnavailable, KafkaException) as exc:
        if layout.is_demo_dir():
            raise DemoError(f"{exc}\n(the demo's processes are left running for a look: logs in {layout.root}; "
                            "`make demo-down` stops them)") from None
        raise
    look_around(console, layout, run.state)
    console.say(f"\ndemo done in {console.elapsed()}")
    return 0


def down(layout: Layout, console: Console) -> int:
    if not layout.root.exists():
        console.say(f"no demo in {layout.root}: nothing to stop")
        return 0
    if not layout.is_demo_dir():
        raise DemoError(f"{layout.root} is not the demo's folder (no {MARKER} in it); leaving it alone")
    started = time.monotonic()
    stopped = []
    if process.stop_pid_file(layout.operator_dir / "operator.pid", timeout=20):
        stopped.append("operator")
    if process.stop_pid_file(layout.wml_dir / "wml-server.pid", timeout=20):
        stopped.append("WML service")
    if process.stop_pid_file(layout.model_server_pid, timeout=10):
        stopped.append("model server")
    # A stream on Spark runs in a driver process of the service's that outlives the service by design.
    layout.wml().stop_spark_drivers()
    if layout.uses_spark():
        if layout.spark.running():
            stopped.append("Spark")
        layout.spark.destroy()
    if layout.kafka.running():
        stopped.append("Kafka")
    layout.kafka.destroy()
    if layout.kube.running():
        stopped.append("Kubernetes")
    layout.kube.destroy()
    shutil.rmtree(layout.root, ignore_errors=True)
    console.say(f"stopped: {', '.join(stopped) or 'nothing was running'}; removed {layout.root} "
                f"({time.monotonic() - started:.1f} s)")
    return 0


def send(layout: Layout, console: Console, texts: list[str]) -> int:
    kafka, state = running_kafka(layout)
    tweets = [Tweet(f"own-{uuid.uuid4().hex[:8]}", 0.0, text) for text in texts]
    produce(kafka, state.input_topic, tweets)
    console.say(f"sent {len(tweets)} to {state.input_topic}: " + ", ".join(t.id for t in tweets))
    return 0


def scores(layout: Layout, console: Console, follow: bool) -> int:
    kafka, state = running_kafka(layout)
    reader = OutputReader(kafka, state.output_topic)
    try:
        quiet_since = time.monotonic()
        while follow or time.monotonic() - quiet_since < 3.0:
            new = reader.poll(0.5)
            for rec in new:
                console.say(f"{rec.get('id', '?'):<14} {scored_line(rec)}")
            if new:
                quiet_since = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
    return 0
