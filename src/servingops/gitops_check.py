"""`servingops cluster-check --gitops argocd|flux PATH`: the engine itself syncs the generated repo into a cluster in
a box, offline, and we watch it converge.

Per environment (one cluster each, as in cluster_check.py): a box (real kube-apiserver, KServe's manager and
webhooks, kube-controller-manager, kube-scheduler, simulated nodes), the generated repo committed to a local Git
server (smart HTTP on 127.0.0.1), the engine's own controllers built from their pinned release modules (engines.py),
then the entry point applied as the generated README's "Bootstrapping" says:
  Argo CD: the environment's cluster registered under its name, `kubectl apply -k clusters/argocd` (its AppProject
           and the Applications of this environment: the other environments' clusters are other boxes);
  Flux:    what `flux bootstrap git --path=clusters/flux/<env>` leaves in the cluster: the controllers, the
           flux-system GitRepository and the flux-system Kustomization syncing that path.
Offline, the repo's URL (repo_url) is served from 127.0.0.1: the Argo CD entry point and Flux's GitRepository are
pointed there (said in the report). What the box stands in for, and says so: kubelets (simulated nodes mark bound
Pods Running/Ready) and a Gateway controller (HTTPRoutes get Accepted/ResolvedRefs from a simulated gateway).
"""

from __future__ import annotations

import base64
import calendar
import json
import secrets
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import cluster_check, engines, kserve_build, render, schemas
from .build import YAML_LOADER, kustomize_build
from .clusterbox import ClusterBox, free_port
from .command import Command
from .errors import CommandError, InputError, ServingOpsError
from .gitserver import AUTHOR, GitServer
from .kubeapi import ApiError
from .tools import tools_dir

ENGINES = {"argocd": ("argocd",), "flux": ("flux-source-controller", "flux-kustomize-controller")}
DEFAULT_TIMEOUT = 300.0
POLL = 1.0
ISVC = "serving.kserve.io/v1beta1"
SIMULATED_GATEWAY = "servingops.local/simulated-gateway"
ARGOCD_NS = "argocd"
FLUX_NS = "flux-system"
# Reasons after which waiting longer on the same commit cannot help (the engine tried and gave its verdict).
FLUX_TERMINAL = {"BuildFailed"}
ARGO_TERMINAL = ("app path does not exist", "kustomize build", "Manifest generation error")


# --- the report -----------------------------------------------------------------------------------------


@dataclass
class Unit:
    """One Application (Argo CD) or Kustomization (Flux), or one InferenceService."""

    kind: str
    name: str
    ok: bool = False
    status: str = "not seen"
    message: str = ""
    seconds: float | None = None
    terminal: bool = False  # the engine's verdict on this commit: waiting longer cannot change it
    revision: str = ""  # the commit the engine last worked on (Applications, Kustomizations)
    since: float = 0.0  # when the engine's error appeared (epoch seconds): Argo CD keeps the old revision then

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        when = f" in {self.seconds:.0f} s" if self.ok and self.seconds is not None else ""
        text = f"  {mark} {self.kind} {self.name}: {self.status}{when}"
        return text + (f": {self.message}" if self.message and not self.ok else "")


@dataclass
class Phase:
    environment: str
    title: str
    units: list[Unit] = field(default_factory=list)
    models: list[Unit] = field(default_factory=list)
    checks: list[Unit] = field(default_factory=list)  # day-2 expectations
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.units) and all(u.ok for u in self.units + self.models + self.checks)

    def lines(self) -> list[str]:
        head = f"== {self.environment}: {self.title}: {'converged' if self.ok else 'NOT converged'} ({self.seconds:.0f} s)"
        return [head] + [u.line() for u in self.units + self.models + self.checks]


# --- stand-ins: kubelets and a gateway controller -----------------------------------------------------------


