"""Drives PyPI's watson-machine-learning-client 1.0.391 (the v3-era client) against a WML service.

Not a test module: tests/integration/test_v3_reference_client.py runs it with the Python of the client's own
virtualenv (its dependencies are not the project's), in three phases, and asserts on what it prints:

    python drive.py store              store_model of a pipeline, plain and with training data
    python drive.py inspect UID UID2   list_models, get_model_details, get_details, load + predict,
                                       deployments.list / get_details
    python drive.py delete UID...      repository.delete of each, then the listing

Credentials come from WML_URL, WML_USERNAME, WML_PASSWORD, WML_INSTANCE_ID. Stdout is one JSON document:
{"steps": {name: {"ok": bool, "error": str|null}}, ...the values of each phase...}; everything the client prints
itself (banners, tables, warnings) goes to stderr. Exit status 0 when every step succeeded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
from typing import Any

# The client imports `from sklearn.externals import joblib` (scikit_pipeline_reader.py:25, content_loaders.py:22,
# utils.py:173 and :230 ...): scikit-learn removed that alias of joblib in 0.23. Put it back before importing the
# client, so it loads with today's scikit-learn; joblib itself is the same library it meant.
import joblib
import sklearn.externals

sys.modules["sklearn.externals.joblib"] = joblib
sklearn.externals.joblib = joblib  # type: ignore[attr-defined]

import numpy as np  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from watson_machine_learning_client import WatsonMachineLearningAPIClient  # noqa: E402

SAMPLES = ["I love it, what a great day", "awful and horrible, I hate this"]


def credentials() -> dict[str, str]:
    return {"url": os.environ["WML_URL"].rstrip("/"), "username": os.environ["WML_USERNAME"],
            "password": os.environ["WML_PASSWORD"], "instance_id": os.environ["WML_INSTANCE_ID"]}


def train() -> Pipeline:
    texts = ["I love this phone", "great camera, love it", "what a wonderful day", "best purchase ever",
             "I hate this phone", "terrible battery, awful", "what a horrible day", "worst purchase ever"]
    labels = ["POSITIVE"] * 4 + ["NEGATIVE"] * 4
    return Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())]).fit(texts, labels)


def table_rows(printed: str) -> list[dict[str, str]]:
    """The rows of a table the client printed with tabulate (dashed rules, first row the header)."""
    lines = [line for line in printed.splitlines() if line.strip()]
    rules = [i for i, line in enumerate(lines) if set(line) <= {"-", " "}]
    if not rules:
        return []
    rule = lines[rules[0]]
    spans, start = [], None
    for i, ch in enumerate(rule + " "):
        if ch == "-" and start is None:
            start = i
        elif ch != "-" and start is not None:
            spans.append((start, i))
            start = None
    body = [line for i, line in enumerate(lines) if i not in rules and not line.startswith("Note:")]
    cells = [[line[a:b].strip() for a, b in spans] for line in body]
    if not cells:
        return []
    header, *rows = cells
    return [dict(zip(header, row, strict=True)) for row in rows]


class Steps:
    def __init__(self) -> None:
        self.steps: dict[str, dict[str, Any]] = {}

    def run(self, name: str, fn: Any) -> Any:
        """Runs one client call; a failure is recorded (with its traceback on stderr) and the phase goes on."""
        try:
            result = fn()
        except Exception as exc:
            traceback.print_exc()
            self.steps[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            return None
        self.steps[name] = {"ok": True, "error": None}
        return result

    def printed(self, name: str, fn: Any) -> str | None:
        """Runs a call that only prints (list_models, deployments.list) and returns what it printed."""
        out = io.StringIO()

        def call() -> str:
            with contextlib.redirect_stdout(out):
                fn()
            return out.getvalue()

        text = self.run(name, call)
        print(out.getvalue(), file=sys.stderr)
        return text


def meta_props(client: Any, name: str) -> dict[str, Any]:
    names = client.repository.ModelMetaNames
    return {names.NAME: name,
            names.DESCRIPTION: "scikit-learn Pipeline TfidfVectorizer -> LogisticRegression",
            names.AUTHOR_NAME: "Data Scientist",
            names.FRAMEWORK_NAME: "scikit-learn",
            names.FRAMEWORK_VERSION: "0.20",  # the client sends the installed scikit-learn's version instead
            names.RUNTIME_NAME: "python",
            names.RUNTIME_VERSION: "3.6"}


def store(client: Any, steps: Steps) -> dict[str, Any]:
    pipe = train()
    out: dict[str, Any] = {"predictions": [str(p) for p in pipe.predict(SAMPLES)]}
    plain = steps.run("store_model", lambda: client.repository.store_model(
        pipe, meta_props=meta_props(client, "Sentiment (tfidf + logreg)")))
    if plain is not None:
        out["uid"] = steps.run("get_model_uid", lambda: client.repository.get_model_uid(plain))
        out["model_type"] = plain["entity"].get("model_type")
        out["details"] = plain

    # With training data the client derives `training_data_schema` ({"features": {"type": "list", "fields":
    # [{"name": "tweet", "type": "str"}]}, "labels": ...}) and sends it; the service takes the input schema from
    # it. A list: a pandas DataFrame or Series breaks inside the client with today's pandas (see docs/WML-API.md).
    names = client.repository.ModelMetaNames
    props = {**meta_props(client, "Sentiment (with training data)"), names.LABEL_FIELD: "label"}
    texts = ["I love this phone", "I hate this phone"]
    schema = steps.run("store_model(training_data)", lambda: client.repository.store_model(
        pipe, meta_props=props, training_data=texts, training_target=np.array(["POSITIVE", "NEGATIVE"]),
        feature_names="tweet", label_column_names=["label"]))
    if schema is not None:
        out["uid2"] = client.repository.get_model_uid(schema)
        out["details2"] = schema
    return out


def inspect(client: Any, steps: Steps, uid: str, uid2: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    printed = steps.printed("list_models", client.repository.list_models)
    out["models_table"] = table_rows(printed) if printed is not None else None
    listed = steps.run("get_model_details()", client.repository.get_model_details)
    out["listed_uids"] = [m["metadata"]["guid"] for m in listed["resources"]] if listed else None
    one = steps.run("get_model_details(uid)", lambda: client.repository.get_model_details(uid))
    out["model_details"] = one
    details = steps.run("get_details(uid)", lambda: client.repository.get_details(uid))
    out["details_uid"] = client.repository.get_model_uid(details) if details else None
    out["details2"] = steps.run("get_details(uid2)", lambda: client.repository.get_details(uid2))

    def load() -> dict[str, Any]:
        model = client.repository.load(uid)
        return {"type": f"{type(model).__module__}.{type(model).__name__}",
                "predictions": [str(p) for p in model.predict(SAMPLES)]}

    out["loaded"] = steps.run("load(uid)", load)
    printed = steps.printed("deployments.list", client.deployments.list)
    out["deployments_table"] = table_rows(printed) if printed is not None else None
    deployments = steps.run("deployments.get_details()", client.deployments.get_details)
    out["deployment_uids"] = [d["metadata"]["guid"] for d in deployments["resources"]] if deployments else None
    if deployments and deployments["resources"]:
        did = client.deployments.get_uid(deployments["resources"][0])
        one_deployment = steps.run("deployments.get_details(did)", lambda: client.deployments.get_details(did))
        out["deployment"] = one_deployment
        out["deployment_url"] = client.deployments.get_url(one_deployment) if one_deployment else None
    return out


def delete(client: Any, steps: Steps, uids: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"deleted": {}}
    for uid in uids:
        out["deleted"][uid] = steps.run(f"delete({uid})", lambda uid=uid: client.repository.delete(uid))
    listed = steps.run("get_model_details() after delete", client.repository.get_model_details)
    out["listed_uids"] = [m["metadata"]["guid"] for m in listed["resources"]] if listed else None
    return out


def main() -> int:
    phase, args = sys.argv[1], sys.argv[2:]
    steps = Steps()
    with contextlib.redirect_stdout(sys.stderr):  # the client prints banners and tables: keep stdout JSON
        client = steps.run("client", lambda: WatsonMachineLearningAPIClient(credentials()))
        values: dict[str, Any] = {}
        if client is not None:
            values["client_version"] = client.version
            if phase == "store":
                values.update(store(client, steps))
            elif phase == "inspect":
                values.update(inspect(client, steps, *args))
            elif phase == "delete":
                values.update(delete(client, steps, args))
            else:
                raise SystemExit(f"unknown phase {phase!r}")
    print(json.dumps({"phase": phase, "steps": steps.steps, **values}, default=str))
    return 0 if all(s["ok"] for s in steps.steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
