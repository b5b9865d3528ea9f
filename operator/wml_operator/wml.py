"""The WML instances the reconciler acts on: clients, one per endpoint and login, and the per-instance
deployment list they share (`Instances.instance(endpoint)` is the reconciler's `ports.WML`).

One list call per WML instance per interval serves every resource on that instance: each resource asks
the cache for data no older than its own poll interval, and only the first asker after that age pays
for a call (under a per-instance lock, so a burst of resources makes one request).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from wml_api import errors as wml_errors
from wml_api.auth import TokenCache
from wml_api.client import WMLClient
from wml_api.models import Deployment, DeploymentCreate, SparkServiceInstance
from wml_api.transport import OnResponse
from wml_operator.secrets import Endpoint

InstanceKey = tuple[str, str]  # (url, instance id)
HANDLER_THREADS = 32  # kopf's settings.execution.max_workers (handlers.configure)


log = logging.getLogger(__name__)


def plain_off_loopback(url: str) -> bool:
    """http:// to a host that is not loopback: logins and tokens cross a network unencrypted."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


MAX_CLIENTS = 256  # clients kept; each credentials rotation makes a new one, the least recently used goes


class ClientPool:
    def __init__(self, *, timeout: float = 30.0, on_response: OnResponse | None = None) -> None:
        # The sessions are the pool's: it closes them when it lets a client go.
        self._clients: OrderedDict[tuple[str, ...], tuple[WMLClient, requests.Session]] = OrderedDict()
        self._lock = threading.Lock()
        self._timeout = timeout
        self._on_response = on_response
        self._ca_dir: Path | None = None  # made on first need, removed by close()
        # The pool's own: tokens of logins it no longer holds a client for go with it, not with the process.
        self._tokens = TokenCache()

    def client(self, ep: Endpoint) -> WMLClient:
        ca_hash = hashlib.sha256(ep.ca_pem.encode()).hexdigest() if ep.ca_pem else ""
        key = (ep.url, ep.instance_id, *ep.credentials.cache_key(ep.url)[1:], ca_hash)
        with self._lock:
            kept = self._clients.get(key)
            if kept is not None:
                self._clients.move_to_end(key)
                return kept[0]
            if plain_off_loopback(ep.url):  # once per client: a new login or CA makes a new one
                log.warning("WML endpoint %s is plain HTTP off loopback: its login and tokens are not encrypted; "
                            "use https:// (deploy/README.md, TLS)", ep.url)
            ca_bundle = None
            if ep.ca_pem:
                # requests reads a CA bundle from a file only.
                self._ca_dir = self._ca_dir or Path(tempfile.mkdtemp(prefix="wml-operator-ca-"))
                path = self._ca_dir / f"{ca_hash}.pem"
                path.write_text(ep.ca_pem)
                ca_bundle = str(path)
            session = _session()
            client = WMLClient(ep.url, ep.credentials, ep.instance_id, ca_bundle=ca_bundle,
                               read_timeout=self._timeout, on_response=self._on_response, session=session,
                               token_cache=self._tokens)
            self._clients[key] = (client, session)
            while len(self._clients) > MAX_CLIENTS:
                _, (_, old) = self._clients.popitem(last=False)
                old.close()
            return client

    def close(self) -> None:
        with self._lock:
            for _, session in self._clients.values():
                session.close()
            self._clients.clear()
            if self._ca_dir is not None:
                shutil.rmtree(self._ca_dir, ignore_errors=True)
                self._ca_dir = None


