"""The service across restarts and time: persistence, resume, token expiry and refresh, hashed passwords."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import requests

from tests.integration.test_wml_service_api import MODEL, body, spark
from wml_api import errors as E
from wml_api.auth import TokenCache
from wml_api.client import WMLClient
from wml_api.credentials import WMLCredentials
from wml_localplatform.wmlservice import WMLService


def test_deployments_survive_restart_and_kill_9(make_wml_service: Callable[..., WMLService]) -> None:
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false")
    user = service.add_user()
    api = WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id)
    running = api.create_deployment(MODEL, body("runs"), spark())
    stopped = api.create_deployment(MODEL, body("stopped"), spark())
    api.set_deployment_status(MODEL, stopped.id, "STOPPED", None)

    for restart in (service.stop, service.kill):
        restart()
        service.start()
        by_id = {d.id: d for d in api.list_instance_deployments()}
        assert set(by_id) == {running.id, stopped.id}
        assert by_id[running.id].status == "RUNNING"  # resumed by itself
        assert by_id[stopped.id].status == "STOPPED"
        assert by_id[running.id].metadata.created_at == running.metadata.created_at
    # Tokens signed before the restarts still verify: the signing key is persisted.
    assert api.get_instance().id == user.instance_id


def test_expired_tokens_are_refused_and_refreshed(make_wml_service: Callable[..., WMLService]) -> None:
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false", WML_SERVER_TOKEN_TTL="2")
    user = service.add_user()
    token = requests.get(f"{service.url}/v3/identity/token", auth=(user.username, user.password),
                         timeout=10).json()["token"]
    path = f"{service.url}/v3/wml_instances/{user.instance_id}"
    assert requests.get(path, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
    time.sleep(3)
    expired = requests.get(path, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert expired.status_code == 401
    assert expired.json()["errors"][0]["code"] == "expired_authorization_token"
    refreshed = requests.put(f"{service.url}/v3/identity/token", json={"token": token}, timeout=10)
    assert refreshed.status_code == 200
    fresh = refreshed.json()["token"]
    assert requests.get(path, headers={"Authorization": f"Bearer {fresh}"}, timeout=10).status_code == 200

    # The client notices expiry on its own and keeps working across several lifetimes.
    api = WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id,
                    token_cache=TokenCache())
    for _ in range(3):
        assert api.get_instance().id == user.instance_id
        time.sleep(1.5)


def test_deleted_users_lose_access_and_passwords_are_hashed(make_wml_service: Callable[..., WMLService]) -> None:
    service = make_wml_service(WML_SERVER_RUN_STREAMS="false")
    user = service.add_user()
    api = WMLClient(service.url, WMLCredentials(user.username, user.password), user.instance_id,
                    token_cache=TokenCache())
    assert api.get_instance().id == user.instance_id

    stored = sqlite3.connect(service.dir / "data" / "wml.sqlite3").execute(
        "SELECT password_hash FROM users WHERE username = ?", (user.username,)).fetchone()[0]
    assert user.password not in stored
    assert stored.startswith("scrypt$")

    service._cli("delete-user", user.username)
    try:
        api.get_instance()
        raise AssertionError("a deleted user's token still works")
    except E.Unauthorized:
        pass
