"""The service's API fuzzed from its own OpenAPI document with schemathesis, with a valid token on a real
instance (path ids fixed to ones that exist, so requests get past authorisation into the handlers) and
without a token. Checks: no 5xx, responses conform to the documented schema and content type. Then the
hand-made bad requests a fuzzer does not make: malformed JSON, huge and chunked bodies, bad headers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.conftest import Figures
from tests.reliability.conftest import count
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_api.models import DeploymentCreate, KafkaConnection, SparkServiceInstance, StreamInput, StreamOutput
from wml_localplatform.wmlservice import WMLService, WMLUser

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
MODEL = "3b1f3d7e-5c1a-4d8e-9b7a-6f0e2c9d4a11"
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"


def _deployment(service: WMLService, user: WMLUser) -> str:
    conn = KafkaConnection(kafka_brokers_sasl=["127.0.0.1:9"], user="u", password="p")
    spark = SparkServiceInstance.model_validate({"credentials": {
        "tenant_id": "t", "tenant_id_full": "tf", "cluster_master_url": "https://s", "instance_id": "i",
        "tenant_secret": "s", "plan": "p"}})
    client = WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)
    return client.create_deployment(MODEL, DeploymentCreate(
        name="fuzz target", input=StreamInput(connection=conn, source={"topic": "in"}),
        output=StreamOutput(connection=conn, target={"topic": "out"})), spark).id


def _entries(har: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(har.read_text())["log"]["entries"]
    return entries


def test_no_server_errors_and_documented_responses(make_wml_service: Callable[..., WMLService], tmp_path: Path,
                                                   figures: Figures) -> None:
    # A service of its own with no limit on token requests: on the shared one the fuzzer's basic-auth requests
    # shared a bucket with every earlier test's and ran into 429 after 60 (tested by the security tests), so
    # the rest of its cases never reached the handlers.
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false", WML_SERVER_DEPLOYMENT_LIMIT="5",
                               WML_SERVER_TOKEN_RATE_LIMIT="0")
    user = service.add_user()
    token = requests.get(f"{service.url}/v3/identity/token", auth=(user.username, user.password),
                         timeout=10).json()["token"]
    deployment = _deployment(service, user)
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.instance_id" = "{user.instance_id}"\n"path.model_id" = "{MODEL}"\n'
                      f'"path.deployment_id" = "{deployment}"\n')
    examples = count(200, 25)
    for label, headers in (("with a token", ["-H", f"Authorization: Bearer {token}"]), ("without a token", [])):
        har = tmp_path / f"{label.replace(' ', '-')}.har"
        result = subprocess.run(
            [str(SCHEMATHESIS), "--config-file", str(config), "run", f"{service.url}/openapi.json",
             "--checks", CHECKS, "--max-examples", str(examples), "--seed", "20261127", "--no-color",
             "--phases", "examples,coverage,fuzzing", "--workers", "1", "--generation-database", "none",
             "--report", "har", "--report-har-path", str(har), *headers],
            capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        entries = _entries(har)
        statuses = Counter(str(e["response"]["status"]) for e in entries)
        assert statuses, result.stdout[-2000:]
        assert not [s for s in statuses if s.startswith("5")], statuses
        if label == "with a token":
            # Real ids: the handlers themselves answered, not only the authorisation in front of them.
            assert statuses["200"], statuses
            assert statuses["400"] + statuses["422"], statuses
        else:
            # Nothing of an instance is served, or even judged, without a token: a body that cannot be parsed
            # gets the token check's answer too, not a 400 that would say something about it.
            served = [e["request"]["url"] for e in entries if e["response"]["status"] < 300
                      and "/wml_instances/" in e["request"]["url"]]
            assert served == [], served[:5]
            judged = [e["request"]["url"] for e in entries if e["response"]["status"] == 400
                      and "/wml_instances/" in e["request"]["url"]]
            assert judged == [], judged[:5]
            early = {json.loads(e["response"]["content"]["text"])["errors"][0]["code"]
                     for e in entries if e["response"]["status"] == 400}
            assert early <= {"invalid_request", "bad_request"}, early
        figures.add("fuzz", requests=label, cases=sum(statuses.values()), max_examples_per_operation=examples,
                    statuses=dict(sorted(statuses.items())), server_errors=0)