class Simulators:
    """What the box lacks, done in a thread: kubelets (a bound Pod is marked Running/Ready, a deleted one goes)
    and a gateway controller (each HTTPRoute parent gets Accepted and ResolvedRefs, from SIMULATED_GATEWAY)."""

    def __init__(self, box: ClusterBox, gateway: bool):
        self.box = box
        self.gateway = gateway
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error = ""

    def __enter__(self) -> Simulators:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self._kubelets()
                if self.gateway:
                    self._gateway()
            except ServingOpsError as exc:  # the API server going away at shutdown; anything else is reported
                self.error = str(exc)
            else:
                self.error = ""  # a failed pass is repeated; only one that keeps failing is reported

    def _kubelets(self) -> None:
        client = self.box.client
        for pod in client.list("v1", "Pod"):
            meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
            if meta.get("deletionTimestamp"):
                client.delete("v1", "Pod", meta["name"], meta["namespace"])
            elif spec.get("nodeName") and status.get("phase") != "Running":
                self.box.mark_running(pod)

    def _gateway(self) -> None:
        client = self.box.client
        for route in client.list("gateway.networking.k8s.io/v1", "HTTPRoute"):
            meta = route["metadata"]
            generation = meta.get("generation", 1)
            parents = route.get("status", {}).get("parents") or []
            if parents and all(c.get("observedGeneration") == generation for p in parents for c in p["conditions"]):
                continue
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            message = "simulated by servingops cluster-check: no gateway controller in the box"
            conditions = [{"type": t, "status": "True", "reason": t, "message": message,
                           "observedGeneration": generation, "lastTransitionTime": now}
                          for t in ("Accepted", "ResolvedRefs")]
            status = {"parents": [{"parentRef": ref, "controllerName": SIMULATED_GATEWAY, "conditions": conditions}
                                  for ref in route["spec"].get("parentRefs", [])]}
            client.merge_patch("gateway.networking.k8s.io/v1", "HTTPRoute", meta["name"], {"status": status},
                               namespace=meta["namespace"], subresource="status")


# --- the engines ---------------------------------------------------------------------------------------


class Engine:
    """Start the controllers against the box, bootstrap, and read the engine's verdict."""

    title = ""

    def __init__(self, box: ClusterBox, git_url: str, repo_url: str, branch: str, env: cluster_check.Environment,
                 answers: dict, workdir: Path):
        self.box, self.git_url, self.repo_url, self.branch = box, git_url, repo_url, branch
        self.env, self.answers, self.workdir = env, answers, workdir

    def process_env(self, home: str) -> dict[str, str]:
        folder = self.workdir / home
        folder.mkdir(parents=True, exist_ok=True)
        return {"PATH": f"{tools_dir()}:/usr/local/bin:/usr/bin:/bin", "HOME": str(folder), "TMPDIR": str(folder),
                "KUBECONFIG": str(self.box.kubeconfig)}

    @staticmethod
    def crd_files() -> list[Path]:
        raise NotImplementedError


