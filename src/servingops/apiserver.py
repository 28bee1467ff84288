"""A real kube-apiserver on 127.0.0.1, offline, for checks that need one (the envtest pattern: real binaries, no nodes).

    with apiserver.start(crd_files) as server:
        server.url, server.token, server.ca_file, server.kubeconfig    # for any client (kubectl, controllers)
        server.dry_run(obj)                 # create and server-side apply, dry-run, strict field validation
        server.apply(obj, dry_run=False)    # server-side apply for real

`start` installs the given CRDs and waits until discovery serves them. The etcd data after that install is kept
as a snapshot keyed by the binaries' and the CRDs' digests, so a later start with the same inputs skips the
install (about a minute of server CPU for ~10 MB of CRDs). The server always stops when the `with` block ends,
whatever ends it (an exception, Ctrl-C, SIGTERM); if this Python process dies without cleaning up, the kernel
kills the server too (Linux: PR_SET_PDEATHSIG, so start it from a thread that lives as long as the server).
"""

from __future__ import annotations

import base64
import ctypes
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import controlplane
from .errors import ServingOpsError
from .schemas import crd_files, load_crds
from .tools import PROJECT_ROOT

SNAPSHOT_ROOT = PROJECT_ROOT / ".cache" / "apiserver-snapshots"
READY_TIMEOUT = 300.0  # 4-10 s on an idle machine; minutes on 2 cores shared with a parallel test run
STOP_TIMEOUT = 30.0
FIELD_MANAGER = "servingops"
AGGREGATED_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
# P-256 group order: a service-account signing key is any integer in [1, n-1].
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class ApiServerError(ServingOpsError):
    """The API server could not be started, reached or stopped."""


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str = "", name: str = "") -> str:
        group_version = self.api_version
        base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
        if self.namespaced:
            base += f"/namespaces/{urllib.parse.quote(namespace or 'default', safe='')}"
        base += f"/{self.plural}"
        return base + (f"/{urllib.parse.quote(name, safe='')}" if name else "")


@dataclass(frozen=True)
class Outcome:
    """What the server said about one object: accepted, or its refusal in its own words."""

    accepted: bool
    message: str = ""
    code: int = 0


