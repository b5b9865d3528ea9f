"""`make demo`: tweets scored POSITIVE/NEGATIVE by a stream declared as a StreamingDeployment, on the local platform.

    python -m wml_localplatform.demo up       start everything, run the scenario, leave it running
    python -m wml_localplatform.demo status   what is running, and how to look around
    python -m wml_localplatform.demo down     stop everything the demo started, remove its folder
    python -m wml_localplatform.demo send TEXT...   one tweet per argument to the input topic
    python -m wml_localplatform.demo scores [--follow]   the scored records of the output topic

Everything lives in $WSO_DEMO_DIR (default
/tmp/wml-stream-operator/demo): the platform's data, logs and PID files, so `down` stops exactly what `up`
started. `up` pauses before each change of state when run in a terminal; `--ci` (or WSO_DEMO_NONINTERACTIVE=1,
or CI=true) never pauses and prints no colours. `up --spark` (or WSO_DEMO_SPARK=1) also starts a Spark
standalone cluster and runs the sample's stream on it instead of the service's built-in engine.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from confluent_kafka import KafkaException

from wml_localplatform.config import MissingPrerequisite, PlatformConfig
from wml_localplatform.demo.commands import down, scores, send, up
from wml_localplatform.demo.console import Console
from wml_localplatform.demo.errors import DemoError, PortTaken
from wml_localplatform.demo.show import show_status
from wml_localplatform.demo.state import Layout, default_dir
from wml_localplatform.process import StartFailed
from wml_localplatform.tweets import TweetsUnavailable

DEFAULT_WML_PORT = 9443  # the WML service's own default; WSO_DEMO_WML_PORT=0 picks a free one


def _wml_port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise DemoError(f"WSO_DEMO_WML_PORT must be a port number, got {raw!r}") from None
    if not 0 <= port < 65536:
        raise DemoError(f"WSO_DEMO_WML_PORT must be 0..65535, got {port}")
    return port


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m wml_localplatform.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "send", "scores"])
    parser.add_argument("texts", nargs="*", help="send: the tweets to send")
    parser.add_argument("--dir", type=Path, default=default_dir(),
                        help="the demo's folder (default $WSO_DEMO_DIR or %(default)s)")
    parser.add_argument("--ci", action="store_true", default=_truthy("WSO_DEMO_NONINTERACTIVE") or _truthy("CI"),
                        help="never pause, no colours (also WSO_DEMO_NONINTERACTIVE=1 or CI=true)")
    parser.add_argument("--follow", action="store_true", help="scores: keep reading until Ctrl-C")
    parser.add_argument("--spark", action="store_true", default=_truthy("WSO_DEMO_SPARK"),
                        help="up: run the sample's stream on a local Spark cluster (also WSO_DEMO_SPARK=1)")
    parser.add_argument("--wml-port", default=os.environ.get("WSO_DEMO_WML_PORT", str(DEFAULT_WML_PORT)),
                        help="the WML service's port (default $WSO_DEMO_WML_PORT or %(default)s; 0: any free one)")
    return parser.parse_args(argv)


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def run(args: argparse.Namespace, layout: Layout, console: Console) -> int:
    if args.command == "up":
        return up(layout, console, layout.kube.config, _wml_port(args.wml_port), args.spark)
    if args.command == "down":
        return down(layout, console)
    if args.command == "status":
        console.step(f"The demo in {layout.root}")
        show_status(layout, console, layout.state())
        return 0 if all(layout.processes().values()) else 3
    if args.command == "send":
        return send(layout, console, args.texts)
    return scores(layout, console, args.follow)


def main(argv: list[str] | None = None) -> int:
    """Expected failures print `error: ...` (what to install, free or run) and exit 1 or 2; no traceback."""
    args = parse_args(argv)
    tty = sys.stdout.isatty() and sys.stdin.isatty()
    console = Console(color=tty and not args.ci and not os.environ.get("NO_COLOR"), interactive=tty and not args.ci)
    layout = Layout(args.dir.resolve(), PlatformConfig.load())
    try:
        return run(args, layout, console)
    except MissingPrerequisite as exc:
        print(f"error: {exc}\n  then run `make demo` again (it builds and caches what the platform needs)",
              file=sys.stderr)
        return 2
    except PortTaken as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (DemoError, StartFailed, TweetsUnavailable, KafkaException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"\ninterrupted; what was started keeps running: `make demo-down` stops it ({layout.root})",
              file=sys.stderr)
        return 130
