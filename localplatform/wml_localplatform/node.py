"""A real node for the local control plane: kubelet, containerd and runc on this machine, pods on a bridge.

Root only (containerd, network namespaces, cgroups). Everything it makes is its own and goes with stop():
containerd's root and state, the kubelet's root, the pods' logs and the CNI state under its folder; the bridge
`wso0`; the nat chain WSO-NODE. What the machines here need (shared/notes/kubelet-node.md): cgroupfs on cgroup
v1, `restrict_oom_score_adj` (no CAP_SYS_RESOURCE), images imported (no registry is reachable).

The network, without cluster DNS:
- pods get 10.244.0.x on the bridge, whose own address 10.244.0.1 is the node's: reachable from this machine
  and its pods only, never from outside (nothing routes or masquerades the pod subnet to the outside);
- kube-proxy (iptables) sends Services' cluster IPs to their pods;
- the `kubernetes` Service (10.0.0.1:443, what KUBERNETES_SERVICE_HOST names in a pod) has no endpoints (the
  apiserver listens on 127.0.0.1 only): one DNAT rule on the bridge sends it to the apiserver, and
  route_localnet lets the pods' packets reach loopback. The in-cluster config of a pod works unchanged;
- the local broker listens on 10.244.0.1 too for the pods (kafka.py `pods_host`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml

from wml_localplatform import process
from wml_localplatform.certs import CertificateAuthority
from wml_localplatform.config import MissingPrerequisite, PlatformConfig
from wml_localplatform.kube import KUBERNETES_SERVICE_IP, KubeInfo, kubeconfig_yaml

NODE_NAME = "wso-node"
BRIDGE = "wso0"
NODE_IP = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
NAT_CHAIN = "WSO-NODE"
NAMESPACE = "k8s.io"  # containerd's namespace of the CRI


@dataclass(frozen=True)
class NodeInfo:
    name: str
    ip: str
    containerd_socket: str
    ready_seconds: float  # from starting containerd to the node's Ready condition


def _run(*argv: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=check, capture_output=True, input=input, timeout=300)


def _remove_kube_chains(tool: str, table: str) -> None:
    """The kubelet's and kube-proxy's chains (KUBE-*; kube-proxy --cleanup leaves the kubelet's), and the rules
    of the built-in chains that jump to them."""
    listed = _run(tool, "-t", table, "-S", check=False)
    if listed.returncode != 0:
        return
    lines = listed.stdout.decode().splitlines()
    for line in lines:
        parts = shlex.split(line)
        if parts[:1] == ["-A"] and not parts[1].startswith("KUBE-") and "-j" in parts \
                and parts[parts.index("-j") + 1].startswith("KUBE-"):
            _run(tool, "-t", table, "-D", *parts[1:], check=False)
    chains = [line.split()[1] for line in lines if line.startswith("-N KUBE-")]
    for chain in chains:
        _run(tool, "-t", table, "-F", chain, check=False)
    for chain in chains:
        _run(tool, "-t", table, "-X", chain, check=False)


class LocalNode:
    def __init__(self, config: PlatformConfig, directory: Path, kube: KubeInfo, pki: Path) -> None:
        self.config = config
        self.dir = directory
        self.kube = kube
        self.pki = pki
        # A unix socket path must stay under 108 bytes: a short folder of its own under /run.
        self.run_dir = Path("/run") / f"wso-node-{hashlib.sha256(str(directory).encode()).hexdigest()[:10]}"
        self.socket = self.run_dir / "containerd.sock"
        self.logs = directory / "logs"
        self._killed: set[str] = set()  # containers stop() killed itself, not through the kubelet

    def _pid(self, name: str) -> Path:
        return self.dir / f"{name}.pid"

    # Starting
    def start(self, images: tuple[str, ...] = (), timeout: float = 120.0) -> NodeInfo:
        """Starts containerd, imports `images` (and the pause image) from buildah's storage, starts the kubelet
        and kube-scheduler; returns once the node is Ready."""
        self._check_prerequisites()
        self.stop()  # whatever a previous start left
        started = time.monotonic()
        for sub in ("containerd/root", "cni/net.d", "cni/networks", "kubelet", "pod-logs", "pki"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        netns = Path("/run/netns")
        (self.dir / "netns-before").write_text(" ".join(p.name for p in netns.iterdir()) if netns.is_dir() else "")
        self._network_up()
        self._start_containerd(timeout)
        for image in (self.config.pause_image, *images):
            self.import_image(image)
        kubeconfig = self._kubelet_identity()
        self._start_kubelet(kubeconfig)
        self._start_scheduler()
        self._start_proxy()
        self._wait_ready(timeout)
        return NodeInfo(NODE_NAME, NODE_IP, str(self.socket), round(time.monotonic() - started, 2))

    def _check_prerequisites(self) -> None:
        if os.geteuid() != 0:
            raise MissingPrerequisite("the local node needs root (containerd, network namespaces, cgroups)")
        for tool in ("containerd", "runc", "iptables", "ip", "podman"):
            if shutil.which(tool) is None:
                raise MissingPrerequisite(f"{tool} is missing: run `make node` (hack/setup-node.sh)")
        if not Path("/usr/lib/cni/bridge").is_file():
            raise MissingPrerequisite("the CNI plugins are missing: run `make node` (hack/setup-node.sh)")
        for binary in ("kubelet", "kube-scheduler"):
            self.config.k8s_binary(binary)  # raises with the command that builds it

    def _network_up(self) -> None:
        api_port = urlparse(self.kube.server).port
        if _run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
            _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "replace", f"{NODE_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1\n")
        _run("iptables", "-t", "nat", "-N", NAT_CHAIN)
        _run("iptables", "-t", "nat", "-A", NAT_CHAIN, "-d", KUBERNETES_SERVICE_IP, "-p", "tcp", "--dport", "443",
             "-j", "DNAT", "--to-destination", f"127.0.0.1:{api_port}")
        _run("iptables", "-t", "nat", "-A", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN)
        (self.dir / "cni/net.d/10-wso.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "wso",
            "plugins": [{"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                         "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                                  "routes": [{"dst": "0.0.0.0/0"}],
                                  "dataDir": str(self.dir / "cni/networks")}},
                        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": False}],
        }, indent=2))

    def _start_containerd(self, timeout: float) -> None:
        config = self.dir / "containerd.toml"
        # TOML: every table after the top-level keys; [debug] last (a key after it would belong to it).
        config.write_text(f"""version = 2
root = "{self.dir / 'containerd/root'}"
state = "{self.run_dir / 'state'}"

[grpc]
  address = "{self.socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.config.pause_image}"
  # No CAP_SYS_RESOURCE here: runc cannot set a negative oom_score_adj (shared/notes/kubelet-node.md).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{self.dir / 'cni/net.d'}"

[debug]
  level = "info"
""")
        log = self.logs / "containerd.log"
        proc = process.start("containerd", ["containerd", "--config", config], log, self._pid("containerd"))
        process.wait_ready("containerd", lambda: self._ctr("version", check=False).returncode == 0, proc, log,
                           timeout)

    def _ctr(self, *args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return _run("ctr", "--address", str(self.socket), "--namespace", NAMESPACE, *args, check=check, input=input)

    def import_image(self, image: str) -> None:
        """From buildah's and podman's storage into the node's containerd, under the same name."""
        saved = _run("podman", "save", "--format", "docker-archive", image).stdout
        self._ctr("images", "import", "--no-unpack=false", "-", input=saved)

    def _kubelet_identity(self) -> Path:
        ca = CertificateAuthority.load(self.pki)
        pair = ca.issue("kubelet-client", f"system:node:{NODE_NAME}", organization="system:nodes", client=True)
        kubeconfig = self.dir / "kubelet.kubeconfig"
        kubeconfig.write_text(kubeconfig_yaml(self.kube.server, ca.cert_pem, f"system:node:{NODE_NAME}",
                                              cert_pem=pair.cert.read_bytes(), key_pem=pair.key.read_bytes()))
        kubeconfig.chmod(0o600)
        # RBAC only (no Node authorizer on this apiserver): nodes get the built-in role the Node authorizer
        # would otherwise stand for.
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "wso-system-nodes"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]}
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(binding).encode())
        return kubeconfig

    def kubectl(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return _run(str(self.config.kubectl()), f"--kubeconfig={self.kube.kubeconfig}", *args, input=input,
                    check=check)

    def _start_kubelet(self, kubeconfig: Path) -> None:
        config = self.dir / "kubelet.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": NODE_IP, "port": 10250, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": process.free_port(),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(self.pki / "ca.crt")}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podLogsDir": str(self.dir / "pod-logs"),
            "resolvConf": "/etc/resolv.conf",
            # This machine's disk and memory are the tests', not the pods': evict only when nearly out.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False, "registerNode": True,
        }))
        log = self.logs / "kubelet.log"
        process.start("kubelet", [
            self.config.k8s_binary("kubelet"), f"--config={config}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.dir / 'kubelet'}", f"--cert-dir={self.dir / 'pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
        ], log, self._pid("kubelet"))

    def _start_scheduler(self) -> None:
        process.start("kube-scheduler", [
            self.config.k8s_binary("kube-scheduler"), f"--kubeconfig={self.kube.kubeconfig}",
            f"--authentication-kubeconfig={self.kube.kubeconfig}",
            f"--authorization-kubeconfig={self.kube.kubeconfig}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={process.free_port()}",
        ], self.logs / "kube-scheduler.log", self._pid("kube-scheduler"))

    def _start_proxy(self) -> None:
        """Services' cluster IPs to their pods, in iptables. --masquerade-all: a pod calling a Service whose pod
        is on the same bridge gets the answer back through this machine's conntrack, not straight from it."""
        process.start("kube-proxy", [
            self.config.k8s_binary("kube-proxy"), f"--kubeconfig={self.kube.kubeconfig}", "--proxy-mode=iptables",
            f"--hostname-override={NODE_NAME}", f"--cluster-cidr={POD_SUBNET}", "--masquerade-all",
            f"--nodeport-addresses={NODE_IP}/32", "--conntrack-max-per-core=0",
            f"--metrics-bind-address=127.0.0.1:{process.free_port()}",
            f"--healthz-bind-address=127.0.0.1:{process.free_port()}",
        ], self.logs / "kube-proxy.log", self._pid("kube-proxy"))

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.kubectl("get", "node", NODE_NAME, "-o",
                               "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
            if got.stdout.strip() == b"True":
                return
            if not process.is_running(self._pid("kubelet")):
                break
            time.sleep(1)
        raise RuntimeError(f"node {NODE_NAME} not Ready within {timeout:g} s:\n"
                           f"{process.log_tail(self.logs / 'kubelet.log', 40)}")

    # Stopping
    def stop(self) -> None:
        """Pods' containers, kubelet, containerd and every shim, mounts, network: nothing stays."""
        if process.is_running(self._pid("kubelet")) and process.is_running(self._pid("containerd")):
            self._drain()
            self._remove_pods()  # what the kubelet did not stop in time
        for name in ("kube-proxy", "kube-scheduler", "kubelet"):
            process.stop_pid_file(self._pid(name))
        if (self.config.cache / "bin" / f"kube-proxy-{self.config.k8s_version}").is_file():
            _run(str(self.config.k8s_binary("kube-proxy")), "--cleanup", check=False)  # its iptables chains
        self._kill_shims()
        process.stop_pid_file(self._pid("containerd"))
        self._unmount_below((self.dir, self.run_dir))
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._network_down()
        self._remove_host_traces()

    def _drain(self, timeout: float = 60.0) -> None:
        """The kubelet stops every pod (its network torn down by CNI): the node cordoned, its pods deleted."""
        self.kubectl("cordon", NODE_NAME, check=False)
        self.kubectl("delete", "pods", "--all-namespaces", f"--field-selector=spec.nodeName={NODE_NAME}",
                     "--grace-period=0", "--force", "--wait=false", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and b"RUNNING" in self._ctr("tasks", "list", check=False).stdout:
            time.sleep(0.5)

    def _remove_pods(self) -> None:
        """Every container left (stopped by the kubelet, or still running: killed), deleted through containerd
        (CNI's cached results of the killed ones go in _remove_host_traces)."""
        listed = self._ctr("containers", "list", "-q", check=False).stdout.decode().split()
        running = self._ctr("tasks", "list", check=False).stdout.decode().splitlines()[1:]
        self._killed.update(line.split()[0] for line in running if "RUNNING" in line)
        for container in listed:
            self._ctr("tasks", "kill", "-s", "SIGKILL", container, check=False)
        for container in listed:
            self._ctr("tasks", "delete", "-f", container, check=False)
            self._ctr("containers", "delete", container, check=False)

    def _remove_host_traces(self) -> None:
        """What containerd and the kubelet keep outside their roots: the log links of this node's containers,
        CNI's cached results of its network, and the network namespaces of sandboxes killed above (the ones
        that did not exist when this node started)."""
        logs = Path("/var/log/containers")
        if logs.is_dir():
            for link in logs.iterdir():
                if link.is_symlink() and str(link.readlink()).startswith(str(self.dir)):
                    link.unlink()
        results = Path("/var/lib/cni/results")
        if results.is_dir():
            for cached in results.iterdir():  # <network>-<container id>-<interface>
                if cached.name.startswith("wso-") or any(f"-{c}-" in cached.name for c in self._killed):
                    cached.unlink()
        before = set((self.dir / "netns-before").read_text().split()) if (self.dir / "netns-before").is_file() \
            else None
        netns = Path("/run/netns")
        if before is not None and netns.is_dir():
            for ns in netns.glob("cni-*"):
                if ns.name not in before:
                    _run("umount", "-l", str(ns), check=False)
                    ns.unlink(missing_ok=True)

    def _kill_shims(self) -> None:
        """containerd's shims outlive containerd: those of this node's socket are stopped by PID."""
        mark = str(self.socket).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and mark in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)

    @staticmethod
    def _unmount_below(roots: tuple[Path, ...]) -> None:
        prefixes = tuple(str(r) + "/" for r in roots)
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefixes) or point in {str(r) for r in roots}:
                points.append(point)
        for point in sorted(points, key=len, reverse=True):
            _run("umount", "-l", point, check=False)

    def _network_down(self) -> None:
        while _run("iptables", "-t", "nat", "-D", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN,
                   check=False).returncode == 0:
            pass
        _run("iptables", "-t", "nat", "-F", NAT_CHAIN, check=False)
        _run("iptables", "-t", "nat", "-X", NAT_CHAIN, check=False)
        _run("ip", "link", "delete", BRIDGE, check=False)
        for tool in ("iptables", "ip6tables"):
            for table in ("nat", "filter", "mangle"):
                _remove_kube_chains(tool, table)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