@dataclass
class Server:
    """A running kube-apiserver. The token belongs to system:masters."""

    url: str
    token: str
    ca_file: Path
    kubeconfig: Path
    run_dir: Path
    _opener: urllib.request.OpenerDirector = field(repr=False, default=None)
    _resources: dict[tuple[str, str], Resource] | None = field(repr=False, default=None)

    def request(
        self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None,
        content_type: str = "application/json", accept: str = "application/json", timeout: float = 120,
    ) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body) for one API call; HTTP errors are returned, not raised."""
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": accept, "Content-Type": content_type,
        })
        try:
            with self._opener.open(req, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ApiServerError(f"{method} {url} failed: {getattr(exc, 'reason', exc)}") from exc
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    # --- discovery ---------------------------------------------------------------------------------------

    def resources(self, *, refresh: bool = False) -> dict[tuple[str, str], Resource]:
        """(apiVersion, kind) -> resource, for everything the server serves (aggregated discovery, 2 requests)."""
        if self._resources is None or refresh:
            found: dict[tuple[str, str], Resource] = {}
            for root in ("/api", "/apis"):
                status, doc = self.request("GET", root, accept=AGGREGATED_DISCOVERY)
                if status != 200 or not isinstance(doc, dict):
                    raise ApiServerError(f"discovery GET {root} answered {status}: {_status_message(doc)}")
                for group in doc.get("items") or []:
                    group_name = (group.get("metadata") or {}).get("name", "")
                    for version in group.get("versions") or []:
                        api_version = f"{group_name}/{version['version']}" if group_name else version["version"]
                        for res in version.get("resources") or []:
                            kind = (res.get("responseKind") or {}).get("kind")
                            if kind and "/" not in res["resource"]:
                                found[(api_version, kind)] = Resource(
                                    api_version, kind, res["resource"], res.get("scope") == "Namespaced"
                                )
            self._resources = found
        return self._resources

    def resource_for(self, obj: dict) -> Resource | None:
        return self.resources().get((str(obj.get("apiVersion", "")), str(obj.get("kind", ""))))

    # --- writing -----------------------------------------------------------------------------------------

    def apply(self, obj: dict, *, dry_run: bool, field_manager: str = FIELD_MANAGER) -> Outcome:
        """Server-side apply one object (as Flux and Argo CD's ServerSideApply do), strict field validation."""
        resource = self.resource_for(obj)
        if resource is None:
            return _no_api(obj)
        meta = obj.get("metadata") or {}
        if not meta.get("name"):
            return Outcome(False, "metadata.name is missing (server-side apply needs a name)")
        query = {"fieldManager": field_manager, "fieldValidation": "Strict", "force": "true"}
        if dry_run:
            query["dryRun"] = "All"
        status, doc = self.request(
            "PATCH", resource.path(str(meta.get("namespace") or ""), str(meta["name"])), obj,
            query=query, content_type="application/apply-patch+yaml",
        )
        if status in (200, 201):
            return Outcome(True, code=status)
        return Outcome(False, _status_message(doc), status)

    def create(self, obj: dict, *, dry_run: bool) -> Outcome:
        """Create one object (as `kubectl apply` does for a new object: Argo CD's default), strict field validation."""
        resource = self.resource_for(obj)
        if resource is None:
            return _no_api(obj)
        query = {"fieldManager": FIELD_MANAGER, "fieldValidation": "Strict"} | ({"dryRun": "All"} if dry_run else {})
        status, doc = self.request("POST", resource.path(str((obj.get("metadata") or {}).get("namespace") or "")),
                                   obj, query=query)
        return Outcome(True, code=status) if status in (200, 201) else Outcome(False, _status_message(doc), status)

    def dry_run(self, obj: dict) -> Outcome:
        """Both ways GitOps tools write, without persisting anything: create (kubectl apply; its strict decoding
        refuses unknown fields that server-side apply silently prunes, e.g. under an object the CRD leaves
        without properties) and server-side apply (Flux, Argo CD's ServerSideApply). The first refusal."""
        created = self.create(obj, dry_run=True)
        if not created.accepted and created.code != 409:  # 409: exists (a namespace made for the check)
            return created
        return self.apply(obj, dry_run=True)

    def ensure_namespace(self, name: str) -> Outcome:
        """Create a namespace for real: NamespaceLifecycle refuses objects in a namespace that only a dry run made."""
        status, doc = self.request("POST", "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
        })
        return Outcome(status in (201, 409), "" if status in (201, 409) else _status_message(doc), status)

    def install_crds(self, crds: Sequence[dict], timeout: float = READY_TIMEOUT) -> None:
        """Create the CRDs, then wait until discovery serves every version of each (not `kubectl wait`: slow on
        multi-MB CRDs)."""
        for crd in crds:
            status, doc = self.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
            if status not in (201, 409):
                raise ApiServerError(f"CRD {crd['metadata']['name']} was refused: {_status_message(doc)}")
        self.wait_for_crds(crds, timeout)

    def wait_for_crds(self, crds: Sequence[dict], timeout: float = READY_TIMEOUT) -> None:
        wanted = {
            (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            for crd in crds for version in crd["spec"]["versions"] if version.get("served", True)
        }
        deadline = time.monotonic() + timeout
        while missing := wanted - set(self.resources(refresh=True)):
            if time.monotonic() > deadline:
                raise ApiServerError(f"the server does not serve {len(missing)} CRD versions after {timeout:g}s, "
                                     f"e.g. {' '.join(sorted(missing)[0])}")
            time.sleep(0.5)


def _no_api(obj: dict) -> Outcome:
    return Outcome(False, f"the server has no API for {obj.get('apiVersion')} {obj.get('kind')}: "
                          "is its CRD among the installed ones (--crds DIR)?")


def _status_message(doc: Any) -> str:
    """The server's own words from a metav1.Status (or whatever came back)."""
    if isinstance(doc, dict):
        return str(doc.get("message") or doc.get("reason") or doc)
    return str(doc)[:500]


# --- CRD inputs and snapshots ----------------------------------------------------------------------------


def load_crd_objects(paths: Iterable[Path]) -> list[dict]:
    """Every CRD in the files or folders, one per name (later ones win, as in the schema store), sorted by name."""
    by_name: dict[str, dict] = {}
    for _, path in crd_files(paths):
        for crd in load_crds(path):
            by_name[crd["metadata"]["name"]] = crd
    return [by_name[name] for name in sorted(by_name)]


def snapshot_key(plane: controlplane.ControlPlane, crds: Sequence[dict]) -> str:
    digest = hashlib.sha256(plane.identity().encode())
    digest.update(json.dumps(crds, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()[:24]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# --- processes -------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies, whatever kills it (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _write_signing_key(path: Path) -> None:
    """An EC P-256 private key (SEC 1 DER in PEM) for service-account tokens; Go derives the public half."""
    scalar = (secrets.randbelow(P256_ORDER - 1) + 1).to_bytes(32, "big")
    prime256v1 = bytes.fromhex("06082a8648ce3d030107")  # OID 1.2.840.10045.3.1.7
    body = bytes.fromhex("020101") + b"\x04\x20" + scalar + b"\xa0" + bytes([len(prime256v1)]) + prime256v1
    der = b"\x30" + bytes([len(body)]) + body
    lines = [base64.b64encode(der)[i:i + 64].decode() for i in range(0, len(base64.b64encode(der)), 64)]
    path.write_text("-----BEGIN EC PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END EC PRIVATE KEY-----\n")
    path.chmod(0o600)


class _Processes:
    """The child processes of one server, stopped in reverse start order, each in its own session."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = self.run_dir / f"{name}.log"
        with open(log, "ab") as handle:
            proc = subprocess.Popen(
                argv, env=_without_proxies(os.environ), stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
                preexec_fn=_die_with_parent,
            )
        self.procs.append((name, proc, log))
        return proc

    def check_alive(self) -> None:
        for name, proc, log in self.procs:
            if proc.poll() is not None:
                raise ApiServerError(f"{name} exited with {proc.returncode}: {_tail(log)}")

    def stop(self) -> None:
        """SIGTERM (graceful: etcd's data is complete for a snapshot), SIGKILL after STOP_TIMEOUT."""
        while self.procs:
            name, proc, _ = self.procs.pop()
            try:
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
            except KeyboardInterrupt:  # a second Ctrl-C: no more waiting, but nothing left behind either
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
                self.stop()
                raise


def _without_proxies(env) -> dict[str, str]:
    """Everything these processes talk to is on 127.0.0.1."""
    return {k: v for k, v in env.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:]) or "(empty log)"


def _launch(plane: controlplane.ControlPlane, run_dir: Path, procs: _Processes, token: str) -> Server:
    """Start etcd (in-process or beside) and kube-apiserver on free ports; return once /readyz says ok."""
    certs, etcd_dir = run_dir / "certs", run_dir / "etcd"
    certs.mkdir(exist_ok=True)
    key = run_dir / "service-account.key"
    if not key.exists():
        _write_signing_key(key)
    tokens = run_dir / "tokens.csv"
    tokens.write_text(f'{token},servingops,servingops,"system:masters"\n')
    tokens.chmod(0o600)
    client, peer, port = (f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}", _free_port())
    if plane.embedded_etcd:
        etcd_args = [f"--embedded-etcd-dir={etcd_dir}", f"--embedded-etcd-client-url={client}",
                     f"--embedded-etcd-peer-url={peer}"]
    else:
        procs.spawn("etcd", [
            str(plane.etcd), "--name=default", f"--data-dir={etcd_dir}", f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}", f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync=true", "--log-level=error",
        ])
        etcd_args = [f"--etcd-servers={client}"]
    procs.spawn("kube-apiserver", [
        str(plane.kube_apiserver), *etcd_args,
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
        f"--cert-dir={certs}", f"--token-auth-file={tokens}", "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={key}", f"--service-account-signing-key-file={key}",
        "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
        # no nodes, no load: skip the endpoint reconciler and priority-and-fairness bookkeeping
        "--endpoint-reconciler-type=none", "--enable-priority-and-fairness=false",
    ])
    server = Server(
        url=f"https://127.0.0.1:{port}", token=token, ca_file=certs / "apiserver.crt",
        kubeconfig=run_dir / "kubeconfig", run_dir=run_dir,
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        procs.check_alive()
        if server.ca_file.exists():
            try:
                server._opener = urllib.request.build_opener(
                    urllib.request.ProxyHandler({}),  # 127.0.0.1 never goes through a proxy
                    urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(server.ca_file))),
                )
                if server.request("GET", "/readyz", accept="text/plain", timeout=10)[0] == 200:
                    break
            except (ApiServerError, ssl.SSLError):
                pass
        if time.monotonic() > deadline:
            raise ApiServerError(f"kube-apiserver not ready after {READY_TIMEOUT:g}s: {_tail(run_dir / 'kube-apiserver.log')}")
        time.sleep(0.3)
    _write_kubeconfig(server)
    return server


def _write_kubeconfig(server: Server) -> None:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "servingops",
        "clusters": [{"name": "servingops", "cluster": {"server": server.url, "certificate-authority": str(server.ca_file)}}],
        "users": [{"name": "servingops", "user": {"token": server.token}}],
        "contexts": [{"name": "servingops", "context": {"cluster": "servingops", "user": "servingops"}}],
    }
    server.kubeconfig.write_text(json.dumps(config, indent=1) + "\n")  # JSON is YAML
    server.kubeconfig.chmod(0o600)


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM becomes an exception (like Ctrl-C), so `finally` blocks stop the server. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def start(
    crd_paths: Iterable[Path] = (), *, snapshot: bool = True, plane: controlplane.ControlPlane | None = None,
    log=None,
) -> Iterator[Server]:
    """A kube-apiserver serving the CRDs found in crd_paths (files or folders), stopped when the block ends."""
    say = log or (lambda message: None)
    plane = plane or controlplane.control_plane()
    crds = load_crd_objects(crd_paths)
    key = snapshot_key(plane, crds)
    saved = SNAPSHOT_ROOT / key / "etcd"
    run_dir = Path(tempfile.mkdtemp(prefix="servingops-apiserver-"))
    procs = _Processes(run_dir)
    token = secrets.token_urlsafe(32)
    try:
        with _stop_on_sigterm():
            if not crds or not snapshot:
                server = _launch(plane, run_dir, procs, token)
                server.install_crds(crds)
                yield server
                return
            with _locked(SNAPSHOT_ROOT / f"{key}.lock"):  # one install per key, even with parallel callers
                if not saved.is_dir():
                    started = time.monotonic()
                    server = _launch(plane, run_dir, procs, token)
                    server.install_crds(crds)
                    procs.stop()  # a clean stop: etcd's files are complete
                    partial = saved.with_name(f"etcd.partial-{os.getpid()}")
                    try:
                        shutil.copytree(run_dir / "etcd", partial)
                        partial.rename(saved)
                    finally:
                        shutil.rmtree(partial, ignore_errors=True)
                    say(f"apiserver: {len(crds)} CRDs installed in {time.monotonic() - started:.1f} s; "
                        f"snapshot kept in {saved.parent}")
                shutil.rmtree(run_dir / "etcd", ignore_errors=True)
                shutil.copytree(saved, run_dir / "etcd")
            server = _launch(plane, run_dir, procs, token)
            server.wait_for_crds(crds)
            yield server
    finally:
        procs.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
