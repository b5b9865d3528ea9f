"""The service's API fuzzed from its own OpenAPI document with schemathesis: no request gets a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from localplatform.wmlservice import WMLService, WMLUser

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def test_no_server_errors_with_and_without_a_token(wml_api_service: WMLService, wml_user: WMLUser) -> None:
    openapi = requests.get(f"{wml_api_service.url}/openapi.json", timeout=10).json()
    assert "/v3/wml_instances/{instance_id}/published_models/{model_id}/deployments" in openapi["paths"]
    token = requests.get(f"{wml_api_service.url}/v3/identity/token", auth=(wml_user.username, wml_user.password),
                         timeout=10).json()["token"]
    for headers in (["-H", f"Authorization: Bearer {token}"], []):
        result = subprocess.run(
            [str(SCHEMATHESIS), "run", f"{wml_api_service.url}/openapi.json", "--checks", "not_a_server_error",
             "--max-examples", "30", "--seed", "20261127", "--no-color", *headers],
            capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        # It really sent requests: the summary counts test cases per operation.
        assert " generated, " in result.stdout, result.stdout[-2000:]
