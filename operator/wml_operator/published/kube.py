"""What a PublishedModel reads of Kubernetes besides Secrets: its ConfigMap (get, by name: no list or watch) and
the StreamingDeployments of its namespace that may reference it (a deletion waits for them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from wml_operator.spec import GROUP, PLURAL, VERSION


class KubeReads:
    def __init__(self) -> None:
        self.core: k8s.CoreV1Api | None = None
        self.custom: k8s.CustomObjectsApi | None = None

    def set_api(self, core: k8s.CoreV1Api, custom: k8s.CustomObjectsApi) -> None:
        self.core, self.custom = core, custom

    def config_map(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        assert self.core is not None, "set_api() first"
        try:
            # The raw JSON: binaryData stays base64, as the API sends it.
            response = self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], json.loads(cast(Any, response).data))

    def streaming_deployments(self, namespace: str) -> list[Mapping[str, Any]]:
        assert self.custom is not None, "set_api() first"
        items: list[Mapping[str, Any]] = []
        cont: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500, "_continue": cont} if cont else {"limit": 500}
            page = cast(dict[str, Any], self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                                   **kwargs))
            items.extend(page.get("items") or ())
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return items
