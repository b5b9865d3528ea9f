"""PyPI's watson-machine-learning-client 1.0.391, the v3-era Python client, against the real service.

It is the reference for the wire format. Its dependencies are not the project's (it pins nothing, but it imports
`sklearn.externals.joblib`, pulls pandas, ibm-cos-sdk, lomond...), so it runs in a virtualenv of its own, cached
outside the repository (`client_python`), driven by tests/integration/v3client/drive.py, which prints one JSON
document per phase. What it cannot do with today's libraries is in docs/WML-API.md, "The v3 Python client".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import joblib
import pytest
import sklearn

from tests.integration.test_wml_repository_api import client_for, deployment, spark
from wml_api import errors as E
from wml_localplatform.wmlservice import WMLService, WMLUser

pytestmark = pytest.mark.integration

CLIENT = "watson-machine-learning-client==1.0.391"
DRIVER = Path(__file__).resolve().parent / "v3client" / "drive.py"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
# The client pickles the pipeline with the scikit-learn of its venv and the service's workers unpickle it with the
# project's: the same versions on both sides, or the pickle may not load.
VENV_NAME = f"wmlclient-1.0.391-py{PY}-sklearn{sklearn.__version__}-joblib{joblib.__version__}"


def venvs_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "wml-stream-operator" / "venvs"


def build_client_venv(final: Path) -> None:
    """Creates the venv in a temporary directory and renames it into place when complete, so an interrupted build
    is never taken for a finished one. Only `bin/python` is used: the venv's other scripts name the temporary path.
    A failed install fails the test with pip's output (never a skip: a check that did not run did not pass)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.building-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        steps = [[sys.executable, "-m", "venv", str(tmp)],
                 [str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  CLIENT, f"scikit-learn=={sklearn.__version__}", f"joblib=={joblib.__version__}"]]
        for cmd in steps:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, check=False)
            if done.returncode != 0:
                pytest.fail(f"building the v3 client's venv failed: {' '.join(cmd)} exited {done.returncode}\n"
                            f"{done.stdout[-8000:]}\n{done.stderr[-8000:]}", pytrace=False)
        try:
            tmp.rename(final)
        except OSError:  # another session finished the same venv first: use that one
            if not (final / "bin" / "python").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def client_python(request: pytest.FixtureRequest) -> Path:
    """The Python of the client's venv: ~/.cache/wml-stream-operator/venvs/<VENV_NAME>/bin/python, built once."""
    venv = venvs_dir() / VENV_NAME
    started = time.monotonic()
    built = not (venv / "bin" / "python").exists()
    if built:
        build_client_venv(venv)
    python = venv / "bin" / "python"
    versions = "import sklearn, joblib; print(sklearn.__version__, joblib.__version__)"
    check = subprocess.run([str(python), "-c", versions], capture_output=True, text=True, timeout=120, check=False)
    assert check.stdout.split() == [sklearn.__version__, joblib.__version__], (check.stdout, check.stderr)
    line = f"v3 client venv {venv}: {'built' if built else 'cached'}, ready in {time.monotonic() - started:.1f} s"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # shown on the terminal, not in the captured output
            reporter.write_line("\n" + line)
    return python


class Driver:
    """Runs drive.py's phases in the client's venv as one user of the service."""

    def __init__(self, python: Path, service: WMLService, user: WMLUser, logs: Path) -> None:
        self.python = python
        self.logs = logs
        # Not the project's environment: nothing of its PYTHONPATH may leak into the client's interpreter.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self.env.update(WML_URL=service.url, WML_USERNAME=user.username, WML_PASSWORD=user.password,
                        WML_INSTANCE_ID=user.instance_id)

    def __call__(self, phase: str, *args: str) -> dict[str, Any]:
        done = subprocess.run([str(self.python), str(DRIVER), phase, *args], env=self.env, capture_output=True,
                              text=True, timeout=240, check=False)
        (self.logs / f"v3client-{phase}.log").write_text(done.stderr)  # the secret scanner reads these too
        try:
            out: dict[str, Any] = json.loads(done.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"drive.py {phase} printed no JSON (exit {done.returncode}):\n{done.stdout[-4000:]}\n"
                        f"{done.stderr[-8000:]}", pytrace=False)
        failed = {name: s["error"] for name, s in out["steps"].items() if not s["ok"]}
        assert not failed, f"{phase}: {failed}\n{done.stderr[-8000:]}"
        assert done.returncode == 0, done.stderr[-8000:]
        return out


