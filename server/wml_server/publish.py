"""`wml-server publish`: publish a model file through the repository API, for people without a client library.

    wml-server publish model.skops --name "Tweets (tf-idf)" --framework scikit-learn \
        --schema '{"type": "struct", "fields": [{"name": "tweet", "type": "string"}]}' \
        --label-values NEGATIVE,POSITIVE --url http://127.0.0.1:9443 --instance-id IID --username U

The password comes from standard input (or WML_PASSWORD); the model's id is printed on standard output, so
`MODEL_ID=$(wml-server publish ...)` works. Errors are the service's, code and message.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="the model: a skops file, a pickle or joblib file (or a .tar.gz of "
                                                "one), or a .tar.gz of a saved Spark MLlib PipelineModel")
    parser.add_argument("--name", required=True, help="the model's name")
    parser.add_argument("--framework", default="scikit-learn", help="scikit-learn (default) or mllib")
    parser.add_argument("--framework-version", default=None, help="default: this service's scikit-learn")
    parser.add_argument("--description", default=None)
    parser.add_argument("--schema", default=None,
                        help="the input schema as JSON, or @FILE: {\"type\": \"struct\", \"fields\": [{\"name\", "
                             "\"type\"}]} (types: string, integer, long, double, float, boolean)")
    parser.add_argument("--label-column", default=None, help="the name of the label the model was trained on")
    parser.add_argument("--label-values", default=None, help="comma-separated values the model predicts")
    parser.add_argument("--url", default=os.environ.get("WML_URL"), help="the service's URL [env WML_URL]")
    parser.add_argument("--instance-id", default=os.environ.get("WML_INSTANCE_ID"),
                        help="[env WML_INSTANCE_ID]")
    parser.add_argument("--username", default=os.environ.get("WML_USERNAME"), help="[env WML_USERNAME]")
    parser.add_argument("--ca-file", type=Path, default=None, help="CA bundle for an HTTPS service")


def _schema(value: str | None) -> Any:
    if value is None:
        return None
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"error: --schema is not JSON ({exc})") from None


def run(args: argparse.Namespace) -> int:
    from wml_api.client import WMLClient
    from wml_api.credentials import WMLCredentials
    from wml_api.errors import WMLError
    from wml_api.repository import Framework, ModelAssetCreate

    for name in ("url", "instance_id", "username"):
        if not getattr(args, name):
            raise SystemExit(f"error: --{name.replace('_', '-')} is required (or its environment variable)")
    password = os.environ.get("WML_PASSWORD") or (
        sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("password: "))
    labels = [v.strip() for v in args.label_values.split(",")] if args.label_values else None
    meta = ModelAssetCreate(name=args.name, description=args.description,
                            framework=Framework(name=args.framework, version=args.framework_version),
                            input_data_schema=_schema(args.schema), label_column=args.label_column,
                            label_values=labels)
    client = WMLClient(args.url, WMLCredentials(args.username, password), args.instance_id,
                       ca_bundle=str(args.ca_file) if args.ca_file else None, read_timeout=300)
    try:
        with args.file.open("rb") as content:
            asset = client.publish_model(meta, content)
    except OSError as exc:
        raise SystemExit(f"error: cannot read {args.file}: {exc.strerror}") from None
    except WMLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(asset.id)
    print(f"published {asset.entity.name!r} ({asset.entity.model_type}, {asset.entity.content_format}) as "
          f"{asset.id}", file=sys.stderr)
    return 0
