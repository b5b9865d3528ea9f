"""`python -m wml_operator`: run the operator (kopf, standalone: no kopf peering; replicas elect one leader on a
Lease instead, wml_operator.elected), configured by environment; `--help` lists the settings."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import kopf
from pydantic import ValidationError

from wml_operator import elected
from wml_operator.settings import OperatorSettings, unknown_variables, usage


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args:
        print(f"error: unexpected arguments {args}; settings come from the environment\n\n{usage()}",
              file=sys.stderr)
        return 2
    unknown = unknown_variables(os.environ)
    if unknown:
        print(f"error: no setting reads {', '.join(unknown)}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        settings = OperatorSettings()
    except ValidationError as exc:
        for err in exc.errors(include_input=False, include_url=False):
            name = ".".join(str(p) for p in err["loc"])
            print(f"error: WML_OPERATOR_{name.upper()}: {err['msg']}", file=sys.stderr)
        return 2
    kopf.configure(log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
                   verbose=False)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    # `kill -USR1 <pid>` prints every thread's stack to stderr (names and lines only, no values): where a pass
    # that seems stuck is waiting, without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    import wml_operator.handlers  # noqa: F401 - registers the handlers
    from wml_operator.app import OperatorApp

    def operator() -> Coroutine[Any, Any, None]:
        # The app is built here, not before: under leader election a standby builds nothing and starts nothing.
        return kopf.operator(
            standalone=True, clusterwide=not settings.namespaces, namespaces=list(settings.namespaces),
            liveness_endpoint=f"http://{settings.health_address}/healthz",
            memo=kopf.Memo(app=OperatorApp.build(settings)))

    try:
        asyncio.run(elected.run(settings, operator) if settings.leader_election else operator())
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
