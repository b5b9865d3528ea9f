"""What the reconciler needs of WML (`WML`, one instance; `Connector`, every instance by endpoint), and
`Elsewhere`: the instance a moved resource's previous deployment lives on, whose errors name it.

wml_operator.wml implements them over HTTP; tests.support.MemoryWML in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from wml_api import errors as wml_errors
from wml_api.models import Deployment, DeploymentCreate, SparkServiceInstance
from wml_operator.secrets import Endpoint
from wml_operator.wml import Listing


class WML(Protocol):
    """One WML instance, as a pass uses it."""

    def listing(self, max_age: float) -> Listing:
        """The instance's deployments, from a list begun at most max_age seconds ago."""

    def extensions(self) -> frozenset[str]:
        """The project's extensions of the v3 API the server lists (wml_api.models.EXT_*)."""

    def check(self, model_id: str, body: DeploymentCreate, spark: SparkServiceInstance) -> None:
        """Raises what a create would (EXT_DRY_RUN servers only); creates nothing."""

    def model(self, model_id: str) -> None:
        """Raises NotFound when the published model does not exist."""

    def get(self, deployment_id: str) -> Deployment | None: ...

    def create(self, model_id: str, body: DeploymentCreate, spark: SparkServiceInstance) -> Deployment: ...

    def set_state(self, model_id: str, deployment_id: str, value: str, spark: SparkServiceInstance) -> Deployment:
        """PATCH the stream's status, then the deployment as WML shows it after that."""

    def delete(self, deployment_id: str) -> None:
        """Deleted, or gone already."""


class Connector(Protocol):
    def instance(self, endpoint: Endpoint) -> WML: ...


class Elsewhere:
    """The endpoint a moved resource's previous deployment lives on (reconcile.WML): its errors name it, so that
    `Reconciling`/`Stalled` say which endpoint a move waits for."""

    def __init__(self, wml: WML, where: str) -> None:
        self._wml = wml
        self._where = where

    @contextmanager
    def _named(self) -> Iterator[None]:
        try:
            yield
        except wml_errors.WMLError as err:
            err.message = f"{self._where}: {err.message}"
            err.args = (err.message,)
            raise

    def listing(self, max_age: float) -> Listing:
        with self._named():
            return self._wml.listing(max_age)

    def extensions(self) -> frozenset[str]:
        with self._named():
            return self._wml.extensions()

    def check(self, model_id: str, body: DeploymentCreate, spark: SparkServiceInstance) -> None:
        with self._named():
            self._wml.check(model_id, body, spark)

    def model(self, model_id: str) -> None:
        with self._named():
            self._wml.model(model_id)

    def get(self, deployment_id: str) -> Deployment | None:
        with self._named():
            return self._wml.get(deployment_id)

    def create(self, model_id: str, body: DeploymentCreate, spark: SparkServiceInstance) -> Deployment:
        with self._named():
            return self._wml.create(model_id, body, spark)

    def set_state(self, model_id: str, deployment_id: str, value: str, spark: SparkServiceInstance) -> Deployment:
        with self._named():
            return self._wml.set_state(model_id, deployment_id, value, spark)

    def delete(self, deployment_id: str) -> None:
        with self._named():
            self._wml.delete(deployment_id)
