"""`up`'s setup: the local platform, the WML service, the operator under its RBAC, the sample and its Secrets."""

from __future__ import annotations

import json
import secrets
import shlex
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from wml_localplatform.config import PlatformConfig
from wml_localplatform.demo.console import Console
from wml_localplatform.demo.kubectl import Kubectl
from wml_localplatform.demo.samples import SAMPLE, sample_resource, sample_secrets
from wml_localplatform.demo.state import DemoState, Layout
from wml_localplatform.demo.topics import create_topics
from wml_localplatform.kafka import KafkaInfo
from wml_localplatform.wmloperator import (
    OPERATOR_NAMESPACE,
    SERVICE_ACCOUNT,
    install_crd,
    install_rbac,
    service_account_kubeconfig,
)
from wml_localplatform.wmlservice import WMLUser

NAMESPACE = "marketing"
NOT_SPARK = "https://spark.invalid"  # a cluster_master_url that is no Spark master: the built-in engine
SPARK_EXECUTOR_MEMORY = "768m"  # two of them fit the two 2g workers beside the driver on a small machine


@dataclass
class Running:
    """What the scenario needs from the setup."""

    kubectl: Kubectl
    kafka: KafkaInfo
    state: DemoState
    user: WMLUser  # the WML login (never saved in demo.json)

    @property
    def spark(self) -> bool:
        return bool(self.state.spark_master)


def spark_credentials(cluster_master_url: str) -> dict[str, str]:
    """The Spark Secret's credentials.json: its cluster_master_url decides where the service runs the stream."""
    return {"tenant_id": "marketing", "tenant_id_full": "marketing-local", "instance_id": str(uuid.uuid4()),
            "cluster_master_url": cluster_master_url, "tenant_secret": secrets.token_urlsafe(16), "plan": "local"}


def service_env(config: PlatformConfig, spark_master: str) -> dict[str, str]:
    """The WML service's environment: with a Spark master, it may run streams there (and only there)."""
    if not spark_master:
        return {}
    return {"WML_SERVER_SPARK_MASTERS": spark_master, "WML_SERVER_SPARK_JARS": str(config.spark_kafka_libs()),
            "WML_SERVER_SPARK_EXECUTOR_MEMORY": SPARK_EXECUTOR_MEMORY}


def install_commands(layout: Layout, config: PlatformConfig) -> Path:
    """bin/kubectl (the platform's) and bin/wso-demo (this script, for this folder), for the user's PATH."""
    layout.bin.mkdir(exist_ok=True)
    kubectl = layout.bin / "kubectl"
    kubectl.unlink(missing_ok=True)
    kubectl.symlink_to(config.kubectl())
    wrapper = layout.bin / "wso-demo"
    q = shlex.quote
    wrapper.write_text(f"#!/bin/sh\n# `make demo`'s script for the demo in {layout.root}\n"
                       f"WSO_DEMO_DIR={q(str(layout.root))} "
                       f'exec {q(sys.executable)} -m wml_localplatform.demo "$@"\n')
    wrapper.chmod(0o755)
    return kubectl