class ArgoCD(Engine):
    title = "Argo CD"
    periodic_refresh = True

    @staticmethod
    def crd_files() -> list[Path]:
        return sorted(engines.pinned_engines()["argocd"].crd_dir.glob("*.yaml"))

    def start(self) -> None:
        client = self.box.client
        client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ARGOCD_NS}})
        labels = {"app.kubernetes.io/part-of": "argocd"}
        for name in ("argocd-cm", "argocd-rbac-cm", "argocd-tls-certs-cm", "argocd-ssh-known-hosts-cm",
                     "argocd-gpg-keys-cm", "argocd-cmd-params-cm"):
            client.apply({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": name, "namespace": ARGOCD_NS, "labels": labels}})
        client.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "argocd-secret", "namespace": ARGOCD_NS,
                                                                        "labels": labels},
                      "stringData": {"server.secretkey": secrets.token_urlsafe(32)}})
        bin_dir = engines.engine_path("argocd").parent
        redis = f"127.0.0.1:{free_port()}"
        self.box._spawn("redis", [str(engines.redis_path()), "-addr", redis])
        repo_port = free_port()
        env = self.process_env("argocd-home")
        # What the Argo CD images mount under /app/config: empty GnuPG keyring sources, TLS certs, SSH known hosts.
        config = self.workdir / "argocd-home" / "config"
        for sub in ("gpg/source", "gpg/keys", "tls", "ssh"):
            (config / sub).mkdir(parents=True, mode=0o700)
        env.update({"PATH": f"{bin_dir}:{env['PATH']}", "ARGOCD_FAKE_IN_CLUSTER": "true",
                    "ARGOCD_GNUPGHOME": str(config / "gpg/keys"), "ARGOCD_GPG_DATA_PATH": str(config / "gpg/source"),
                    "ARGOCD_TLS_DATA_PATH": str(config / "tls"), "ARGOCD_SSH_DATA_PATH": str(config / "ssh"),
                    "ARGOCD_APP_CONF_PATH": str(config)})
        self.box._spawn("argocd-repo-server", [
            str(bin_dir / "argocd-repo-server"), f"--port={repo_port}", "--address=127.0.0.1", "--disable-tls",
            "--client-ca-path=", f"--redis={redis}", f"--metrics-port={free_port()}", "--loglevel=info",
        ], env)
        self.box._spawn("argocd-application-controller", [
            str(bin_dir / "argocd-application-controller"), f"--namespace={ARGOCD_NS}",
            f"--repo-server=127.0.0.1:{repo_port}", "--repo-server-plaintext", f"--redis={redis}",
            f"--metrics-port={free_port()}", "--app-resync=10", "--self-heal-timeout-seconds=2",
            "--loglevel=info",
        ], env)

    def bootstrap(self) -> list[str]:
        """README "Bootstrapping with Argo CD": 1. register the environment's cluster under its name; 2. apply
        clusters/argocd (this environment's Applications; repo_url pointed at the local Git server)."""
        notes = []
        client = self.box.client
        cluster = self.env.cluster
        if cluster != "in-cluster":
            config = {"bearerToken": self.box.client.token,
                      "tlsClientConfig": {"caData": base64.b64encode(Path(self.box.server.ca_file).read_bytes()).decode()}}
            client.apply({"apiVersion": "v1", "kind": "Secret",
                          "metadata": {"name": f"cluster-{cluster}", "namespace": ARGOCD_NS,
                                       "labels": {"argocd.argoproj.io/secret-type": "cluster"}},
                          "stringData": {"name": cluster, "server": client.server, "config": json.dumps(config)}})
            notes.append(f"cluster {cluster!r} registered with Argo CD: {client.server}")
        else:
            notes.append("cluster 'in-cluster': the box's API server (ARGOCD_FAKE_IN_CLUSTER)")
        objects = render_entry_point(self.repo_root / "clusters" / "argocd")
        applied = []
        for obj in objects:
            if obj["kind"] == "Application" and not _is_env_application(obj, self.env):
                continue
            obj = _point_repo_at(obj, self.repo_url, self.git_url)
            client.apply(obj)
            applied.append(f"{obj['kind']} {obj['metadata']['name']}")
        notes.append(f"applied clusters/argocd: {', '.join(applied)}")
        return notes

    def units(self) -> list[Unit]:
        found = []
        for app in self.box.client.list("argoproj.io/v1alpha1", "Application", ARGOCD_NS):
            status = app.get("status", {})
            sync = status.get("sync", {}).get("status", "Unknown")
            health = status.get("health", {}).get("status", "Unknown")
            unit = Unit("Application", app["metadata"]["name"], ok=sync == "Synced" and health == "Healthy",
                        status=f"{sync}/{health}", revision=status.get("sync", {}).get("revision", ""))
            messages = [c.get("message", "") for c in status.get("conditions", [])]
            operation = status.get("operationState", {})
            if operation.get("phase") in ("Failed", "Error"):
                messages.append(f"sync {operation.get('phase')}: {operation.get('message', '')}")
            out_of_sync = [f"{r['kind']} {r['name']}" for r in status.get("resources", [])
                           if r.get("status") == "OutOfSync"]
            if out_of_sync:
                messages.append(f"OutOfSync: {', '.join(out_of_sync)}")
            for resource in status.get("resources", []):
                resource_health = resource.get("health") or {}
                if resource_health.get("status") not in (None, "Healthy") and resource_health.get("message"):
                    messages.append(f"{resource['kind']} {resource['name']}: {resource_health['message']}")
            if status.get("health", {}).get("message"):
                messages.append(status["health"]["message"])
            unit.message = "; ".join(m for m in messages if m)
            errors = [c for c in status.get("conditions", [])
                      if c.get("type") == "ComparisonError" and any(t in c.get("message", "") for t in ARGO_TERMINAL)]
            unit.terminal = bool(errors)
            unit.since = max((_epoch(c.get("lastTransitionTime")) for c in errors), default=0.0)
            found.append(unit)
        return found

    def refresh(self, kind: str = "normal") -> None:
        for app in self.box.client.list("argoproj.io/v1alpha1", "Application", ARGOCD_NS):
            self.box.client.merge_patch("argoproj.io/v1alpha1", "Application", app["metadata"]["name"],
                                        {"metadata": {"annotations": {"argocd.argoproj.io/refresh": kind}}},
                                        namespace=ARGOCD_NS)

    def drift(self, revision: str, timeout: float) -> list[Unit]:
        """After a hard refresh (manifests generated again, the live state compared anew), no resource OutOfSync.
        The Applications diff on the server (compare-options ServerSideDiff=true: a server-side-apply dry run of
        each manifest); said per Application."""
        client = self.box.client
        asked = time.time()
        self.refresh("hard")
        deadline = time.monotonic() + timeout
        checks = []
        while True:
            apps = client.list("argoproj.io/v1alpha1", "Application", ARGOCD_NS)
            # the controller drops the annotation once it has refreshed, and stamps reconciledAt
            done = all("argocd.argoproj.io/refresh" not in (a["metadata"].get("annotations") or {})
                       and _epoch(a.get("status", {}).get("reconciledAt")) >= int(asked) for a in apps)
            if done or time.monotonic() > deadline:
                break
            time.sleep(POLL)
        for app in apps:
            status = app.get("status", {})
            resources = status.get("resources", [])
            out = [f"{r['kind']} {r.get('namespace', '') + '/' if r.get('namespace') else ''}{r['name']}"
                   for r in resources if r.get("status") != "Synced"]
            options = (app["metadata"].get("annotations") or {}).get("argocd.argoproj.io/compare-options", "")
            how = "server-side diff" if "ServerSideDiff=true" in options else "client-side diff"
            at = status.get("sync", {}).get("revision", "")
            ok = done and not out and at.endswith(revision)
            message = (f"OutOfSync: {', '.join(out)}" if out else
                       "the hard refresh did not finish" if not done else f"compared at {at[:7] or 'no revision'}")
            checks.append(Unit("Check", f"no drift in {app['metadata']['name']}", ok=ok,
                               status=f"{len(resources) - len(out)}/{len(resources)} resources Synced ({how})",
                               message=message))
        return checks


