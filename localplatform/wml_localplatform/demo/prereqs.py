"""What the demo needs before it starts anything: the platform's binaries and jars, and a free WML port."""

from __future__ import annotations

import socket
from collections.abc import Callable

from wml_localplatform.config import MissingPrerequisite, PlatformConfig
from wml_localplatform.demo.errors import PortTaken
from wml_localplatform.spark import spark_home


def check_prerequisites(config: PlatformConfig, spark: bool = False) -> list[str]:
    """Every missing prerequisite, each saying what to install or run (with `spark`, Spark's too)."""
    problems = []
    checks: list[Callable[[], object]] = [
        lambda: config.k8s_binary("kube-apiserver"), lambda: config.k8s_binary("kube-controller-manager"),
        lambda: config.k8s_binary("kubectl"), config.etcd, config.kafka_libs, config.java]
    if spark:
        checks += [spark_home, config.spark_kafka_libs]
    for check in checks:
        try:
            check()
        except MissingPrerequisite as exc:
            problems.append(str(exc))
    return problems


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the service binds (SO_REUSEADDR): a port whose last connections are in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise PortTaken(
                f"port {port} on 127.0.0.1 is taken, and the demo's WML service needs it: free it "
                f"(`ss -ltnp 'sport = :{port}'` shows which program holds it) or pick another port with "
                f"WSO_DEMO_WML_PORT=<port> (0: any free port)") from None
