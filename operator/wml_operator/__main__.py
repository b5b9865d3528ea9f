"""`python -m wml_operator`: run the operator (kopf, standalone: no peering), configured by environment."""

from __future__ import annotations

import asyncio
import logging
import sys

import kopf

from wml_operator.settings import OperatorSettings


def main() -> int:
    settings = OperatorSettings.from_env()
    kopf.configure(log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
                   verbose=False)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    import wml_operator.handlers  # noqa: F401 - registers the handlers

    host_port = settings.health_address
    try:
        asyncio.run(kopf.operator(
            standalone=True, clusterwide=not settings.namespaces, namespaces=list(settings.namespaces),
            liveness_endpoint=f"http://{host_port}/healthz"))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