class Flux(Engine):
    title = "Flux"

    @staticmethod
    def crd_files() -> list[Path]:
        return [f for name in ENGINES["flux"] for f in sorted(engines.pinned_engines()[name].crd_dir.glob("*.yaml"))]

    def start(self) -> None:
        self.box.client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": FLUX_NS}})
        env = self.process_env("flux-home")
        env["RUNTIME_NAMESPACE"] = FLUX_NS
        storage = free_port()
        (self.workdir / "flux-storage").mkdir()
        def common() -> list[str]:
            return ["--metrics-addr=0", f"--health-addr=127.0.0.1:{free_port()}", "--enable-leader-election=false",
                    "--watch-all-namespaces=true", "--log-level=info"]

        self.box._spawn("source-controller", [
            str(engines.engine_path("flux-source-controller")), f"--storage-path={self.workdir / 'flux-storage'}",
            f"--storage-addr=127.0.0.1:{storage}", f"--storage-adv-addr=127.0.0.1:{storage}", *common(),
        ], env)
        self.box._spawn("kustomize-controller", [str(engines.engine_path("flux-kustomize-controller")), *common()],
                        env)

    def bootstrap(self) -> list[str]:
        """What `flux bootstrap git --url=<repo_url> --branch=<branch> --path=clusters/flux/<env>` leaves in the
        cluster: the controllers (started above, with their CRDs), the Secret `flux-system` (credentials),
        the GitRepository and Kustomization `flux-system` syncing that path. repo_url is served from 127.0.0.1, so
        the repo's own GitRepository is patched to it by the flux-system Kustomization."""
        client = self.box.client
        project = self.answers["project_name"]
        # Bootstrap stores the Git credentials here; the local server is anonymous (and Flux refuses credentials
        # over plain HTTP), so the Secret the repo's GitRepository names exists but holds none.
        client.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "flux-system", "namespace": FLUX_NS}})
        client.apply({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                      "metadata": {"name": "flux-system", "namespace": FLUX_NS},
                      "spec": {"interval": "1m0s", "url": self.git_url, "ref": {"branch": self.branch},
                               "secretRef": {"name": "flux-system"}}})
        patch = [{"op": "replace", "path": "/spec/url", "value": self.git_url}]
        client.apply({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                      "metadata": {"name": "flux-system", "namespace": FLUX_NS},
                      "spec": {"interval": "10m0s", "path": f"./clusters/flux/{self.env.name}", "prune": True,
                               "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
                               "patches": [{"patch": json.dumps(patch),
                                            "target": {"kind": "GitRepository", "name": project}}]}})
        return [f"flux bootstrap (as it leaves the cluster): GitRepository flux-system -> {self.git_url} "
                f"({self.repo_url} offline), Kustomization flux-system -> ./clusters/flux/{self.env.name}"]

    def units(self) -> list[Unit]:
        found = []
        for ks in self.box.client.list("kustomize.toolkit.fluxcd.io/v1", "Kustomization"):
            conditions = {c["type"]: c for c in ks.get("status", {}).get("conditions", [])}
            ready = conditions.get("Ready", {})
            # "Reconciliation in progress" says little: the Reconciling condition says what it is doing (health checks)
            doing = conditions.get("Reconciling", {}).get("message", "") if ready.get("status") == "Unknown" else ""
            unit = Unit("Kustomization", ks["metadata"]["name"], ok=ready.get("status") == "True",
                        status=f"Ready={ready.get('status', 'Unknown')}"
                               + (f" ({ready['reason']})" if ready.get("reason") else ""),
                        message="; ".join(m for m in (ready.get("message", ""), doing) if m),
                        revision=ks.get("status", {}).get("lastAttemptedRevision", ""))
            unit.terminal = ready.get("status") == "False" and ready.get("reason") in FLUX_TERMINAL
            found.append(unit)
        return found

    periodic_refresh = False  # a new requestedAt restarts a Kustomization's health wait: once per commit only

    def drift(self, revision: str, timeout: float) -> list[Unit]:
        """Every Kustomization Ready with the new revision applied (Flux's server-side apply corrects any drift at
        each sync: what it reports is the applied revision)."""
        checks = []
        for ks in self.box.client.list("kustomize.toolkit.fluxcd.io/v1", "Kustomization"):
            status = ks.get("status", {})
            ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
            applied = status.get("lastAppliedRevision", "")
            checks.append(Unit("Check", f"{ks['metadata']['name']} at {revision[:7]}",
                               ok=ready.get("status") == "True" and applied.endswith(revision),
                               status=f"applied {applied.rsplit(':', 1)[-1][:7] or 'nothing'}",
                               message=ready.get("message", "")))
        return checks

    def refresh(self) -> None:
        """`flux reconcile source git`: fetch now; the Kustomizations follow the new artifact by themselves."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        annotation = {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}}
        client = self.box.client
        for repo in client.list("source.toolkit.fluxcd.io/v1", "GitRepository"):
            client.merge_patch("source.toolkit.fluxcd.io/v1", "GitRepository", repo["metadata"]["name"], annotation,
                               namespace=repo["metadata"]["namespace"])


ENGINE_CLASSES = {"argocd": ArgoCD, "flux": Flux}


def render_entry_point(folder: Path) -> list[dict]:
    if not folder.is_dir():
        raise InputError(f"{folder} does not exist: the repo was generated without this GitOps engine "
                         "(answer gitops_engine argocd, flux or both)")
    return [d for d in yaml.load_all(kustomize_build(folder), Loader=YAML_LOADER) if isinstance(d, dict) and d]


def _is_env_application(app: dict, env: cluster_check.Environment) -> bool:
    spec = app.get("spec", {})
    path = (spec.get("source") or {}).get("path", "")
    return (spec.get("destination") or {}).get("name") == env.cluster and path.startswith(f"environments/{env.name}/")


def _point_repo_at(obj: dict, repo_url: str, git_url: str) -> dict:
    return json.loads(json.dumps(obj).replace(json.dumps(repo_url)[1:-1], json.dumps(git_url)[1:-1]))


# --- waiting ---------------------------------------------------------------------------------------------


def wait_converged(engine: Engine, phase: Phase, namespace: str, started: float, timeout: float,
                   sims: Simulators, revision: str, expect=None) -> None:
    """Poll the engine's verdict and each InferenceService until all are healthy (and `expect()` holds), the
    engine gives a verdict waiting cannot change, or the timeout."""
    committed_at = time.time() - (time.monotonic() - started)
    first_ok: dict[tuple[str, str], float] = {}
    deadline = time.monotonic() + timeout
    refreshed = time.monotonic()
    while True:
        engine.box.check_alive()
        units = engine.units()
        for unit in units:
            if not unit.revision.endswith(revision):  # still on an earlier commit: its verdict is not this one's
                # ...unless it is an error raised since the commit (Argo CD cannot resolve a revision it fails on)
                unit.ok, unit.terminal = False, unit.terminal and unit.since >= committed_at - 1
                unit.status += f" (at {unit.revision.rsplit(':', 1)[-1][:7] or 'no revision yet'})"
        models = []
        for isvc in _list_isvcs(engine.box, namespace):
            ready = next((c for c in isvc.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {})
            unit = Unit("InferenceService", f"{namespace}/{isvc['metadata']['name']}", ok=ready.get("status") == "True",
                        status="Ready" if ready.get("status") == "True" else f"Ready={ready.get('status', 'Unknown')}",
                        message=cluster_check._isvc_condition_message(isvc) or ready.get("message", ""))
            models.append(unit)
        checks = expect() if expect else []
        now = time.monotonic()
        for unit in units + models:
            key = (unit.kind, unit.name)
            if unit.ok:
                first_ok.setdefault(key, now)
                unit.seconds = first_ok[key] - started
            else:
                first_ok.pop(key, None)
        phase.units, phase.models, phase.checks = units, models, checks
        phase.seconds = now - started
        done = units and all(u.ok for u in units + models + checks)
        if done or any(getattr(u, "terminal", False) for u in units) or now > deadline:
            if not done and now > deadline:
                for unit in units + models:
                    if not unit.ok and not unit.message:
                        unit.message = f"not healthy after {timeout:g} s"
            if sims.error:
                phase.checks.append(Unit("Simulator", "kubelets/gateway", status="failed", message=sims.error))
            return
        if engine.periodic_refresh and now - refreshed > 15:
            # Argo CD v3 ignores status-only changes (an InferenceService turning Ready) until a refresh
            engine.refresh()
            refreshed = now
        time.sleep(POLL)


def _epoch(timestamp: str | None) -> float:
    try:
        return calendar.timegm(time.strptime(timestamp or "", "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return 0.0


def _list_isvcs(box: ClusterBox, namespace: str) -> list[dict]:
    try:
        return box.client.list(ISVC, "InferenceService", namespace)
    except ApiError:
        return []


# --- day 2 -----------------------------------------------------------------------------------------------


def day2_change(worktree: Path, env: cluster_check.Environment) -> tuple[str, str, str, int]:
    """Edit a copy the way a user would: raise one model's maxReplicas in the environment's values file and add a
    new model folder (a copy of that model under a new name) to the environment. (model, new model, message,
    new maxReplicas)"""
    models = [i for i in env.inference_services]
    if not models:
        raise InputError(f"environment {env.name} has no models: nothing to change on day 2")
    model = models[0]["metadata"]["name"]
    new_max = int(models[0]["spec"]["predictor"].get("maxReplicas") or 1) + 2
    values = worktree / "environments" / env.name / "models" / "values" / f"{model}.yaml"
    patch = yaml.safe_load(values.read_text())
    patch.setdefault("spec", {}).setdefault("predictor", {})["maxReplicas"] = new_max
    values.write_text(values.read_text().split("apiVersion:")[0] + yaml.safe_dump(patch, sort_keys=False))
    new = f"{model}-day2"
    shutil.copytree(worktree / "models" / model, worktree / "models" / new)
    for file in (worktree / "models" / new).glob("*.yaml"):
        file.write_text(file.read_text().replace(f"name: {model}\n", f"name: {new}\n"))
    kustomization = worktree / "environments" / env.name / "models" / "kustomization.yaml"
    text = kustomization.read_text()
    anchor = f"  - ../../../models/{model}\n"
    if anchor not in text:
        raise ServingOpsError(f"{kustomization} does not list {anchor.strip()}: cannot add a model folder")
    kustomization.write_text(text.replace(anchor, anchor + f"  - ../../../models/{new}\n", 1))
    _add_flux_health_check(worktree, env, model, new)
    return model, new, f"day 2: {model} maxReplicas {new_max}; new model folder models/{new}", new_max


def _add_flux_health_check(worktree: Path, env: cluster_check.Environment, model: str, new: str) -> None:
    """What the Flux models Kustomization's comment asks of a model added by hand: its health-check entry (a copy
    of `model`'s, renamed), in each Flux entry point of the environment."""
    for entry in sorted((worktree / "clusters" / "flux" / env.name).glob("*/models.yaml")):
        text = entry.read_text()
        lines = text.splitlines(keepends=True)
        for number, line in enumerate(lines):
            entry_start = number >= 2 and lines[number - 2].lstrip().startswith("- apiVersion:")
            if line.strip() == f"name: {model}-predictor" and entry_start:
                block = lines[number - 2:number + 2]
                copy_ = [item.replace(f"name: {model}-predictor", f"name: {new}-predictor") for item in block]
                entry.write_text("".join(lines[:number + 2] + copy_ + lines[number + 2:]))
                break


