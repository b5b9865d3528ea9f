"""The Dockerfile's images, run with podman as deploy/ runs them in a cluster: uid 10001, a read-only root
filesystem, no capabilities, no new privileges. On the host's network (the local platform listens on 127.0.0.1),
and every server in them told to bind 127.0.0.1, not the images' 0.0.0.0.

hack/build-images.sh builds them (buildah, no Docker engine); ensure_images() runs it, cached."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from wml_localplatform import process
from wml_localplatform.config import HACK_DIR, read_versions
from wml_localplatform.wmloperator import WMLOperator
from wml_localplatform.wmlservice import KEY_FILE_ENV, WMLService, make_key_file

UID = 10001  # the images' user (the Dockerfile's), runAsUser in deploy/
MOUNTED_KUBECONFIG = "/var/run/wso-kube/config"
MOUNTED_KEY_DIR = "/var/run/wso-keys"  # the service's key file, read-only, as deploy/ mounts its Secret


def image(kind: str) -> str:
    """The tag hack/build-images.sh gives a target: "operator" or "wml-server"."""
    versions = read_versions()
    return versions["OPERATOR_IMAGE"] if kind == "operator" else versions["SERVER_IMAGE"]


def ensure_images(log: Path) -> None:
    """Builds both images (cached: seconds when nothing changed), so a test never runs an image older than the
    sources it tests."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        result = subprocess.run([str(HACK_DIR / "build-images.sh")], stdout=out, stderr=subprocess.STDOUT,
                                timeout=1800, check=False)
    if result.returncode != 0:
        raise process.StartFailed(f"hack/build-images.sh failed; last lines of {log}:\n{process.log_tail(log)}")


def hardened(name: str) -> list[str]:
    """`podman run` options of a container as the cluster runs it. The limits are explicit: podman's defaults
    exceed what a process without CAP_SYS_RESOURCE (as in this sandbox) may set, and runc then refuses."""
    return ["run", "--rm", "--name", name, "--user", f"{UID}:{UID}", "--read-only", "--cap-drop=all",
            "--security-opt", "no-new-privileges", "--network=host",
            "--ulimit", "nofile=16384:16384", "--ulimit", "nproc=4096:4096"]


def env_options(env: Mapping[str, str]) -> list[str]:
    return [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]


def owned_by_image_user(path: Path) -> Path:
    """A host folder the container's user writes (a volume): as deploy/'s fsGroup makes it in a pod."""
    path.mkdir(parents=True, exist_ok=True)
    for root, dirs, files in os.walk(path):
        for entry in (root, *(os.path.join(root, n) for n in dirs + files)):
            os.chown(entry, UID, UID)
    return path


def podman() -> str:
    found = shutil.which("podman")
    if not found:
        raise process.StartFailed("podman is not installed: run `make images` (hack/build-images.sh)")
    return found


def remove(name: str) -> None:
    """The container, whatever state it is in (a podman client killed -9 leaves it running)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run([podman(), "rm", "--force", "--time", "10", name], capture_output=True, timeout=60,
                       check=False)


def exec_in(name: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([podman(), "exec", name, *argv], capture_output=True, text=True, timeout=60,
                          check=False)


class ContainerWMLService(WMLService):
    """The service image with its data on a volume (/data), as components/wml-server runs it."""

    def __init__(self, directory: Path, *, env: dict[str, str] | None = None) -> None:
        super().__init__(directory, env={k: v for k, v in (env or {}).items() if k != KEY_FILE_ENV})
        self.image = image("wml-server")
        self.name = f"wso-wml-server-{uuid.uuid4().hex[:8]}"
        self.env[KEY_FILE_ENV] = f"{MOUNTED_KEY_DIR}/{self.key_file.name}"  # the host's file, mounted

    def _volume(self) -> list[str]:
        make_key_file(self.key_file)
        return ["--volume", f"{owned_by_image_user(self.dir / 'data')}:/data",
                "--volume", f"{owned_by_image_user(self.key_file.parent)}:{MOUNTED_KEY_DIR}:ro"]

    def _cli(self, *args: str, stdin: str | None = None) -> str:
        """The image's own CLI (`python -m wml_server ...`) on the same volume."""
        argv = [podman(), *hardened(f"{self.name}-cli-{uuid.uuid4().hex[:6]}"), "--interactive", *self._volume(),
                *env_options(self.env), "--entrypoint", "python", self.image, "-m", "wml_server", *args]
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise process.StartFailed(f"wml-server {args[0]} in {self.image} failed: {result.stderr.strip()}")
        return result.stdout

    def start(self, timeout: float = 60.0) -> float:
        self.dir.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "WML_SERVER_HOST": "127.0.0.1", "WML_SERVER_PORT": str(self.port)}
        self.proc = process.start(self.name, [podman(), *hardened(self.name), *self._volume(), *env_options(env),
                                              self.image], self.log, self.pid_file)
        return process.wait_ready("WML service container", self._healthy, self.proc, self.log, timeout)

    def stop(self, spark_drivers: bool = True) -> None:
        process.stop_pid_file(self.pid_file, timeout=30.0)  # podman passes the SIGTERM on to the service
        self.proc = None
        remove(self.name)

    def kill(self) -> None:
        subprocess.run([podman(), "kill", "--signal", "KILL", self.name], capture_output=True, timeout=60,
                       check=False)
        self.stop()


class ContainerOperator(WMLOperator):
    """The operator image, reading the kubeconfig of its ServiceAccount from a read-only mount."""

    def __init__(self, directory: Path, kubeconfig: Path, env: Mapping[str, str] | None = None) -> None:
        super().__init__(directory, kubeconfig, env)
        self.image = image("operator")
        self.name = f"wso-operator-{uuid.uuid4().hex[:8]}"

    def start(self, timeout: float = 60.0) -> float:
        self.dir.mkdir(parents=True, exist_ok=True)
        mounted = self.dir / "kube"
        mounted.mkdir(exist_ok=True)
        shutil.copyfile(self.kubeconfig, mounted / "config")
        (mounted / "config").chmod(0o600)
        owned_by_image_user(mounted)
        env = {"KUBECONFIG": MOUNTED_KUBECONFIG,
               "WML_OPERATOR_HEALTH_ADDRESS": f"127.0.0.1:{self.health_port}",
               "WML_OPERATOR_METRICS_ADDRESS": f"127.0.0.1:{self.metrics_port}",
               # Off, as for the host process (WMLOperator.start says why); tests/integration/test_operator_ha.py
               # runs the election under the ServiceAccount.
               "WML_OPERATOR_LEADER_ELECTION": "false", **self.env}
        proc = process.start(self.name, [podman(), *hardened(self.name),
                                         "--volume", f"{mounted}:{Path(MOUNTED_KUBECONFIG).parent}:ro",
                                         *env_options(env), self.image], self.log, self.pid_file)
        return process.wait_ready("operator container", lambda: process.port_open(self.health_port), proc,
                                  self.log, timeout)

    def stop(self) -> None:
        process.stop_pid_file(self.pid_file, timeout=30.0)
        remove(self.name)

    def kill(self) -> None:
        subprocess.run([podman(), "kill", "--signal", "KILL", self.name], capture_output=True, timeout=60,
                       check=False)
        self.stop()