def start_platform(layout: Layout, console: Console, config: PlatformConfig, wml_port: int,
                   spark: bool = False) -> Running:
    cluster = ", a Spark standalone cluster" if spark else ""
    console.step(f"Starting the local platform: Kubernetes API server with etcd, one Kafka broker{cluster} "
                 "(on 127.0.0.1)")
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.marker.write_text("make demo's folder: `make demo-down` stops what it started and removes it\n")
    kube = layout.kube.start()
    console.say(f"Kubernetes {kube.version}: {kube.server}, ready in {kube.ready_seconds:.1f} s "
                "(RBAC on, no nodes: the operator runs as a local process)")
    link = install_commands(layout, config)
    kubectl = Kubectl(link, Path(kube.kubeconfig))
    console.say("Kafka: starting the broker (a JVM; 10 to 30 s) ...")
    kafka = layout.kafka.start()
    console.say(f"Kafka {kafka.version}: {kafka.bootstrap}, ready in {kafka.ready_seconds:.1f} s "
                f"({kafka.security_protocol} {kafka.sasl_mechanism}; users admin and wml)")
    master = ""
    if spark:
        console.say(f"Spark: starting a master and {layout.spark.workers} workers (JVMs; 15 to 30 s) ...")
        info = layout.spark.start()
        master = info.master_url
        console.say(f"Spark {info.version}: {master}, ready in {info.ready_seconds:.1f} s (master UI "
                    f"{info.master_ui})")

    console.step("Starting the WML service (the v3 API, running streams with the published models)")
    service = layout.wml(wml_port, service_env(config, master))
    user = service.add_user("marketing")
    took = service.start()
    console.say(f"{service.url} ready in {took:.1f} s; user `marketing` of WML instance {user.instance_id}")

    console.step(f"Starting the operator under its own RBAC (deploy/rbac.yaml, ServiceAccount "
                 f"{OPERATOR_NAMESPACE}/{SERVICE_ACCOUNT})")
    console.command("kubectl apply -f crds/wmlstream.dev_streamingdeployments.yaml "
                    "-f crds/wmlstream.dev_publishedmodels.yaml")
    install_crd(kubectl)
    console.command("kubectl apply -f deploy/namespace.yaml -f deploy/serviceaccount.yaml -f deploy/rbac.yaml")
    install_rbac(kubectl)
    operator = layout.operator()
    service_account_kubeconfig(kubectl, Path(kube.kubeconfig), operator.kubeconfig, duration="720h")
    took = operator.start()
    console.say(f"python -m wml_operator (kopf) with a ServiceAccount token kubeconfig: ready in {took:.1f} s")
    console.say(f"log: {operator.log}")

    console.step(f"Creating namespace {NAMESPACE}, the Secrets, and the sample StreamingDeployment")
    resource = sample_resource(NAMESPACE, service.url)
    spec = resource["spec"]
    console.command(f"kubectl create namespace {NAMESPACE}")
    kubectl("create", "namespace", NAMESPACE)
    kafka_user = kafka.user("wml")
    spark_json = json.dumps(spark_credentials(master or NOT_SPARK), indent=2)
    docs = sample_secrets(
        resource, NAMESPACE,
        wml={"username": user.username, "password": user.password, "instance_id": user.instance_id},
        kafka={"kafka_brokers_sasl": json.dumps([kafka.bootstrap]), "user": kafka_user.name,
               "password": kafka_user.password, "security_protocol": kafka.security_protocol},
        spark_json=spark_json)
    console.command(f"kubectl apply -n {NAMESPACE} -f deploy/samples/secrets.yaml   "
                    "# with the local platform's values in place of its placeholders:")
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    for doc in docs:
        console.say(f"  secret/{doc['metadata']['name']:<18} {', '.join(sorted(doc['stringData']))}")
    create_topics(kafka, [spec["input"]["topic"], spec["output"]["topic"]])
    console.say(f"Kafka topics {spec['input']['topic']} (in) and {spec['output']['topic']} (out) created")
    console.command(f"kubectl apply -n {NAMESPACE} -f deploy/samples/{SAMPLE.name}   "
                    f"# with spec.wml.url: {service.url}")
    kubectl("apply", "-f", "-", input=json.dumps(resource))

    state = DemoState(started=time.strftime("%Y-%m-%d %H:%M:%S"), kubeconfig=kube.kubeconfig,
                      kubectl=str(link), wml_url=service.url, instance_id=user.instance_id, namespace=NAMESPACE,
                      name=resource["metadata"]["name"], input_topic=spec["input"]["topic"],
                      output_topic=spec["output"]["topic"], spark_master=master)
    layout.state_file.write_text(json.dumps(asdict(state), indent=2))
    return Running(kubectl, kafka, state, user)
