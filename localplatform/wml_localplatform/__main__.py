"""`python -m wml_localplatform up|down|status|env|cluster-up|cluster-down`.

cluster-up: a control plane with a node of this machine (root), a broker the pods reach, and `deploy/` with
components/wml-server applied on it (incluster.py): the operator and the service as pods."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from wml_localplatform.config import MissingPrerequisite, PlatformConfig, read_versions
from wml_localplatform.incluster import NAMESPACE, install
from wml_localplatform.kafka import KafkaBroker
from wml_localplatform.kube import KubeControlPlane
from wml_localplatform.node import NODE_IP, LocalNode
from wml_localplatform.process import StartFailed
from wml_localplatform.spark import SparkCluster


def default_dir() -> Path:
    return Path(os.environ.get("WSO_PLATFORM_DIR") or "/tmp/wml-stream-operator/platform")  # noqa: S108


def parts(root: Path) -> tuple[KubeControlPlane, KafkaBroker, SparkCluster]:
    config = PlatformConfig.load()
    return (KubeControlPlane(config, root / "kube"), KafkaBroker(config, root / "kafka"),
            SparkCluster(config, root / "spark"))


def env_lines(root: Path) -> list[str]:
    kube, kafka, spark = parts(root)
    lines = []
    if kube.info_path.is_file():
        lines.append(f"export KUBECONFIG={shlex.quote(kube.info().kubeconfig)}")
    if kafka.info_path.is_file():
        info = kafka.info()
        user = info.user("wml")
        lines += [f"export WSO_KAFKA_BOOTSTRAP={info.bootstrap}",
                  f"export WSO_KAFKA_SECURITY_PROTOCOL={info.security_protocol}",
                  f"export WSO_KAFKA_SASL_MECHANISM={info.sasl_mechanism}",
                  f"export WSO_KAFKA_USERNAME={user.name}",
                  f"export WSO_KAFKA_PASSWORD={shlex.quote(user.password)}"]
    if spark.info_path.is_file() and spark.running():
        lines.append(f"export WSO_SPARK_MASTER={spark.info().master_url}")
    return lines


def up(root: Path) -> None:
    kube, kafka, spark = parts(root)
    root.mkdir(parents=True, exist_ok=True)
    print(f"Starting the local platform in {root}", flush=True)
    k = kube.start()
    print(f"  Kubernetes {k.version}: {k.server} ready ({k.ready_seconds:.1f} s from launch to /readyz; "
          f"apiserver alone {k.apiserver_ready_seconds:.1f} s)", flush=True)
    print(f"    kubeconfig: {k.kubeconfig}")
    info = kafka.start()
    print(f"  Kafka {info.version}: {info.bootstrap} ready ({info.ready_seconds:.1f} s), "
          f"{info.security_protocol} {info.sasl_mechanism}")
    for user in info.users:
        print(f"    user {user.name} password {user.password}")
    s = spark.start()
    print(f"  Spark {s.version}: {s.master_url} ready ({s.ready_seconds:.1f} s), {len(s.worker_pids)} workers")
    print(f"    master UI: {s.master_ui}")
    print("\nTo use it from this shell:\n  eval \"$(make -s platform-env)\"")


def down(root: Path) -> None:
    kube, kafka, spark = parts(root)
    spark.destroy()
    kafka.destroy()
    kube.destroy()
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    print(f"Local platform stopped; {root} removed")


def status(root: Path) -> int:
    kube, kafka, spark = parts(root)
    print(f"platform dir: {root}")
    print(f"  kubernetes: {'running' if kube.running() else 'stopped'}")
    print(f"  kafka:      {'running' if kafka.running() else 'stopped'}")
    spark_running = spark.running() and spark.info_path.is_file()
    where = f" ({spark.info().master_url}, UI {spark.info().master_ui})" if spark_running else ""
    print(f"  spark:      {'running' if spark_running else 'stopped'}{where}")
    return 0 if kube.running() and kafka.running() and spark_running else 3


def cluster_parts(root: Path) -> tuple[KubeControlPlane, KafkaBroker]:
    config = PlatformConfig.load()
    return KubeControlPlane(config, root / "kube", for_nodes=True), KafkaBroker(config, root / "kafka",
                                                                                pods_host=NODE_IP)


def cluster_up(root: Path) -> None:
    config = PlatformConfig.load()
    versions = read_versions()
    kube, kafka = cluster_parts(root)
    root.mkdir(parents=True, exist_ok=True)
    print(f"Starting a control plane and a node in {root}", flush=True)
    k = kube.start()
    node = LocalNode(config, root / "node", k, root / "kube" / "pki")
    n = node.start(images=(versions["OPERATOR_IMAGE"], versions["SERVER_IMAGE"]))
    print(f"  node {n.name} ({n.ip}) Ready in {n.ready_seconds:.1f} s", flush=True)
    info = kafka.start()
    print(f"  Kafka {info.version}: {info.bootstrap} (pods: {info.pods_bootstrap})", flush=True)
    done = install(config, k.kubeconfig, root, versions["OPERATOR_IMAGE"], versions["SERVER_IMAGE"])
    print(f"  operator and WML service running in namespace {NAMESPACE}; the service's first user is "
          f"{done.login.username} (password in the Secret wml-credentials), its CA in {done.ca_file}")
    print(f"\n  export KUBECONFIG={shlex.quote(k.kubeconfig)}\n  kubectl get pods -n {NAMESPACE}")
    print(f"  Kafka Secrets of StreamingDeployments name the pods' listener: {info.pods_bootstrap}")


def cluster_down(root: Path) -> None:
    kube, kafka = cluster_parts(root)
    if kube.info_path.is_file():
        LocalNode(PlatformConfig.load(), root / "node", kube.info(), root / "kube" / "pki").destroy()
    kafka.destroy()
    kube.destroy()
    shutil.rmtree(root, ignore_errors=True)
    print(f"Control plane, node and broker stopped; {root} removed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wml_localplatform", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "env", "cluster-up", "cluster-down"])
    parser.add_argument("--dir", type=Path, default=None,
                        help="where run-time files live (default $WSO_PLATFORM_DIR or "
                             "/tmp/wml-stream-operator/platform; cluster-*: /tmp/wml-stream-operator/cluster)")
    args = parser.parse_args(argv)
    if args.command.startswith("cluster-"):
        root = args.dir or Path("/tmp/wml-stream-operator/cluster")  # noqa: S108
        try:
            (cluster_up if args.command == "cluster-up" else cluster_down)(root)
        except (MissingPrerequisite, StartFailed, subprocess.CalledProcessError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    args.dir = args.dir or default_dir()
    try:
        if args.command == "up":
            up(args.dir)
        elif args.command == "down":
            down(args.dir)
        elif args.command == "status":
            return status(args.dir)
        else:
            print("\n".join(env_lines(args.dir)))
    except (MissingPrerequisite, StartFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        down(args.dir)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