@pytest.mark.timeout(1500)  # a cold build of the client's venv downloads pandas, scipy, ibm-cos-sdk...
def test_the_v3_client_stores_lists_loads_and_deletes_a_pipeline(
        client_python: Path, wml_api_service: WMLService, wml_user: WMLUser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    drive = Driver(client_python, wml_api_service, wml_user, tmp_path_factory.mktemp("v3client"))
    ours = client_for(wml_api_service, wml_user)
    model_type = "scikit-learn-" + ".".join(sklearn.__version__.split(".")[:2])

    # store_model: the client creates the model, uploads its tar.gz of a joblib pickle, reads the published model.
    stored = drive("store")
    assert stored["client_version"] == "1.0.391"
    uid, uid2 = stored["uid"], stored["uid2"]
    assert stored["model_type"] == model_type  # the client sends the installed scikit-learn's major.minor
    assert stored["details"]["entity"]["content_format"] == "pickle-tar"
    for model_id in (uid, uid2):
        assert model_id in [m.id for m in ours.list_published_models()]
        assert model_id in [m.id for m in ours.list_model_assets()]
        assert ours.get_published_model(model_id).entity.model_type == model_type

    # With training data the client sends only training_data_schema; the service takes the input schema from its
    # features (field `tweet`), so that model deploys and the one stored without any schema does not.
    published = ours.get_published_model(uid2)
    features = (published.entity.training_data_schema or {})["features"]
    assert [f["name"] for f in features["fields"]] == ["tweet"]
    with pytest.raises(E.WMLError) as refused:
        ours.create_deployment(uid, deployment("no schema"), spark())
    assert "missing_input_schema" in str(refused.value)
    created = ours.create_deployment(uid2, deployment("tweets via v3 client"), spark())
    try:
        inspected = drive("inspect", uid, uid2)
    finally:
        ours.delete_deployment(uid2, created.id)

    assert {uid, uid2} <= {row["GUID"] for row in inspected["models_table"]}
    assert {row["FRAMEWORK"] for row in inspected["models_table"] if row["GUID"] in (uid, uid2)} == {model_type}
    assert {uid, uid2} <= set(inspected["listed_uids"])
    assert inspected["model_details"]["metadata"]["guid"] == uid
    assert inspected["details_uid"] == uid  # get_details: the 7-way type probe found a model
    # load: the client downloads the content and unpickles a Pipeline that predicts as the one it stored.
    assert inspected["loaded"]["type"] == "sklearn.pipeline.Pipeline"
    assert inspected["loaded"]["predictions"] == stored["predictions"] == ["POSITIVE", "NEGATIVE"]
    rows = [row for row in inspected["deployments_table"] if row["GUID"] == created.id]
    assert rows == [{"GUID": created.id, "NAME": "tweets via v3 client", "TYPE": "stream", "STATE": rows[0]["STATE"],
                     "CREATED": rows[0]["CREATED"], "FRAMEWORK": model_type, "ARTIFACT TYPE": "model"}]
    assert created.id in inspected["deployment_uids"]
    assert inspected["deployment"]["metadata"]["guid"] == created.id
    assert inspected["deployment_url"].endswith(f"/deployments/{created.id}")

    deleted = drive("delete", uid, uid2)
    assert deleted["deleted"] == {uid: "SUCCESS", uid2: "SUCCESS"}
    assert not {uid, uid2} & set(deleted["listed_uids"])
    assert not {uid, uid2} & {m.id for m in ours.list_published_models()}
    assert not {uid, uid2} & {m.id for m in ours.list_model_assets()}
    with pytest.raises(E.NotFound):
        ours.get_published_model(uid)