def _session() -> requests.Session:
    """requests keeps 10 connections per host; kopf runs up to HANDLER_THREADS handlers at once, and every one
    past the 10th would open (with TLS: handshake) and drop a connection of its own, with a warning each time."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_maxsize=HANDLER_THREADS)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def marker(uid: str, spec_hash: str | None = None) -> str:
    """What a deployment's description carries to say which resource made it (idempotent creates) and from
    what (the spec hash: a pass after a crash that lost the status write knows the deployment is current).
    The hash is in a group of its own, so that operators from before it still read the UID."""
    return f"(managed by wml-stream-operator, uid {uid})" + (f" (spec {spec_hash})" if spec_hash else "")


# Deployments made before the spec hash was in the marker have none.
_MARKER = re.compile(r"\(managed by wml-stream-operator, uid (?P<uid>[^)\s]+)\)(?: \(spec (?P<spec>[^)\s]+)\))?")


def _marked(deployment: Deployment, part: str) -> str | None:
    found = _MARKER.search(deployment.entity.description or "")
    return found.group(part) if found else None


def _owner(deployment: Deployment) -> str | None:
    return _marked(deployment, "uid")


def built_from(deployment: Deployment) -> str | None:
    """The spec hash the operator made this deployment from, if its marker says."""
    return _marked(deployment, "spec")


@dataclass(frozen=True)
class Listing:
    """An instance's deployments as one list showed them (with what put() and forget() noted since), by id and
    by the resource whose marker they carry: each pass looks its own up instead of scanning all of them (at
    1,000 resources, a scan per pass was most of the operator's CPU with nothing changing). Never changed
    once made: read it freely."""

    at: float
    by_id: dict[str, Deployment]
    by_owner: dict[str, tuple[str, ...]]

    @classmethod
    def of(cls, at: float, deployments: dict[str, Deployment]) -> Listing:
        owners: dict[str, list[str]] = {}
        for deployment_id, deployment in deployments.items():
            uid = _owner(deployment)
            if uid is not None:
                owners.setdefault(uid, []).append(deployment_id)
        return cls(at, deployments, {uid: tuple(ids) for uid, ids in owners.items()})

    def owned(self, uid: str) -> list[Deployment]:
        """The deployments carrying the marker of the resource `uid`, in list order."""
        return [self.by_id[i] for i in self.by_owner.get(uid, ())]

    def with_deployment(self, deployment: Deployment) -> Listing:
        by_owner = self.by_owner
        uid = _owner(deployment)
        if uid is not None and deployment.id not in by_owner.get(uid, ()):
            by_owner = {**by_owner, uid: (*by_owner.get(uid, ()), deployment.id)}
        return Listing(self.at, {**self.by_id, deployment.id: deployment}, by_owner)

    def without(self, deployment_id: str) -> Listing:
        gone = self.by_id.get(deployment_id)
        uid = _owner(gone) if gone is not None else None
        by_owner = self.by_owner
        if uid is not None and uid in by_owner:
            rest = tuple(i for i in by_owner[uid] if i != deployment_id)
            by_owner = {k: v for k, v in by_owner.items() if k != uid} | ({uid: rest} if rest else {})
        return Listing(self.at, {k: v for k, v in self.by_id.items() if k != deployment_id}, by_owner)


EXTENSIONS_TTL = 300.0  # seconds a server's list of extensions is trusted (an upgrade adds some)


class InstanceCache:
    def __init__(self) -> None:
        self._listings: dict[InstanceKey, Listing] = {}
        self._extensions: dict[InstanceKey, tuple[float, frozenset[str]]] = {}
        self._locks: dict[InstanceKey, threading.Lock] = {}
        self._guard = threading.Lock()
        self.list_calls = 0

    def _lock(self, key: InstanceKey) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def deployments(self, client: WMLClient, max_age: float) -> Listing:
        """The instance's deployments as a list begun at most max_age seconds before this call showed them (with
        what put() and forget() noted since)."""
        key = (client.base_url, client.instance_id)
        asked = time.monotonic()
        listing = self._listings.get(key)
        if listing is not None and listing.at >= asked - max_age:
            return listing  # fresh enough: no need to queue behind a list call under way
        with self._lock(key):
            listing = self._listings.get(key)
            # A list another caller began while this one waited for the lock counts: a burst of callers wanting a
            # fresh list (max_age 0, before each create) shares one, instead of queueing one call each.
            if listing is None or listing.at < asked - max_age:
                started = time.monotonic()
                found = {d.id: d for d in client.list_instance_deployments()}
                self.list_calls += 1
                listing = Listing.of(started, found)
                self._listings[key] = listing
            return listing

    def extensions(self, client: WMLClient) -> frozenset[str]:
        """The project's extensions the instance's server lists (none on the original): one GET of the
        instance per EXTENSIONS_TTL."""
        key = (client.base_url, client.instance_id)
        kept = self._extensions.get(key)
        if kept is not None and kept[0] > time.monotonic() - EXTENSIONS_TTL:
            return kept[1]
        names = frozenset(client.get_instance().entity.extensions)
        self._extensions[key] = (time.monotonic(), names)
        return names

    def put(self, client: WMLClient, deployment: Deployment) -> None:
        """What we just created or changed, so the next look does not need a call to see it."""
        key = (client.base_url, client.instance_id)
        with self._lock(key):
            listing = self._listings.get(key)
            if listing is not None:  # a new Listing: others may be reading the old one
                self._listings[key] = listing.with_deployment(deployment)

    def forget(self, client: WMLClient, deployment_id: str) -> None:
        key = (client.base_url, client.instance_id)
        with self._lock(key):
            listing = self._listings.get(key)
            if listing is not None and deployment_id in listing.by_id:
                self._listings[key] = listing.without(deployment_id)


class Instance:
    """One WML instance as the reconciler uses it (ports.WML): its deployments through the shared list."""

    def __init__(self, client: WMLClient, cache: InstanceCache) -> None:
        self.client = client
        self.cache = cache

    def listing(self, max_age: float) -> Listing:
        return self.cache.deployments(self.client, max_age)

    def extensions(self) -> frozenset[str]:
        return self.cache.extensions(self.client)

    def check(self, model_id: str, body: DeploymentCreate, spark: SparkServiceInstance) -> None:
        """Raises what a create of `body` would (EXT_DRY_RUN servers only), creating nothing."""
        self.client.check_deployment(model_id, body, spark)

    def model(self, model_id: str) -> None:
        """Raises NotFound when the published model does not exist."""
        self.client.get_published_model(model_id)

    def get(self, deployment_id: str) -> Deployment | None:
        try:
            found = self.client.get_instance_deployment(deployment_id)
        except wml_errors.NotFound:
            self.cache.forget(self.client, deployment_id)
            return None
        self.cache.put(self.client, found)
        return found

    def create(self, model_id: str, body: DeploymentCreate, spark: SparkServiceInstance) -> Deployment:
        created = self.client.create_deployment(model_id, body, spark)
        self.cache.put(self.client, created)
        return created

    def set_state(self, model_id: str, deployment_id: str, value: str, spark: SparkServiceInstance) -> Deployment:
        self.client.set_deployment_status(model_id, deployment_id, value, spark)
        changed = self.client.get_instance_deployment(deployment_id)
        self.cache.put(self.client, changed)
        return changed

    def delete(self, deployment_id: str) -> None:
        with contextlib.suppress(wml_errors.NotFound):  # gone already: that is what we wanted
            self.client.delete_instance_deployment(deployment_id)
        self.cache.forget(self.client, deployment_id)


class Instances:
    """Every WML instance the operator's resources name (ports.Connector)."""

    def __init__(self, *, timeout: float = 30.0, on_response: OnResponse | None = None) -> None:
        self.pool = ClientPool(timeout=timeout, on_response=on_response)
        self.cache = InstanceCache()

    def instance(self, endpoint: Endpoint) -> Instance:
        return Instance(self.pool.client(endpoint), self.cache)

    def close(self) -> None:
        self.pool.close()