# --- a template release: `copier update` --------------------------------------------------------------------

CONFLICT_MARKER = "\n<<<<<<< before updating"  # copier's inline conflict marker, at the start of a line


def copier_update(worktree: Path, vcs_ref: str) -> str:
    """What a user does to take a template release: `copier update --defaults --vcs-ref=<ref>` in a clone (copier
    needs a clean Git tree; here a throwaway repository holding the worktree as one commit), then the result is
    what gets committed. A refusal or a conflict is an InputError with copier's words."""
    before = render.load_answers(worktree / ".copier-answers.yml").get("_commit", "?")
    with tempfile.TemporaryDirectory(prefix="servingops-update-") as tmp:
        clone = Path(tmp) / "repo"
        shutil.copytree(worktree, clone, symlinks=True)
        git = ("git", "-C", str(clone))
        Command((*git, "init", "--quiet", "--initial-branch=main")).run()
        Command((*git, "add", "--all")).run()
        Command((*git, "commit", "--quiet", "-m", "before copier update"), env=AUTHOR).run()
        copier = Path(sys.executable).with_name("copier")
        try:
            Command((str(copier), "update", "--defaults", f"--vcs-ref={vcs_ref}"), cwd=clone, timeout=600).run()
        except CommandError as exc:
            raise InputError(f"--update-to {vcs_ref}: copier update failed: {exc}") from exc
        conflicts = sorted(str(f.relative_to(clone)) for f in clone.rglob("*")
                           if f.is_file() and ".git" not in f.relative_to(clone).parts
                           and (f.suffix == ".rej" or CONFLICT_MARKER in "\n" + f.read_text(errors="replace")))
        if conflicts:
            raise InputError(f"--update-to {vcs_ref}: copier update left conflicts in {', '.join(conflicts)}: "
                             "resolve them in the repository, then check again")
        for entry in worktree.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        shutil.copytree(clone, worktree, dirs_exist_ok=True, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    after = render.load_answers(worktree / ".copier-answers.yml").get("_commit", "?")
    return f"copier update {before} -> {after}"


def rendered_objects(worktree: Path, env: cluster_check.Environment) -> dict[tuple, dict]:
    """The environment's layers as kustomize builds them: (apiVersion, kind, namespace, name) -> object."""
    found = {}
    for layer in ("platform", "models"):
        folder = worktree / "environments" / env.name / layer
        if folder.is_dir():
            for obj in cluster_check.render_overlay(folder):
                meta = obj["metadata"]
                found[(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
    return found


def _contains(live, desired) -> bool:
    """Every field the repo sets has that value in the cluster (controllers and webhooks may add more)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and _contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(_contains, live, desired))
    return live == desired or str(live) == str(desired)


def applied_checks(box: ClusterBox, before: dict[tuple, dict], after: dict[tuple, dict]) -> list[Unit]:
    """One check per object the update changed: in the cluster as the repo now renders it."""
    checks = []
    for key in sorted(k for k in after if before.get(k) != after[k]):
        api_version, kind, namespace, name = key
        live = box.client.get(api_version, kind, name, namespace) or {}
        desired = {k: v for k, v in after[key].items() if k not in ("apiVersion", "kind")}
        ok = _contains(live, desired)
        checks.append(Unit("Check", f"updated {kind} {namespace + '/' if namespace else ''}{name}", ok=ok,
                           status="as rendered" if ok else ("differs" if live else "absent"),
                           message="not applied as rendered"))
    return checks


# --- the verb ---------------------------------------------------------------------------------------------


def gitops_check(repo: Path, engine_name: str, *, only: list[str] | None = None, day2: bool = False,
                 update_to: str | None = None, then: list | None = None, kserve_data: Path | None = None,
                 crd_dirs: list[Path] | None = None, timeout: float = DEFAULT_TIMEOUT, log=print) -> list[Phase]:
    repo = repo.resolve()
    answers, envs = _environments(repo, log)
    if only:
        unknown = sorted(set(only) - {e.name for e in envs})
        if unknown:
            raise InputError(f"--env {', '.join(unknown)}: not an environment of {repo} "
                             f"(it has {', '.join(e.name for e in envs)})")
        envs = [e for e in envs if e.name in only]
    cluster_of = {e["name"]: e.get("cluster", "in-cluster") for e in answers.get("environments") or []}
    for env in envs:
        env.cluster = cluster_of.get(env.name, "in-cluster")
    crd_dirs = crd_dirs if crd_dirs is not None else schemas.default_crd_dirs()
    tag = cluster_check.release_tag(answers)
    release = cluster_check.release_data(tag, kserve_data)
    kserve = kserve_build.ensure(tag, log=log)
    for name in ENGINES[engine_name]:
        engines.install(name, log=log)
    if engine_name == "argocd":
        engines.redis_path(log=log)
    phases: list[Phase] = []
    for env in envs:
        phases += _check_environment(repo, answers, env, engine_name, release, kserve, crd_dirs, day2, update_to,
                                     then or [], timeout, log)
        if not phases[-1].ok:
            break
    return phases


def _environments(repo: Path, log) -> tuple[dict, list[cluster_check.Environment]]:
    """cluster_check.environments, except that an overlay kustomize cannot build is left to the engine to report
    (the box is then shaped by what does build)."""
    try:
        return cluster_check.environments(repo)
    except ServingOpsError as exc:
        log(f"  local kustomize build failed; the engine will give its own verdict: {exc}")
    answers = render.load_answers(repo / ".copier-answers.yml")
    envs = []
    for env in answers.get("environments") or []:
        objects: list[dict] = []
        for layer in ("platform", "models"):
            try:
                objects += cluster_check.render_overlay(repo / "environments" / env["name"] / layer)
            except ServingOpsError:
                pass
        envs.append(cluster_check.Environment(env["name"], list(env.get("components") or []), objects))
    return answers, envs


def _check_environment(repo, answers, env, engine_name, release, kserve, crd_dirs, day2, update_to, then, timeout,
                       log) -> list[Phase]:
    """`then`: further commits after day 2, each `edit(worktree, env) -> commit message` (tests use it)."""
    cls = ENGINE_CLASSES[engine_name]
    namespace = answers["namespace"]
    phases = []
    with tempfile.TemporaryDirectory(prefix="servingops-gitops-") as tmp:
        workdir = Path(tmp)
        worktree = workdir / "repo"
        shutil.copytree(repo, worktree, ignore=shutil.ignore_patterns(".git"))
        crd_paths = (release.crd_files({o.get("kind") for o in env.objects})
                     + cluster_check.extra_crd_files(env.objects, crd_dirs) + cls.crd_files())
        pools = cluster_check.node_pools(env, answers)
        log(f"== environment {env.name}: {cls.title} syncs {repo.name} into a box (KServe {release.tag}; "
            f"{cluster_check._describe_pools(pools)})")
        with GitServer(workdir / "git") as git, \
                ClusterBox(kserve=kserve, inferenceservice_config=release.inferenceservice_config(),
                           runtimes=release.runtimes(), crd_paths=crd_paths, knative=False, workdir=workdir / "box",
                           log=log) as box:
            name = answers["project_name"]
            revision = git.commit(name, worktree, "generated repository")
            for prefix, labels, capacity, taints in pools:
                for number in range(1, cluster_check.NODES_PER_POOL + 1):
                    box.add_node(f"{prefix}-{number}", labels, capacity, taints)
            gateway = any(o.get("kind") == "HTTPRoute" for o in env.objects)
            with Simulators(box, gateway) as sims:
                if gateway:
                    log("  a simulated gateway controller sets HTTPRoute status (Accepted, ResolvedRefs): "
                        "the box has no Gateway implementation")
                log("  kubelets are simulated: a bound Pod is marked Running and Ready")
                engine = cls(box, git.url(name), answers["repo_url"], answers.get("repo_branch") or "main", env,
                             answers, workdir)
                engine.repo_root = worktree
                engine.start()
                started = time.monotonic()
                for note in engine.bootstrap():
                    log(f"  {note}")
                phase = Phase(env.name, f"bootstrap at {revision[:7]}")
                wait_converged(engine, phase, namespace, started, timeout, sims, revision)
                phases.append(phase)
                for line in phase.lines():
                    log(line)
                def converge(message: str, expect=None, drift: bool = False) -> None:
                    """Commit the worktree as `message`, let the engine apply it, wait until it converges."""
                    revision = git.commit(name, worktree, message)
                    log(f"  committed {revision[:7]}: {message}")
                    started = time.monotonic()
                    engine.refresh()
                    phase = Phase(env.name, f"{message} at {revision[:7]}")
                    wait_converged(engine, phase, namespace, started, timeout, sims, revision, expect)
                    if drift and phase.ok:  # converged: nothing may have drifted from what the repo says
                        phase.checks += engine.drift(revision, timeout)
                        phase.seconds = time.monotonic() - started
                    phases.append(phase)
                    for line in phase.lines():
                        log(line)

                if day2 and phase.ok:
                    model, new, message, new_max = day2_change(worktree, env)

                    def expect() -> list[Unit]:
                        current = box.client.get(ISVC, "InferenceService", model, namespace) or {}
                        got = current.get("spec", {}).get("predictor", {}).get("maxReplicas")
                        added = box.client.get(ISVC, "InferenceService", new, namespace)
                        return [Unit("Check", f"{model} maxReplicas", ok=got == new_max, status=f"{got}",
                                     message=f"want {new_max}"),
                                Unit("Check", f"new model {new}", ok=added is not None,
                                     status="present" if added else "absent", message="not applied")]

                    converge(message, expect)
                if update_to and phases[-1].ok:
                    before = rendered_objects(worktree, env)
                    message = copier_update(worktree, update_to)
                    after = rendered_objects(worktree, env)
                    converge(message, lambda: applied_checks(box, before, after), drift=True)
                for edit in then:
                    if not phases[-1].ok:
                        break
                    converge(edit(worktree, env))
    return phases


def cmd_gitops_check(args) -> int:
    if len(args.paths) != 1:
        raise InputError("--gitops checks one generated repository at a time: pass one PATH")
    started = time.monotonic()
    phases = gitops_check(args.paths[0], args.gitops, only=args.env, day2=args.day2, update_to=args.update_to,
                          kserve_data=args.kserve_data, crd_dirs=args.crds, timeout=args.timeout)
    ok = bool(phases) and all(p.ok for p in phases)
    units = [u for p in phases for u in p.units + p.models]
    print(f"{'converged' if ok else 'NOT converged'}: {len(phases)} syncs, "
          f"{sum(u.ok for u in units)}/{len(units)} healthy ({time.monotonic() - started:.0f} s)")
    return 0 if ok else 1
