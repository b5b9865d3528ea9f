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


@dataclass
class Running:
    """What the scenario needs from the setup."""

    kubectl: Kubectl
    kafka: KafkaInfo
    state: DemoState
    user: WMLUser  # the WML login (never saved in demo.json)


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


def start_platform(layout: Layout, console: Console, config: PlatformConfig, wml_port: int) -> Running:
    console.step("Starting the local platform: Kubernetes API server with etcd, one Kafka broker (on 127.0.0.1)")
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

    console.step("Starting the WML service (the v3 API, running streams with the published models)")
    service = layout.wml(wml_port)
    user = service.add_user("marketing")
    took = service.start()
    console.say(f"{service.url} ready in {took:.1f} s; user `marketing` of WML instance {user.instance_id}")

    console.step(f"Starting the operator under its own RBAC (deploy/rbac.yaml, ServiceAccount "
                 f"{OPERATOR_NAMESPACE}/{SERVICE_ACCOUNT})")
    console.command("kubectl apply -f crds/wmlstream.dev_streamingdeployments.yaml")
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
    spark = {"tenant_id": "marketing", "tenant_id_full": "marketing-local", "instance_id": str(uuid.uuid4()),
             "cluster_master_url": "https://spark.invalid", "tenant_secret": secrets.token_urlsafe(16),
             "plan": "local"}
    docs = sample_secrets(
        resource, NAMESPACE,
        wml={"username": user.username, "password": user.password, "instance_id": user.instance_id},
        kafka={"kafka_brokers_sasl": json.dumps([kafka.bootstrap]), "user": kafka_user.name,
               "password": kafka_user.password, "security_protocol": kafka.security_protocol},
        spark_json=json.dumps(spark, indent=2))
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
                      output_topic=spec["output"]["topic"])
    layout.state_file.write_text(json.dumps(asdict(state), indent=2))
    return Running(kubectl, kafka, state, user)
