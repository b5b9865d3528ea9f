"""`wml-server publish`: a model file in, its id out, against the real service; errors as the service says them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import skops.io

from tests.integration.test_wml_repository_api import text_pipeline
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_localplatform.wmlservice import WMLService, WMLUser

pytestmark = pytest.mark.integration
SCHEMA = '{"type": "struct", "fields": [{"name": "tweet", "type": "string"}]}'


def publish(service: WMLService, user: WMLUser, *args: str, password: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WML_")}
    return subprocess.run([sys.executable, "-m", "wml_server", "publish", *args, "--url", service.url,
                           "--instance-id", user.instance_id, "--username", user.username],
                          input=(password or user.password) + "\n", capture_output=True, text=True, timeout=120,
                          env=env, check=False)


def test_a_model_file_is_published_and_its_id_printed(wml_api_service: WMLService, wml_user: WMLUser,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "tweets.skops"
    skops.io.dump(text_pipeline(), path)
    result = publish(wml_api_service, wml_user, str(path), "--name", "Tweets", "--schema", SCHEMA,
                     "--label-values", "NEGATIVE,POSITIVE")
    assert result.returncode == 0, result.stderr
    model_id = result.stdout.strip()
    client = WMLClient(wml_api_service.url, WMLCredentials(wml_user.username, wml_user.password),
                       wml_user.instance_id)
    published = client.get_published_model(model_id)
    assert published.entity.name == "Tweets"
    assert published.entity.input_data_schema is not None
    assert published.entity.input_data_schema["fields"][0]["name"] == "tweet"
    assert "skops" in result.stderr
    assert wml_user.password not in result.stdout + result.stderr


def test_refusals_say_the_service_s_code_and_exit_non_zero(wml_api_service: WMLService, wml_user: WMLUser,
                                                             tmp_path: Path) -> None:
    corrupt = tmp_path / "model.pkl"
    corrupt.write_bytes(b"\x80\x04not really a pickle")
    result = publish(wml_api_service, wml_user, str(corrupt), "--name", "x", "--schema", SCHEMA)
    assert result.returncode == 1
    assert "invalid_model_content" in result.stderr
    assert result.stdout == ""
    client = WMLClient(wml_api_service.url, WMLCredentials(wml_user.username, wml_user.password),
                       wml_user.instance_id)
    assert [m.entity.name for m in client.list_model_assets()] == []  # nothing left half-published

    result = publish(wml_api_service, wml_user, str(corrupt), "--name", "x", "--schema", "{not json")
    assert result.returncode != 0
    assert "--schema is not JSON" in result.stderr

    result = publish(wml_api_service, wml_user, str(tmp_path / "missing.skops"), "--name", "x")
    assert result.returncode != 0
    assert "cannot read" in result.stderr

    result = publish(wml_api_service, wml_user, str(corrupt), "--name", "x", password="wrong-password")
    assert result.returncode == 1
    assert "401" in result.stderr or "invalid_credentials" in result.stderr
