"""A cluster in a box: the real kube-apiserver, KServe's own manager (webhooks + controller), kube-controller-manager,
kube-scheduler and simulated nodes, all on 127.0.0.1, offline.

One box is one cluster (one environment). `with ClusterBox(...) as box:` starts everything and, however the
block ends (an error, Ctrl-C, SIGTERM), removes KServe's webhooks and stops every process it started, by pid.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import ctypes
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import apiserver, controlplane, kserve, kserve_build, schemas
from .command import Command
from .errors import ServingOpsError
from .kubeapi import ApiError, Client
from .tools import PROJECT_ROOT

KSERVE_NAMESPACE = "kserve"
KNATIVE_NAMESPACE = "knative-serving"
# The controllers that turn Deployments into Pods and give each namespace its `default` ServiceAccount (without it
# Pods are refused). No node lifecycle controller: the simulated nodes have no kubelet to report on them.
CONTROLLERS = (
    "deployment-controller", "replicaset-controller", "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
)
START_TIMEOUT = 120.0
CACHE_DIR = PROJECT_ROOT / ".cache" / "cluster-check"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- certificates (openssl) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    folder: Path

    ca_crt = property(lambda self: self.folder / "ca.crt")
    ca_key = property(lambda self: self.folder / "ca.key")
    serving_crt = property(lambda self: self.folder / "tls.crt")
    serving_key = property(lambda self: self.folder / "tls.key")

    @classmethod
    def create(cls, folder: Path) -> Pki:
        """A throwaway CA and a serving certificate for 127.0.0.1: KServe's webhook server (the API server's CA
        bundle for the webhooks is this CA)."""
        folder.mkdir(parents=True, exist_ok=True)
        pki = cls(folder)
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        openssl = "openssl"
        Command((openssl, "req", "-x509", *ec, "-keyout", str(pki.ca_key), "-out", str(pki.ca_crt), "-days", "2",
                 "-subj", "/CN=servingops-cluster-check-ca")).run()
        csr = folder / "tls.csr"
        Command((openssl, "req", *ec, "-keyout", str(pki.serving_key), "-out", str(csr), "-subj", "/CN=127.0.0.1")).run()
        ext = folder / "san.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        Command((openssl, "x509", "-req", "-in", str(csr), "-CA", str(pki.ca_crt), "-CAkey", str(pki.ca_key),
                 "-CAcreateserial", "-out", str(pki.serving_crt), "-days", "2", "-extfile", str(ext))).run()
        return pki


# --- processes ------------------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 8) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when this Python process dies, however it dies (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _raise_keyboard_interrupt(signum, frame):  # SIGTERM stops the box like Ctrl-C does
    raise KeyboardInterrupt


@dataclass
class ClusterBox:
    """Start with `with ClusterBox(kserve=..., workdir=...) as box:`; `box.client` talks to the API server."""

    kserve: kserve_build.KServeBuild
    inferenceservice_config: dict
    runtimes: list[dict]
    crd_paths: list[Path] = field(default_factory=list)
    knative: bool = False
    workdir: Path | None = None
    log: object = print
    processes: list[Process] = field(default_factory=list)
    client: Client | None = None
    _tmp: tempfile.TemporaryDirectory | None = None
    _server: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _webhooks: list[tuple[str, str]] = field(default_factory=list)
    _old_sigterm: object = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> ClusterBox:
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="servingops-box-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._old_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Remove KServe's webhooks (failurePolicy Fail: they would block the API once the manager is gone), then
        stop every process this box started, the API server last."""
        for kind, name in self._webhooks:
            try:
                self.client.delete("admissionregistration.k8s.io/v1", kind, name)
            except ServingOpsError:
                pass  # the API server is gone already: nothing left to call the webhooks
        self._webhooks.clear()
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        self._server.close()  # the API server (apiserver.start) stops last
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        log = self.workdir / f"{name}.log"
        handle = open(log, "w")
        proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True,  # Ctrl-C reaches us; we stop them in order
                                preexec_fn=_die_with_parent)
        handle.close()
        process = Process(name, proc, log)
        self.processes.append(process)
        return process

    def _start(self) -> None:
        started = time.monotonic()
        steps = []
        for step in (self._make_pki, self._start_apiserver, self._install_platform, self._start_kserve,
                     self._start_kube_controllers):
            begin = time.monotonic()
            step()
            steps.append(f"{step.__name__.strip('_').replace('_', ' ')} {time.monotonic() - begin:.1f} s")
        self.log(f"  cluster up in {time.monotonic() - started:.1f} s ({', '.join(steps)})")

    def _make_pki(self) -> None:
        self.pki = Pki.create(self.workdir / "pki")

    # --- the API server, then what KServe needs before it starts ------------------------------------------

    def _start_apiserver(self) -> None:
        """apiserver.start: the pinned kube-apiserver with the CRDs installed (from its etcd snapshot when warm)."""
        crd_paths = [*self.crd_paths, *([self.kserve.knative_service_crd] if self.knative else [])]
        server = self._server.enter_context(apiserver.start(crd_paths, log=self.log))
        self.server = server
        self.kubeconfig = server.kubeconfig
        self.client = Client(server.url, server.token, str(server.ca_file))

    def _wait(self, ready, process: Process, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process.alive():
                raise ServingOpsError(f"{process.name} exited ({process.proc.returncode}): {process.tail()}")
            try:
                if ready():
                    return
            except ServingOpsError:
                pass
            time.sleep(0.2)
        raise ServingOpsError(f"{what} not ready after {timeout:g} s: {process.tail()}")

    def _install_platform(self) -> None:
        # The manager exits without its namespace and ConfigMap.
        for ns in (KSERVE_NAMESPACE, *([KNATIVE_NAMESPACE] if self.knative else [])):
            self.client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        self.client.apply(self.inferenceservice_config)
        if self.knative:
            # KServe's Knative path reads Knative's autoscaler defaults; an empty ConfigMap means Knative's defaults.
            self.client.apply({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "config-autoscaler", "namespace": KNATIVE_NAMESPACE}, "data": {}})

    # --- KServe's manager and webhooks ----------------------------------------------------------------

    def _start_kserve(self) -> None:
        # controller-runtime has no flag for the webhook certificate: it reads $TMPDIR/k8s-webhook-server/serving-certs.
        tmp = self.workdir / "kserve-tmp"
        certs = tmp / "k8s-webhook-server" / "serving-certs"
        certs.mkdir(parents=True)
        (certs / "tls.crt").write_bytes(self.pki.serving_crt.read_bytes())
        (certs / "tls.key").write_bytes(self.pki.serving_key.read_bytes())
        webhook_port, probe_port = free_port(), free_port()
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "TMPDIR": str(tmp), "KUBECONFIG": str(self.kubeconfig),
               "POD_NAMESPACE": KSERVE_NAMESPACE}
        process = self._spawn("kserve-manager", [
            str(self.kserve.manager), "--metrics-addr=0", f"--health-probe-addr=127.0.0.1:{probe_port}",
            f"--webhook-port={webhook_port}", "--leader-elect=false",
        ], env)
        self._wait(lambda: _http_ok(f"http://127.0.0.1:{probe_port}/readyz"), process, "KServe manager")
        self._wait(lambda: _tls_listening(webhook_port, self.pki.ca_crt), process, "KServe webhook server")
        self._register_webhooks(webhook_port)
        # KServe's own runtimes go in through its webhooks, as on a real install.
        for runtime in self.runtimes:
            self.client.apply(runtime)
        self._wait(self._webhook_sees_runtimes, process, "KServe's webhook cache of its own runtimes")

    def _webhook_sees_runtimes(self) -> bool:
        """True once KServe's runtime webhook judges against every runtime just installed. It lists runtimes from
        the manager's informer cache, which lags the API server: a runtime applied right after could be admitted
        beside a shipped one with its priority, as it never would be on a cluster installed minutes earlier. A
        dry-run copy of each shipped runtime that competes on priority is denied only once the cache holds it."""
        for runtime in self.runtimes:
            if not kserve.priority_collision(runtime["spec"], runtime["spec"]):
                continue  # its copy would be admitted even once the cache holds it: nothing to learn
            probe = copy.deepcopy(runtime)
            probe["metadata"] = {"name": f"servingops-probe-{runtime['metadata']['name']}"[:63]}
            try:
                self.client.apply(probe, dry_run=True)
            except ApiError as exc:
                # KServe's words: "... in the clusterservingruntimes <existing> and <new>"
                if f"clusterservingruntimes {runtime['metadata']['name']} and" in str(exc):
                    continue
            return False
        return True

    def _register_webhooks(self, port: int) -> None:
        """KServe's webhook manifests (config/webhook/manifests.yaml of the release), pointed at 127.0.0.1."""
        ca_bundle = base64.b64encode(self.pki.ca_crt.read_bytes()).decode()
        for config in load_yaml_documents(self.kserve.webhook_manifests.read_text()):
            config = copy.deepcopy(config)
            config["metadata"].pop("creationTimestamp", None)
            for hook in config["webhooks"]:
                path = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca_bundle}
            self.client.apply(config)
            self._webhooks.append((config["kind"], config["metadata"]["name"]))

    def _start_kube_controllers(self) -> None:
        self._spawn("kube-controller-manager", [
            str(controlplane.binary("kube-controller-manager")), f"--kubeconfig={self.kubeconfig}",
            f"--controllers={','.join(CONTROLLERS)}", "--leader-elect=false", "--secure-port=0",
            f"--root-ca-file={self.server.ca_file}", "--use-service-account-credentials=false",
        ])
        self._spawn("kube-scheduler", [
            str(controlplane.binary("kube-scheduler")), f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false", "--secure-port=0",
        ])

    def check_alive(self) -> None:
        for process in self.processes:
            if not process.alive():
                raise ServingOpsError(f"{process.name} exited ({process.proc.returncode}): {process.tail()}")

    # --- simulated nodes ------------------------------------------------------------------------------

    def add_node(self, name: str, labels: dict[str, str], capacity: dict[str, str], taints: Iterable[dict]) -> None:
        """A Node without a kubelet: Ready, with the given capacity. The API server's admission adds the
        not-ready taint on create (TaintNodesByCondition); the node lifecycle controller would lift it once the
        kubelet reports Ready, so this stands in for both."""
        self.client.create({"apiVersion": "v1", "kind": "Node",
                            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                                  "kubernetes.io/os": "linux",
                                                                  "kubernetes.io/arch": "amd64", **labels}}})
        self.client.merge_patch("v1", "Node", name, {"spec": {"taints": list(taints) or None}})
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.client.merge_patch("v1", "Node", name, {"status": {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated node",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "v1.34.4", "architecture": "amd64", "operatingSystem": "linux",
                         "containerRuntimeVersion": "simulated", "kernelVersion": "", "osImage": "", "kubeProxyVersion": "",
                         "machineID": "", "systemUUID": "", "bootID": ""},
        }}, subresource="status")

    def mark_running(self, pod: dict) -> None:
        """Stand in for the kubelet of a bound Pod: Running and Ready (so ReplicaSets and KServe see it serve)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        meta = pod["metadata"]
        spec = pod["spec"]
        ready = [{"type": t, "status": "True", "lastTransitionTime": now}
                 for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
        statuses = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "restartCount": 0,
                     "started": True, "state": {"running": {"startedAt": now}}} for c in spec["containers"]]
        self.client.merge_patch("v1", "Pod", meta["name"], {"status": {
            "phase": "Running", "conditions": ready, "containerStatuses": statuses, "hostIP": "10.0.0.1",
            "podIP": "10.244.0.10", "startTime": now}}, namespace=meta["namespace"], subresource="status")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _tls_listening(port: int, ca: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            with context.wrap_socket(sock, server_hostname="127.0.0.1"):
                return True
    except OSError:
        return False


def load_manifests(path: Path) -> list[dict]:
    """The objects in a YAML file, parsed once per file version: CRDs are megabytes of YAML (seconds to parse),
    their JSON a few milliseconds, so the parse is kept in .cache/cluster-check/ keyed by path, size and mtime."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    cached = CACHE_DIR / f"{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    docs = list(load_yaml_documents(path.read_text()))
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(docs))
    partial.replace(cached)
    return docs


def load_yaml_documents(text: str) -> Iterable[dict]:
    return [doc for doc in yaml.load_all(text, Loader=schemas.YAML_LOADER) if isinstance(doc, dict) and doc]
