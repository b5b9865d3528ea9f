"""Runs one stream deployment without the REST API: `python -m wml_server.engine --help`.

For trying a broker and a topic pair by hand, and for the tests that SIGKILL a running stream. The
password (or api_key) comes from the environment, never from the command line, where `ps` would show it.
Prints one JSON line per status change, and a last line with the record counts; SIGTERM or SIGINT stop
the stream cleanly (its last transaction commits). Exit status: 0 stopped, 1 FAILED, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import uuid
from types import FrameType

from wml_server.engine.engine import Engine
from wml_server.engine.options import StreamOptions
from wml_server.engine.spec import KafkaEndpoint, KafkaTopic, StartOptions, StreamSpec
from wml_server.engine.state import FAILED, Errors
from wml_server.models.registry import default_registry
from wml_server.models.sentiment import SENTIMENT_MODEL_ID

PASSWORD_ENV = "WML_ENGINE_KAFKA_PASSWORD"  # noqa: S105 - the name of a variable, not a password
API_KEY_ENV = "WML_ENGINE_KAFKA_API_KEY"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wml_server.engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployment-id", default=str(uuid.uuid4()),
                        help="names the consumer group and transactional id (wml-<id>): reuse it to resume")
    parser.add_argument("--brokers", required=True, help="comma-separated host:port list")
    parser.add_argument("--input-topic", required=True)
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--dead-letter-topic", help="records that cannot be scored go there instead of the output "
                                                     "topic (same brokers, same transactions)")
    parser.add_argument("--user", help=f"SASL user; the password is read from ${PASSWORD_ENV} "
                                       f"(or use ${API_KEY_ENV} alone)")
    parser.add_argument("--security-protocol", choices=["SASL_SSL", "SASL_PLAINTEXT"], default="SASL_SSL")
    parser.add_argument("--sasl-mechanism", default="PLAIN")
    parser.add_argument("--model-id", default=SENTIMENT_MODEL_ID)
    parser.add_argument("--starting-offsets", choices=["earliest", "latest"], default="earliest",
                        help="where partitions the group has no committed offset for start")
    parser.add_argument("--batch-size", type=int, default=StreamOptions.batch_size)
    parser.add_argument("--unreachable-timeout", type=float, default=StreamOptions.unreachable_timeout)
    parser.add_argument("--scoring-workers", type=int, default=StreamOptions.scoring_workers,
                        help="worker processes that score the stream (0: in this process; default %(default)s)")
    return parser


def _print(line: dict[str, object]) -> None:
    print(json.dumps(line), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    model = default_registry().get(args.model_id)
    if model is None:
        print(f"error: no model {args.model_id}", file=sys.stderr)
        return 2
    connection = KafkaEndpoint(brokers=args.brokers.split(","), user=args.user,
                               password=os.environ.get(PASSWORD_ENV), api_key=os.environ.get(API_KEY_ENV),
                               security_protocol=args.security_protocol, sasl_mechanism=args.sasl_mechanism)
    spec = StreamSpec(args.deployment_id, model, KafkaTopic(args.input_topic, connection),
                      KafkaTopic(args.output_topic, connection), StartOptions(args.starting_offsets),
                      dead_letter_topic=args.dead_letter_topic or None)

    def announce(deployment_id: str, status: str, errors: Errors) -> None:
        _print({"deployment_id": deployment_id, "status": status, "errors": errors})

    quit_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        quit_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    options = StreamOptions(batch_size=args.batch_size, unreachable_timeout=args.unreachable_timeout,
                            scoring_workers=args.scoring_workers)
    engine = Engine(on_status_change=announce, options=options)
    engine.start(spec)
    state = None
    while not quit_requested.is_set():
        state = engine.wait_for(spec.deployment_id, [FAILED], timeout=0.2)
        if state is not None and state.status == FAILED:
            break
    failed = state is not None and state.status == FAILED
    if not failed:
        engine.stop(spec.deployment_id, timeout=60)
    state = engine.status(spec.deployment_id)
    assert state is not None
    _print({"records_in": state.records_in, "records_out": state.records_out,
            "records_errored": state.records_errored})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
