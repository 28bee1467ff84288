"""`servingops lint`: the checks schemas cannot express, on the BUILT output of every overlay.

References are resolved across everything one environment deploys (see `environment_groups`), not only inside
one kustomization: the models layer's InferenceServices find their runtimes, PriorityClasses and namespace in
the platform layer and their Secrets in the secrets layer. Each finding names the overlay, the resource and a
stable rule id, with a one-line fix.

The rules are a catalogue (`RULES`, printed by `servingops lint --list-rules`): each is a small named unit, a
function that takes one `Environment` (everything one environment deploys, with lookups: `kind()`, `pods()`,
`containers()`, `runtime()`, `secret_names()`, `settings`) and yields `Finding`s.

How to add a rule:
1. Write a function in the catalogue section below (next to the rules it resembles) and register it:

       @rule("my-rule", "one line: what must hold, and why it matters on a cluster")
       def my_rule(env: Environment) -> Iterator[Finding]:
           for res in env.kind("InferenceService"):
               if ...:
                   yield res.finding("my-rule", "what is wrong: the fix")   # one line, fix after a colon

   The id is stable (users see it in findings); keep the check to the one thing the id names.
2. Add tests/fixtures/lint/my-rule/good/kustomization.yaml (lints clean) and .../bad/kustomization.yaml (fails
   this rule only); both usually build on ../../_base. Add the bad fixture's expected findings to BAD in
   tests/test_lint.py. tests/test_lint.py refuses a rule without both fixtures.
3. The default answers, every example and the matrix must still lint clean (they run lint).

Repository settings live in `.servingops.yaml` at the generated repo's root (the nearest folder above a PATH
that holds one): `lint: {externalSecrets: [names]}` lists Secrets that are created outside Git.
"""

from __future__ import annotations

import argparse
import ipaddress
import functools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .build import (
    MANIFEST_SUFFIXES, YAML_LOADER, Target, default_jobs, display_path, find_targets, kustomization_file,
    kustomization_refs, plural, print_report, render_targets, split_documents,
)
from . import capacity, kserve
from .errors import CommandError, InputError

SETTINGS_FILE = ".servingops.yaml"
# Every key .servingops.yaml may hold; anything else is a typo and an error.
SETTINGS_KEYS = {"lint": {"externalSecrets", "gatewayNamespaces", "gatewayCidrs"}}

GPU = "nvidia.com/gpu"
KSERVE = "serving.kserve.io"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
# Cluster-scoped kinds this tool looks at: a namespace kustomize stamped on them means nothing.
CLUSTER_SCOPED = {"Namespace", "ClusterServingRuntime", "PriorityClass", "ClusterRole", "ClusterRoleBinding"}
# A value sops encrypted: ENC[AES256_GCM,data:...,type:str].
SOPS_VALUE = re.compile(r"^ENC\[[A-Z0-9_]+,data:.*\]$", re.DOTALL)
BUILTIN_PRIORITY_CLASSES = {"system-cluster-critical", "system-node-critical"}
POD_TEMPLATE_PATHS = {  # workload kind -> path to its pod spec
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


# --- the catalogue's unit -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    id: str  # stable, shown in every finding: [id]
    why: str  # one line: what must hold
    check: Callable[[Environment], Iterable[Finding]]


RULES: dict[str, Rule] = {}  # id -> rule, in catalogue order (the order findings come in)


def rule(rule_id: str, why: str) -> Callable:
    """Register the decorated `check(env) -> findings` as rule `rule_id` of the catalogue."""

    def register(check: Callable[[Environment], Iterable[Finding]]) -> Callable:
        if rule_id in RULES:
            raise ValueError(f"lint rule {rule_id} is registered twice")
        RULES[rule_id] = Rule(rule_id, why, check)
        return check

    return register


# --- report -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    overlay: str
    resource: str
    rule: str
    message: str

    @property
    def target(self) -> str:
        """The overlay, under the name validate's results use for it."""
        return self.overlay

    def line(self) -> str:
        return f"{self.overlay}: {self.resource}: [{self.rule}] {self.message}"


@dataclass
class LintReport:
    findings: list[Finding] = field(default_factory=list)
    overlays: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def failures(self) -> list[str]:
        return [f.line() for f in self.findings]

    def summary(self) -> str:
        count = len(self.overlays)
        if self.ok:
            return f"{plural(count, 'overlay')} {'lints' if count == 1 else 'lint'} clean"
        return f"{plural(len(self.findings), 'finding')} in {plural(count, 'overlay')}"

    def to_json(self) -> dict:
        return {
            "findings": [asdict(f) for f in self.findings],
            "overlays": self.overlays,
            "summary": {"findings": len(self.findings), "overlays": len(self.overlays), "ok": self.ok},
        }


# --- settings -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    external_secrets: frozenset[str] = frozenset()
    gateway_namespaces: tuple[str, ...] = ()  # where the gateway's (and Knative's) pods run
    gateway_cidrs: tuple[str, ...] = ()  # where a cloud load balancer's traffic comes from


def find_repo_root(path: Path) -> Path | None:
    """The nearest folder at or above `path` holding .servingops.yaml (a generated repo's root)."""
    path = path.resolve()
    for folder in [path if path.is_dir() else path.parent, *path.parents]:
        if (folder / SETTINGS_FILE).is_file():
            return folder
    return None


def load_settings(root: Path | None) -> Settings:
    path = root / SETTINGS_FILE if root is not None else None
    if path is None or not path.is_file():
        return Settings()
    try:
        data = yaml.load(path.read_text(), Loader=YAML_LOADER)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}): fix the syntax") from exc
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise InputError(f"{path}: must be a mapping such as `lint: {{externalSecrets: []}}`")
    for key, value in data.items():
        if key not in SETTINGS_KEYS:
            raise InputError(f"{path}: unknown key {key!r}: allowed keys are {', '.join(sorted(SETTINGS_KEYS))}")
        value = {} if value is None else value
        if not isinstance(value, dict):
            raise InputError(f"{path}: {key} must be a mapping (allowed keys: {', '.join(sorted(SETTINGS_KEYS[key]))})")
        for sub in value:
            if sub not in SETTINGS_KEYS[key]:
                raise InputError(
                    f"{path}: unknown key {key}.{sub}: allowed keys are {', '.join(sorted(SETTINGS_KEYS[key]))}"
                )
    lint_settings = data.get("lint") or {}
    names = lint_settings.get("externalSecrets") or []
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise InputError(f"{path}: lint.externalSecrets must be a list of Secret names, e.g. [hf-secret]")
    lists = {}
    for key, example in (("gatewayNamespaces", "[envoy-gateway-system]"), ("gatewayCidrs", "[35.191.0.0/16]")):
        value = lint_settings.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise InputError(f"{path}: lint.{key} must be a list, e.g. {example}")
        lists[key] = tuple(value)
    return Settings(frozenset(names), lists["gatewayNamespaces"], lists["gatewayCidrs"])


# --- what one environment deploys ---------------------------------------------------------------------


def environment_groups(root: Path) -> list[frozenset[Path]]:
    """The folders each environment deploys together, read from the repo's GitOps entry points.

    Argo CD: the Applications of one file under clusters/ with the same destination cluster (the generated
    clusters/argocd/<env>.yaml). Flux: the Kustomizations of one folder under clusters/ (clusters/flux/<env>/<project>/).
    Both engines describe the same environments, so identical groups count once. A repo without entry points
    falls back to the layout: environments/<env>/<layer>/ plus secrets/<env>/.
    """
    groups: dict[tuple, set[Path]] = {}
    for file in _yaml_files(root / "clusters"):
        for doc in _load_all(file):
            kind, group = doc.get("kind"), _api_group(doc)
            spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
            if kind == "Application" and group == "argoproj.io":
                dest = spec.get("destination") or {}
                key = ("argocd", file, dest.get("name") or dest.get("server"))
                sources = [spec.get("source")] + list(spec.get("sources") or [])
                paths = [s.get("path") for s in sources if isinstance(s, dict)]
            elif kind == "Kustomization" and group == "kustomize.toolkit.fluxcd.io":
                key, paths = ("flux", file.parent), [spec.get("path")]
            else:
                continue
            groups.setdefault(key, set()).update((root / p).resolve() for p in paths if isinstance(p, str) and p)
    if not groups:
        for env in sorted(p for p in (root / "environments").glob("*") if p.is_dir()):
            layers = {p.resolve() for p in env.iterdir() if kustomization_file(p)}
            groups[("layout", env.name)] = layers | {(root / "secrets" / env.name).resolve()}
    return list(dict.fromkeys(frozenset(g) for g in groups.values()))


def _cluster_documents(root: Path) -> list[tuple[Path, dict]]:
    """Every mapping document under the repo's clusters/ (the entry points), with its file."""
    return [(file, doc) for file in _yaml_files(root / "clusters") for doc in _load_all(file)]


def _entry_points(root: Path, layers: dict[Path, str], documents: list[tuple[Path, dict]]) -> list[tuple[Resource, str]]:
    """The Flux Kustomizations and Argo CD Applications among `documents` (the repo's clusters/) that sync one of
    `layers` (path -> label)."""
    found = []
    for file, doc in documents:
        spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
        sources = [spec] if doc.get("kind") == "Kustomization" else [spec.get("source")] + list(spec.get("sources") or [])
        for source in sources:
            path = source.get("path") if isinstance(source, dict) else None
            if isinstance(path, str) and path and (root / path).resolve() in layers:
                found.append((Resource(display_path(file), doc), layers[(root / path).resolve()]))
    return found


def _includes(folder: Path, seen: set[Path] | None = None) -> set[Path]:
    """Kustomization folders `folder` builds in as resources, transitively."""
    seen = set() if seen is None else seen
    for path in kustomization_refs(folder, ("resources", "bases")):
        if path not in seen and path.is_dir() and kustomization_file(path):
            seen.add(path)
            _includes(path, seen)
    return seen


# --- entry points -------------------------------------------------------------------------------------


def lint_paths(paths: Iterable[Path], jobs: int | None = None) -> LintReport:
    """Build every target under `paths` (as `servingops validate` finds them) and lint the output."""
    jobs = jobs or default_jobs()
    targets = find_targets([Path(p) for p in paths])
    built = render_targets(targets, jobs)
    return _lint([(t.path, display_path(t.path), output) for t, output in zip(targets, built)], jobs)


def lint_built(
    outputs: Mapping[str | Path, Sequence[dict]], repo_root: Path | None = None, *, jobs: int | None = None
) -> LintReport:
    """Lint what `servingops validate` already built: {target path: its parsed documents}.

    Keys are the targets' paths (absolute, or relative to the working directory as validate's display_path
    makes them); findings name the overlays by these keys. `repo_root` (default: the nearest folder with
    .servingops.yaml above each target) holds the settings and the entry points. Layers of a target's
    environment that `outputs` lacks are built here.
    """
    entries = [(Path(key), str(key), [d for d in docs if isinstance(d, dict)]) for key, docs in outputs.items()]
    return _lint(entries, jobs or default_jobs(), repo_root)


@dataclass
class _Unit:
    """One deployed unit: a built overlay, a plain manifest file, or a plain folder of manifests."""

    label: str
    docs: list[dict]
    error: str = ""


def _lint(entries: Sequence[tuple[Path, str, object]], jobs: int, repo_root: Path | None = None) -> LintReport:
    """entries: (target path, label for findings, build output: text, parsed docs or the build error)."""
    units = {path.resolve(): _unit(label, output) for path, label, output in entries}
    roots = {path: repo_root.resolve() if repo_root else find_repo_root(path) for path in units}
    groups = _plan(units, roots, jobs)
    report = LintReport(overlays=sorted({units[m].label for _, members in groups for m in members}))
    findings: list[Finding] = []
    seen: set[str] = set()  # plaintext Secrets already reported from a build
    cluster_documents: dict[Path, list[tuple[Path, dict]]] = {}
    for root, members in groups:
        docs = [Resource(units[m].label, d) for m in members for d in units[m].docs if isinstance(d, dict)]
        errors = [(units[m].label, units[m].error) for m in members if units[m].error]
        env = Environment(docs, load_settings(root), errors, kserve.repo_release(root))
        if root and root not in cluster_documents:
            cluster_documents[root] = _cluster_documents(root)  # read once per repo, not once per environment
        env.entry_points = _entry_points(root, {m: units[m].label for m in members}, cluster_documents[root]) if root else []
        for unit in RULES.values():
            findings += unit.check(env)
        seen |= {r.name for r in docs if _plaintext_secret(r)}
    # Plaintext Secrets anywhere in the repo (no repo: the overlay's own folder), not only in what is deployed.
    scan_roots = {root or path for path, root in roots.items()}
    for scan_root in sorted(scan_roots):
        if any(other in scan_root.parents for other in scan_roots):
            continue
        for file in [scan_root] if scan_root.is_file() else _yaml_files(scan_root):
            for doc in _load_all(file, only_if="Secret"):  # a file that never says Secret holds none
                res = Resource(display_path(file), doc)
                if res.name not in seen:
                    findings += _plaintext_secret(res)
    report.findings = list(dict.fromkeys(findings))
    return report


def _plan(units: dict[Path, _Unit], roots: dict[Path, Path | None], jobs: int) -> list[tuple[Path | None, list[Path]]]:
    """Which units are linted together: (repo root, members) per environment, or a target on its own.

    `units` gains the layers of a touched environment that were not built yet (and its plain manifest folders).
    """
    touched: dict[frozenset[Path], Path] = {}
    for root in {r for r in roots.values() if r is not None}:
        for group in environment_groups(root):
            bases: set[Path] = set()
            for member in group:
                _includes(member, bases)
            # A target is in an environment when it is one of its layers, or a base a layer builds in
            # (linting models/<m> lints every environment that deploys it).
            if any(r == root and (path in group or path in bases) for path, r in roots.items()):
                touched[group] = root
    # Bases another linted overlay builds in (models/<m>, platform/) are linted through it, not on their own.
    layers: set[Path] = set().union(*touched) if touched else set()
    covered = set(layers)
    for path in [*units, *layers]:
        _includes(path, covered)
    groups = [(root, [path]) for path, root in roots.items() if path not in covered]
    missing = sorted(layers - set(units))
    companions = [Target(m) for m in missing if kustomization_file(m) is not None]
    for target, output in zip(companions, render_targets(companions, jobs)):
        units[target.path] = _unit(display_path(target.path), output)
    for folder in missing:
        docs = [d for f in _yaml_files(folder, recursive=False) for d in _load_all(f)]
        if kustomization_file(folder) is None and docs:
            units[folder] = _Unit(display_path(folder), docs)
    groups += [(root, sorted(m for m in group if m in units)) for group, root in touched.items()]
    return groups


def _unit(label: str, output) -> _Unit:
    if isinstance(output, CommandError):
        return _Unit(label, [], f"kustomize build failed: {output}: fix the overlay")
    if isinstance(output, list):
        return _Unit(label, output)
    try:
        return _Unit(label, [parsed for parsed, _ in split_documents(output)])
    except yaml.YAMLError as exc:
        return _Unit(label, [], f"not valid YAML ({str(exc).splitlines()[0]}): fix the manifest")


def _yaml_files(folder: Path, recursive: bool = True) -> list[Path]:
    """YAML files under `folder`, hidden folders (.git, ...) skipped."""
    if not folder.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        found += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(MANIFEST_SUFFIXES)]
    return found


def _load_all(file: Path, only_if: str = "") -> list[dict]:
    """The mapping documents of a YAML file (none unless its text contains `only_if`); files that are not YAML
    (templates, ...) yield nothing."""
    try:
        text = file.read_text()
        if only_if not in text:
            return []
        return [d for d in yaml.load_all(text, Loader=YAML_LOADER) if isinstance(d, dict)]
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return []


# --- resources ----------------------------------------------------------------------------------------


def _api_group(doc: dict) -> str:
    api = str(doc.get("apiVersion") or "")
    return api.rpartition("/")[0] if "/" in api else ""


def _get(obj, *keys, default=None):
    for key in keys:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(key)
    return default if obj is None else obj


@dataclass
class Resource:
    overlay: str
    obj: dict

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind") or "")

    @property
    def group(self) -> str:
        return _api_group(self.obj)

    @property
    def name(self) -> str:
        return str(_get(self.obj, "metadata", "name", default=""))

    @property
    def namespace(self) -> str:
        return "" if self.kind in CLUSTER_SCOPED else str(_get(self.obj, "metadata", "namespace", default=""))

    @property
    def labels(self) -> dict:
        labels = _get(self.obj, "metadata", "labels", default={})
        return labels if isinstance(labels, dict) else {}

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    def finding(self, rule: str, message: str) -> Finding:
        return Finding(self.overlay, self.ref, rule, message)


def _same_ns(a: str, b: str) -> bool:
    """Namespaces match; an unset one (applied into the entry point's destination namespace) matches any."""
    return not a or not b or a == b


@dataclass
class Container:
    where: str  # for messages: "container kserve-container", "model"
    spec: dict
    resources: dict
    args: list
    image: str

    @property
    def gpus(self) -> int:
        return _gpus(self.resources, "limits") or _gpus(self.resources, "requests")


@dataclass
class Pod:
    """A pod as it will run: containers with the runtime merged into an InferenceService's model."""

    res: Resource
    spec: dict
    containers: list[Container]
    tolerations: list
    affinity: dict
    is_template: bool = False  # a ServingRuntime: its pods are the InferenceServices' pods
    component: str = ""  # predictor, transformer or explainer of an InferenceService
    model: Container | None = None


def _merge_resources(base: dict, over: dict) -> dict:
    merged = {}
    for key in ("requests", "limits"):
        values = {**(_get(base, key, default={}) or {}), **(_get(over, key, default={}) or {})}
        if values:
            merged[key] = values
    return merged


def _containers(spec: dict, prefix: str = "") -> list[Container]:
    found = []
    for key in ("initContainers", "containers"):
        for c in _get(spec, key, default=[]) or []:
            if isinstance(c, dict):
                found.append(Container(
                    f"{prefix}{'init container' if key == 'initContainers' else 'container'} {c.get('name', '?')}",
                    c, _get(c, "resources", default={}), list(c.get("args") or []), str(c.get("image") or ""),
                ))
    return found


def _gpus(resources: dict, key: str) -> int:
    value = _get(resources, key, GPU)
    try:
        return int(float(str(value))) if value is not None else 0
    except ValueError:
        return 0


def _flag(args: list, *names: str) -> str | None:
    """The last value of a CLI flag in an argument list (`--flag=v` or `--flag v`)."""
    value = None
    args = [str(a) for a in args]
    for i, arg in enumerate(args):
        for name in names:
            if arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
            elif arg == name and i + 1 < len(args):
                value = args[i + 1]
    return value


def _is_vllm(container: Container) -> bool:
    """vLLM serves this container: its args (runtime's + model's) say `--backend=vllm` (KServe's huggingfaceserver;
    its automatic backend choice is not guessed) or its image is vllm-openai (vllm/vllm-openai)."""
    repository = re.split(r"[@:]", container.image.rsplit("/", 1)[-1])[0]
    return _flag(container.args, "--backend") == "vllm" or repository == "vllm-openai"


class Environment:
    """Everything one environment deploys (or one overlay on its own), with the lookups rules share."""

    def __init__(self, docs: list[Resource], settings: Settings, build_errors: Sequence[tuple[str, str]] = (),
                 release: str = kserve.DEFAULT_RELEASE):
        self.docs = docs
        self.settings = settings
        self.build_errors = list(build_errors)  # (overlay, error) of the members that did not build
        self.release = release  # the KServe release tag the repo targets (kserve.repo_release)
        # GitOps entry points (clusters/) that sync this environment's layers: (Flux Kustomization or Argo CD
        # Application, the label of the layer it syncs).
        self.entry_points: list[tuple[Resource, str]] = []
        self._pods: list[Pod] | None = None
        self.by_kind: dict[str, list[Resource]] = {}
        for res in docs:
            self.by_kind.setdefault(res.kind, []).append(res)

    def kind(self, kind: str, namespace: str | None = None) -> list[Resource]:
        found = self.by_kind.get(kind, [])
        return found if namespace is None else [r for r in found if _same_ns(r.namespace, namespace)]

    def runtime(self, isvc: Resource) -> Resource | None:
        name = _get(isvc.obj, "spec", "predictor", "model", "runtime")
        if not name:
            return None
        local = [r for r in self.kind("ServingRuntime", isvc.namespace) if r.name == name]
        return (local or [r for r in self.kind("ClusterServingRuntime") if r.name == name] or [None])[0]

    def secret_names(self, namespace: str) -> set[str]:
        names = set(self.settings.external_secrets)
        names |= {r.name for r in self.kind("Secret", namespace)}
        names |= {_get(r.obj, "spec", "target", "name") or r.name for r in self.kind("ExternalSecret", namespace)}
        names |= {
            _get(r.obj, "spec", "template", "metadata", "name") or r.name for r in self.kind("SealedSecret", namespace)
        }
        return names

    @property
    def cpu_only(self) -> bool:
        """The cpu component's placement on the InferenceServices: a CPU-only environment."""
        return any(_avoids_gpus(p) for p in self.pods() if p.res.kind == "InferenceService")

    def pods(self) -> list[Pod]:
        """Every pod spec: workloads, InferenceService components (model merged into its runtime) and
        (Cluster)ServingRuntimes as templates."""
        if self._pods is None:
            self._pods = list(self._all_pods())
        return self._pods

    def containers(self) -> Iterator[tuple[Pod, Container]]:
        for pod in self.pods():
            for container in pod.containers:
                yield pod, container

    def _all_pods(self) -> Iterator[Pod]:
        for res in self.docs:
            spec = res.obj.get("spec") if isinstance(res.obj.get("spec"), dict) else {}
            if res.kind in ("ServingRuntime", "ClusterServingRuntime") and res.group == KSERVE:
                yield Pod(res, spec, _containers(spec), spec.get("tolerations") or [], spec.get("affinity") or {},
                          is_template=True)
            elif res.kind == "InferenceService" and res.group == KSERVE:
                yield from self._isvc_pods(res, spec)
            elif res.kind in POD_TEMPLATE_PATHS:
                pod = _get(res.obj, *POD_TEMPLATE_PATHS[res.kind], default={})
                if isinstance(pod, dict):
                    yield Pod(res, pod, _containers(pod), pod.get("tolerations") or [], pod.get("affinity") or {})

    def _isvc_pods(self, res: Resource, spec: dict) -> Iterator[Pod]:
        for component in ("predictor", "transformer", "explainer"):
            pod = spec.get(component)
            if not isinstance(pod, dict):
                continue
            containers = _containers(pod, f"{component} ")
            tolerations, affinity = list(pod.get("tolerations") or []), pod.get("affinity") or {}
            model = None
            if component == "predictor" and isinstance(pod.get("model"), dict):
                spec_model = pod["model"]
                runtime = self.runtime(res)
                base: dict = {}
                if runtime is not None:
                    rspec = runtime.obj.get("spec") or {}
                    runtime_containers = [c for c in rspec.get("containers") or [] if isinstance(c, dict)]
                    base = next((c for c in runtime_containers if c.get("name") == "kserve-container"),
                                runtime_containers[0] if runtime_containers else {})
                    tolerations += list(rspec.get("tolerations") or [])
                    affinity = affinity or rspec.get("affinity") or {}
                # KServe merges the model into the runtime's container: model args appended, resources per key.
                # The runtime's own fields (image, env, securityContext) are checked on the runtime itself.
                model = Container(
                    "model",
                    spec_model,
                    _merge_resources(_get(base, "resources", default={}), _get(spec_model, "resources", default={})),
                    list(base.get("args") or []) + list(spec_model.get("args") or []),
                    str(spec_model.get("image") or base.get("image") or ""),
                )
                containers.insert(0, model)
            yield Pod(res, pod, containers, tolerations, affinity, component=component, model=model)


# --- the catalogue: build and references --------------------------------------------------------------


@rule("build", "the overlay builds with kustomize")
def build_rule(env: Environment) -> Iterator[Finding]:
    for overlay, error in env.build_errors:
        yield Finding(overlay, "kustomization", "build", error)


@rule("ref-runtime", "InferenceService runtime -> a (Cluster)ServingRuntime supporting its model format")
def ref_runtime(env: Environment) -> Iterator[Finding]:
    for isvc in env.kind("InferenceService"):
        model = _get(isvc.obj, "spec", "predictor", "model")
        if not isinstance(model, dict):
            continue
        fmt = str(_get(model, "modelFormat", "name", default=""))
        name = model.get("runtime")
        runtimes = env.kind("ServingRuntime", isvc.namespace) + env.kind("ClusterServingRuntime")
        if not name:
            if not any(_supports(r, fmt, auto=True) for r in runtimes if not _get(r.obj, "spec", "disabled")):
                yield isvc.finding("ref-runtime", f"no runtime in this environment auto-selects model format "
                                   f"{fmt or '(none)'}: set spec.predictor.model.runtime to a deployed runtime")
            continue
        runtime = env.runtime(isvc)
        if runtime is None:
            yield isvc.finding("ref-runtime", f"runtime {name} is not deployed with this environment: add "
                               f"ClusterServingRuntime {name} to its platform layer or fix the runtime name")
        elif _get(runtime.obj, "spec", "disabled") is True:
            yield isvc.finding("ref-runtime", f"runtime {name} is disabled: enable it or choose another runtime")
        elif not _supports(runtime, fmt):
            formats = [str(f.get("name")) for f in _get(runtime.obj, "spec", "supportedModelFormats", default=[]) or []
                       if isinstance(f, dict)]
            yield isvc.finding("ref-runtime", f"runtime {name} does not support model format {fmt or '(none)'} "
                               f"(it supports {', '.join(formats) or 'none'}): fix modelFormat.name or the runtime")


@rule("ref-service-account", "serviceAccountName -> a ServiceAccount in the same namespace")
def ref_service_account(env: Environment) -> Iterator[Finding]:
    for pod in env.pods():
        sa, res = pod.spec.get("serviceAccountName"), pod.res
        if sa and sa != "default" and not any(s.name == sa for s in env.kind("ServiceAccount", res.namespace)):
            yield res.finding("ref-service-account", f"serviceAccountName {sa} is not deployed with this "
                              f"environment: add ServiceAccount {sa} or fix serviceAccountName")


@rule("ref-secret", "Secret references -> a Secret, ExternalSecret, SealedSecret, SOPS file or externalSecrets entry")
def ref_secret(env: Environment) -> Iterator[Finding]:
    referrers = [(pod.res, _pod_secret_refs(pod)) for pod in env.pods()]
    for sa in env.kind("ServiceAccount"):
        listed = list(sa.obj.get("secrets") or []) + list(sa.obj.get("imagePullSecrets") or [])
        referrers.append((sa, [s.get("name") for s in listed if isinstance(s, dict)]))
    for res, names in referrers:
        known = env.secret_names(res.namespace)
        for name in dict.fromkeys(n for n in names if n):
            if name not in known:
                yield res.finding("ref-secret", f"Secret {name} is not created by this environment: add it to the "
                                  f"secrets layer (SealedSecret, SOPS file or ExternalSecret) or list it under "
                                  f"lint.externalSecrets in {SETTINGS_FILE}")


@rule("ref-priority-class", "priorityClassName -> a PriorityClass")
def ref_priority_class(env: Environment) -> Iterator[Finding]:
    for pod in env.pods():
        pc = pod.spec.get("priorityClassName")
        if pc and pc not in BUILTIN_PRIORITY_CLASSES and not any(p.name == pc for p in env.kind("PriorityClass")):
            yield pod.res.finding("ref-priority-class", f"priorityClassName {pc} is not deployed with this "
                                  f"environment: add PriorityClass {pc} to the platform layer or fix the name")


@rule("ref-inference-pool", "HTTPRoute backendRef of kind InferencePool -> an InferencePool")
def ref_inference_pool(env: Environment) -> Iterator[Finding]:
    for route in env.kind("HTTPRoute"):
        for route_rule in _get(route.obj, "spec", "rules", default=[]) or []:
            for ref in _get(route_rule, "backendRefs", default=[]) or []:
                if not isinstance(ref, dict) or ref.get("kind") != "InferencePool":
                    continue
                group, name = str(ref.get("group") or ""), ref.get("name")
                ns = ref.get("namespace") or route.namespace
                if not any(p.name == name and p.group == group for p in env.kind("InferencePool", ns)):
                    yield route.finding("ref-inference-pool", f"backendRef InferencePool {name} (group "
                                        f"{group or 'core'}) is not deployed with this environment: add the "
                                        "InferencePool (inference-pool component) or fix the backendRef")


@rule("runtime-admission", "KServe's ServingRuntime webhook admits every runtime beside the release's own "
      "(no same-priority autoSelect format on a shared protocol, no blocked env vars)")
def runtime_admission(env: Environment) -> Iterator[Finding]:
    # pkg/webhook/admission/servingruntime (failurePolicy Fail): a runtime is refused when it and another
    # (Cluster)ServingRuntime of the same scope auto-select an equal model format (name, version) with the same
    # priority over a shared protocol version, or when a container sets a blocked env var.
    ours = [r for r in env.kind("ClusterServingRuntime") + env.kind("ServingRuntime")
            if r.group == KSERVE and not _get(r.obj, "spec", "disabled")]
    shipped = [Resource(f"KServe {env.release}", d) for d in kserve.shipped_runtimes(env.release)] if ours else []
    for index, runtime in enumerate(ours):
        spec = _get(runtime.obj, "spec", default={})
        if (fmt := _priority_differs(spec)) is not None:
            yield runtime.finding("runtime-admission", f"model format {fmt} is listed with different priorities: "
                                  "give every autoSelect entry of a format the same priority")
        if runtime.kind == "ClusterServingRuntime":
            if runtime.name in {s.name for s in shipped}:
                yield runtime.finding("runtime-admission", f"KServe {env.release} installs a ClusterServingRuntime "
                                      f"named {runtime.name}: rename this runtime so neither replaces the other")
            for other in shipped:
                if other.name != runtime.name and (fmt := kserve.priority_collision(spec, other.obj.get("spec") or {})):
                    yield runtime.finding("runtime-admission", _collision(fmt, spec, f"KServe {env.release}'s "
                                                                         f"{other.name}"))
        for other in ours[index + 1:]:
            same_scope = other.kind == runtime.kind and (other.kind == "ClusterServingRuntime"
                                                         or _same_ns(other.namespace, runtime.namespace))
            if same_scope and other.name != runtime.name and (
                    fmt := kserve.priority_collision(spec, _get(other.obj, "spec", default={}))):
                yield runtime.finding("runtime-admission", _collision(fmt, spec, f"{other.kind} {other.name}"))
    blocked = set(kserve.blocked_env_vars(env.release))
    for res, where, container in _admitted_containers(env):
        for var in container.get("env") or []:
            if isinstance(var, dict) and var.get("name") in blocked:
                yield res.finding("runtime-admission", f"{where} sets {var['name']}, which KServe {env.release}'s "
                                  "webhook refuses: remove it (put the value in the image instead)")


# --- the catalogue: inference pools -------------------------------------------------------------------


@rule("pool-no-match", "an InferencePool selects at least one InferenceService's pods")
def pool_no_match(env: Environment) -> Iterator[Finding]:
    for pool, shown, matched in _pool_matches(env):
        if not matched:
            yield pool.finding("pool-no-match", f"selector {shown} selects no InferenceService's pods: "
                               f"select one with {ISVC_LABEL}: <name>, or drop the pool")


@rule("pool-non-vllm", "an InferencePool selects only vLLM model servers")
def pool_non_vllm(env: Environment) -> Iterator[Finding]:
    for pool, shown, matched in _pool_matches(env):
        others = [name for name, vllm in matched if vllm is False]
        if others:
            yield pool.finding("pool-non-vllm", f"selector {shown} also selects non-vLLM model servers "
                               f"({', '.join(others)}): narrow the selector to vLLM InferenceServices")


@rule("pool-endpoint-picker", "each InferencePool's endpoint picker Service leads to a Deployment serving that pool "
      "and only that pool (--pool-name)")
def pool_endpoint_picker(env: Environment) -> Iterator[Finding]:
    # An endpoint picker watches exactly one pool, named by --pool-name: pools sharing one picker, or a picker
    # nobody deploys, leave the gateway without endpoints for all but one of them.
    served: dict[tuple[str, str], list[str]] = {}  # picker Deployment -> pools referring to it
    for pool in env.kind("InferencePool"):
        name, port = _picker_ref(pool)
        services = [s for s in env.kind("Service", pool.namespace) if s.name == name]
        if not name or not services:
            yield pool.finding("pool-endpoint-picker", f"endpoint picker Service {name or '(none)'} is not deployed "
                               "with this environment: add its Deployment and Service (the inference-pool component "
                               "generates <pool>-epp) or fix the pool's endpointPickerRef")
            continue
        service = services[0]
        ports = [p.get("port") for p in _get(service.obj, "spec", "ports", default=[]) or [] if isinstance(p, dict)]
        if port is not None and port not in ports:
            yield pool.finding("pool-endpoint-picker", f"endpoint picker Service {name} has no port {port} (it has "
                               f"{', '.join(map(str, ports)) or 'none'}): fix the pool's port or the Service")
        selector = _get(service.obj, "spec", "selector", default={}) or {}
        pickers = [d for d in env.kind("Deployment", service.namespace) if selector and all(
            str(_get(d.obj, "spec", "template", "metadata", "labels", k, default="\0")) == str(v)
            for k, v in selector.items())]
        if len(pickers) != 1:
            yield pool.finding("pool-endpoint-picker", f"endpoint picker Service {name} selects {len(pickers)} "
                               "Deployments: its selector must match exactly one endpoint picker Deployment")
            continue
        picker = pickers[0]
        served.setdefault((picker.namespace, picker.name), []).append(pool.name)
        containers = [c for c in _containers(_get(picker.obj, "spec", "template", "spec", default={}))
                      if _flag(c.args, *POOL_NAME_FLAGS) is not None]
        pool_names = {_flag(c.args, *POOL_NAME_FLAGS) for c in containers}
        namespaces = {_flag(c.args, *POOL_NAMESPACE_FLAGS) for c in containers} - {None}
        if pool_names != {pool.name}:
            yield pool.finding("pool-endpoint-picker", f"endpoint picker Deployment {picker.name} serves pool "
                               f"{', '.join(sorted(map(str, pool_names))) or '(no --pool-name)'}, not {pool.name}: set "
                               f"its --pool-name to {pool.name}")
        elif pool.namespace and namespaces - {pool.namespace}:
            yield pool.finding("pool-endpoint-picker", f"endpoint picker Deployment {picker.name} watches namespace "
                               f"{', '.join(sorted(namespaces))}, not {pool.namespace}: set its --pool-namespace to "
                               f"{pool.namespace}")
    for (_, picker), pools in sorted(served.items()):
        if len(pools) > 1:
            for pool in env.kind("InferencePool"):
                if pool.name in pools:
                    yield pool.finding("pool-endpoint-picker", f"endpoint picker Deployment {picker} is shared by "
                                       f"pools {', '.join(sorted(pools))}, and a picker serves one pool: give each "
                                       "pool its own picker")


@rule("route-timeout", "every HTTPRoute rule to an InferencePool sets timeouts.request (gateways cut long "
      "generations at their default)")
def route_timeout(env: Environment) -> Iterator[Finding]:
    for route, number, route_rule, pools in _pool_route_rules(env):
        if pools and not _get(route_rule, "timeouts", "request"):
            yield route.finding("route-timeout", f"rule {number} sends to InferencePool {', '.join(pools)} without "
                                "timeouts.request, so the gateway's default (often 15s) cuts long generations: set "
                                "timeouts.request (answer gateway_request_timeout)")


@rule("route-openai-path", "an OpenAI client's /v1/... reaches each pooled model server's OpenAI routes "
      "(huggingfaceserver serves them under /openai/v1)")
def route_openai_path(env: Environment) -> Iterator[Finding]:
    # KServe's huggingfaceserver registers the OpenAI API under KSERVE_OPENAI_ROUTE_PREFIX (default /openai;
    # python/kserve/kserve/protocol/rest/openai/endpoints.py); vLLM's own image serves it at /v1.
    predictors = {(p.res.namespace, p.res.name): p for p in env.pods() if p.component == "predictor"}
    pools = {(pool.namespace, pool.name): [predictors[(pool.namespace, n)] for n, _ in matched
                                           if (pool.namespace, n) in predictors]
             for pool, _, matched in _pool_matches(env)}
    routes: dict[tuple[str, str], list[tuple[Resource, dict]]] = {}  # pool -> (route, rule) sending to it
    for route, _, route_rule, names in _pool_route_rules(env):
        for name in names:
            routes.setdefault((route.namespace, name), []).append((route, route_rule))
    client = "/v1/chat/completions"
    for key, sent in sorted(routes.items(), key=lambda item: item[0]):
        forwarded = _forwarded_path(client, [r for _, r in sent])
        for pod in pools.get(key, []):
            prefix = _openai_prefix(env, pod)
            if prefix is None:
                continue
            route = sent[0][0]
            if forwarded is None:
                yield route.finding("route-openai-path", f"no rule matches {client}, so OpenAI clients get 404 "
                                    f"from {pod.res.name}: add a PathPrefix /v1 match")
            elif not forwarded.startswith(prefix + "/v1/"):
                yield route.finding("route-openai-path", f"{client} reaches {pod.res.name} as {forwarded}, but it "
                                    f"serves the OpenAI API under {prefix}/v1/ (404): rewrite the /v1 prefix "
                                    f"to {prefix}/v1 (URLRewrite ReplacePrefixMatch)")


# --- the catalogue: GPUs ------------------------------------------------------------------------------


@rule("gpu-limit", "nvidia.com/gpu requests == limits")
def gpu_limit(env: Environment) -> Iterator[Finding]:
    for pod, c in env.containers():
        requested, limited = _gpus(c.resources, "requests"), _gpus(c.resources, "limits")
        if requested and requested != limited:
            yield pod.res.finding("gpu-limit", f"{c.where} requests {requested} {GPU} but its limit is {limited}: "
                                  f"set resources.limits.{GPU} to {requested}")


# Tolerations, placement and parallelism of a runtime (a pod template) belong to the InferenceServices using it.


@rule("gpu-toleration", "a pod using GPUs tolerates the nvidia.com/gpu NoSchedule taint")
def gpu_toleration(env: Environment) -> Iterator[Finding]:
    for pod, c in env.containers():
        if not pod.is_template and c.gpus and not any(_tolerates_gpu(t) for t in pod.tolerations):
            yield pod.res.finding("gpu-toleration", f"{c.where} uses {GPU} but the pod does not tolerate the "
                                  f"{GPU} NoSchedule taint: select the gpu component or add the toleration")


@rule("gpu-tensor-parallel", "vLLM tensor x pipeline parallel size == nvidia.com/gpu")
def gpu_tensor_parallel(env: Environment) -> Iterator[Finding]:
    for pod in env.pods():
        c = pod.model
        if pod.is_template or c is None or not _is_vllm(c):
            continue
        tp = _flag(c.args, "--tensor-parallel-size", "--tensor_parallel_size", "-tp") or "1"
        pp = _flag(c.args, "--pipeline-parallel-size", "--pipeline_parallel_size", "-pp") or "1"
        try:
            wanted = int(tp) * int(pp)
        except ValueError:
            wanted = -1
        if wanted != c.gpus:
            size = f"--tensor-parallel-size {tp}" + (f" x --pipeline-parallel-size {pp}" if pp != "1" else "")
            yield pod.res.finding("gpu-tensor-parallel", f"vLLM {size} does not use its {c.gpus} {GPU}: set "
                                  "--tensor-parallel-size (x pipeline parallel size) to the GPU limit")


@rule("gpu-on-cpu", "no GPUs on CPU models or in CPU-only environments")
def gpu_on_cpu(env: Environment) -> Iterator[Finding]:
    cpu_only = env.cpu_only
    for pod, c in env.containers():
        res = pod.res
        labelled_cpu = res.labels.get("model-serving.io/accelerator") == "cpu"
        if pod.is_template or not c.gpus or not (labelled_cpu or cpu_only):
            continue
        why = "is labelled model-serving.io/accelerator=cpu" if labelled_cpu else \
            "is in a CPU-only environment (cpu component)"
        yield res.finding("gpu-on-cpu", f"{c.where} requests {c.gpus} {GPU} but {why}: drop the GPUs or "
                          "deploy it to a GPU environment")


# --- the catalogue: capacity and rollouts -------------------------------------------------------------

# Model format -> the runtime whose arithmetic applies (overlays-catalog/capacity.yml).
CAPACITY_RUNTIMES = {"gguf": "llamacpp", "ollama": "ollama", "huggingface": "vllm"}


@rule("capacity", "a model with model-serving.io/capacity figures fits its memory limit or GPUs, and requests "
      "ephemeral-storage for its download")
def capacity_rule(env: Environment) -> Iterator[Finding]:
    for pod in env.pods():
        if pod.res.kind != "InferenceService" or pod.model is None:
            continue
        raw = _get(pod.res.obj, "metadata", "annotations", capacity.ANNOTATION)
        if raw is None:
            continue
        try:
            figures = yaml.load(str(raw), Loader=YAML_LOADER)
            assert isinstance(figures, dict) and all(
                isinstance(figures.get(k), (int, float)) and not isinstance(figures[k], bool) for k in capacity.FIGURES)
        except (yaml.YAMLError, AssertionError):
            yield pod.res.finding("capacity", f"{capacity.ANNOTATION} is not a mapping of numbers "
                                  f"{', '.join(capacity.FIGURES)}: fix the figures (overlays-catalog/models.yml)")
            continue
        settings = _capacity_settings(env, pod)
        if settings is not None:
            result = capacity.need(figures, settings)
            if result["need"] > result["have"] >= 0:
                if result["limit"] == "memory":
                    limit = _get(pod.model.resources, "limits", "memory")
                    yield pod.res.finding("capacity", f"needs {result['need']} MiB ({capacity.summary(result)}) but "
                                          f"its memory limit is {limit} ({result['have']} MiB): raise the limit to "
                                          f"{-(-result['need'] // 1024)}Gi or lower the context or cache")
                else:
                    yield pod.res.finding("capacity", f"needs {result['need']} MiB per GPU ({capacity.summary(result)})"
                                          f" but its GPU offers {result['have']} MiB: use more or larger GPUs, or "
                                          "lower the context")
        downloads = bool(pod.model.spec.get("storageUri")) and not str(pod.model.spec["storageUri"]).startswith("pvc://")
        downloads = downloads or settings is not None and settings.runtime == "ollama" \
            or _flag(pod.model.args, "--hf-file", "-hff", "--model-url", "-mu") is not None
        wanted = capacity.ephemeral_gi(figures) if figures.get("downloadBytes") else 0
        got = capacity.quantity_mib(_get(pod.model.resources, "requests", "ephemeral-storage"))
        if downloads and wanted and got < wanted * 1024:
            yield pod.res.finding("capacity", f"downloads {figures['downloadBytes']} bytes to the node's disk but "
                                  f"requests {'no' if got < 0 else str(got) + ' MiB of'} ephemeral-storage: request {wanted}Gi")


def _capacity_settings(env: Environment, pod: Pod) -> capacity.Settings | None:
    """What the built pod runs with: the runtime's container merged with the model (args appended, env by name)."""
    model = pod.model
    fmt = str(_get(model.spec, "modelFormat", "name", default="")).lower()
    runtime = CAPACITY_RUNTIMES.get(fmt)
    if runtime is None or runtime == "vllm" and not _is_vllm(model):
        return None
    defaults = capacity.coefficients()["runtime_defaults"]
    env_vars: dict[str, str] = {}
    rt = env.runtime(pod.res)
    base = next(iter(_get(rt.obj, "spec", "containers", default=[]) or []), {}) if rt is not None else {}
    for item in list(base.get("env") or []) + list(model.spec.get("env") or []):
        if isinstance(item, dict) and "value" in item:
            env_vars[str(item.get("name"))] = str(item["value"])
    product = str(_get(pod.spec, "nodeSelector", "nvidia.com/gpu.product", default=""))
    gpu_mib = capacity.coefficients()["gpu_memory_mib"].get(product, 0)
    memory = capacity.quantity_mib(_get(model.resources, "limits", "memory"))

    def number(text, default, kind=int):
        try:
            return kind(text) if text is not None else default
        except ValueError:
            return default

    if runtime == "llamacpp":
        ctx = number(_flag(model.args, "--ctx-size", "-c"), 0)
        if ctx <= 0:  # 0: the model's own training context, unknown here
            return None
        return capacity.Settings("llamacpp", model.gpus, 1, memory, 0, ctx,
                                 cache_ram=number(_flag(model.args, "--cache-ram", "-cram"),
                                                  defaults["llamacpp_cache_ram_mib"]))
    if runtime == "ollama":
        return capacity.Settings("ollama", model.gpus, 1, memory, gpu_mib,
                                 number(env_vars.get("OLLAMA_CONTEXT_LENGTH"), defaults["ollama_context_length"]),
                                 parallel=number(env_vars.get("OLLAMA_NUM_PARALLEL"), defaults["ollama_num_parallel"]))
    max_len = number(_flag(model.args, "--max-model-len", "--max_model_len"), 0)
    if max_len <= 0:  # vLLM then takes the model's own maximum, unknown here
        return None
    tp = number(_flag(model.args, "--tensor-parallel-size", "--tensor_parallel_size", "-tp"), 1)
    utilization = number(_flag(model.args, "--gpu-memory-utilization", "--gpu_memory_utilization"),
                         defaults["vllm_gpu_memory_utilization"], float)
    return capacity.Settings("vllm", model.gpus, max(tp, 1), memory, gpu_mib, max_len, utilization=utilization)


PROGRESS_DEADLINE = "serving.knative.dev/progress-deadline"
FLUX_KUSTOMIZE = "kustomize.toolkit.fluxcd.io"


def _flux_syncs(env: Environment) -> list[tuple[Resource, list[Resource]]]:
    """Each Flux Kustomization with what it applies: an entry point under clusters/ its own layer, a
    Kustomization built with the models everything built."""
    syncs = [(ks, [r for r in env.docs if r.overlay == label]) for ks, label in env.entry_points]
    syncs += [(ks, env.docs) for ks in env.kind("Kustomization")]
    return [(ks, layer) for ks, layer in syncs if ks.kind == "Kustomization" and ks.group == FLUX_KUSTOMIZE]


@rule("timeouts", "a Flux Kustomization waits (spec.timeout) at least as long as the progress deadline of every "
      "model it deploys")
def timeouts(env: Environment) -> Iterator[Finding]:
    for ks, layer in _flux_syncs(env):
        models = [(_seconds(str(deadline)), str(deadline), isvc) for isvc in layer if isvc.kind == "InferenceService"
                  and (deadline := _get(isvc.obj, "metadata", "annotations", PROGRESS_DEADLINE)) is not None
                  and _seconds(str(deadline)) is not None]
        if not models:
            continue
        timeout = str(_get(ks.obj, "spec", "timeout", default="") or _get(ks.obj, "spec", "interval", default=""))
        seconds, deadline, isvc = max(models, key=lambda m: m[0])
        waited = _seconds(timeout)
        if waited is not None and waited < seconds:
            yield ks.finding("timeouts", f"timeout {timeout} is shorter than InferenceService {isvc.name}'s "
                             f"progress deadline {deadline}: Flux fails the sync while the model still loads; set "
                             f"spec.timeout to at least {deadline} (copier answer sync_timeout)")


# The workload KServe runs a model's predictor in, by deployment mode (v0.16 names and their v0.19+ renames).
PREDICTOR_WORKLOAD = {"Serverless": ("serving.knative.dev/v1", "Service"), "Knative": ("serving.knative.dev/v1", "Service"),
                      "RawDeployment": ("apps/v1", "Deployment"), "Standard": ("apps/v1", "Deployment")}


KSERVE_CHILD_GROUPS = {"", "apps", "serving.knative.dev", "autoscaling", "keda.sh"}


def _among(key: tuple[str, str, str, str], keys: Iterable[tuple[str, str, str, str]]) -> bool:
    """(API group, kind, name, namespace) is one of `keys`; an unset namespace matches any."""
    return any(key[:3] == other[:3] and _same_ns(key[3], other[3]) for other in keys)


def _applied_namespace(kind: str, namespace: str, target: str) -> str:
    """The namespace Flux applies an object into: a Kustomization's spec.targetNamespace moves namespaced ones."""
    return "" if kind in CLUSTER_SCOPED else target or namespace


@rule("flux-health-checks", "a Flux Kustomization that deploys models does not `wait` on InferenceServices, and "
      "its healthChecks cover each model's <name>-predictor workload and name nothing it does not create")
def flux_health_checks(env: Environment) -> Iterator[Finding]:
    for ks, layer in _flux_syncs(env):
        isvcs = [r for r in layer if r.kind == "InferenceService" and r.group == KSERVE]
        if not isvcs:
            continue
        spec = ks.obj.get("spec") if isinstance(ks.obj.get("spec"), dict) else {}
        if spec.get("wait") is True:
            yield ks.finding("flux-health-checks", "wait: true health-checks the InferenceServices themselves, and "
                             "KServe copies their status.observedGeneration from the workload (kserve/kserve#6081): "
                             "after a change such as maxReplicas Flux waits for a generation that never comes, until "
                             "spec.timeout, at every sync: drop wait and list each model's <name>-predictor workload "
                             "under spec.healthChecks")
            continue
        checks = [c for c in spec.get("healthChecks") or [] if isinstance(c, dict)]
        if not checks:
            continue  # waits for nothing: a choice (the generated Kustomizations list their checks)
        target = str(spec.get("targetNamespace") or "")

        # (API group, kind, name, namespace). Flux reads an entry as given: no apiVersion means apps/v1, and no
        # namespace means none (kustomize-controller's ReferenceToObjMetadataSet), not the Kustomization's.
        listed = set()
        for check in checks:
            api = str(check.get("apiVersion") or "apps/v1")
            key = (api.rpartition("/")[0], str(check.get("kind")), str(check.get("name")), str(check.get("namespace") or ""))
            listed.add(key)
            if not key[3] and key[1] not in CLUSTER_SCOPED:
                yield ks.finding("flux-health-checks", f"spec.healthChecks lists {key[1]} {key[2]} without a "
                                 f"namespace, and Flux does not default it: it looks for the object in no namespace "
                                 f"and waits until spec.timeout; add its namespace")

        for isvc in isvcs:
            mode = _get(isvc.obj, "metadata", "annotations", "serving.kserve.io/deploymentMode")
            kinds = [PREDICTOR_WORKLOAD[mode]] if mode in PREDICTOR_WORKLOAD else sorted(set(PREDICTOR_WORKLOAD.values()))
            mine = [(api, kind, f"{isvc.name}-predictor", _applied_namespace(kind, isvc.namespace, target)) for api, kind in kinds]
            if not any(_among((api.rpartition("/")[0], kind, name, ns), listed) for api, kind, name, ns in mine):
                api, kind, name, ns = mine[0]
                yield ks.finding("flux-health-checks", f"InferenceService {isvc.name} is not health-checked, so Flux "
                                 f"reports the sync Ready before the model serves: add {{apiVersion: {api}, kind: "
                                 f"{kind}, name: {name}, namespace: {ns}}} to spec.healthChecks")
        created = {(r.group, r.kind, r.name, _applied_namespace(r.kind, r.namespace, target)) for r in layer}
        # What KServe creates for a model, by name: <model>-<component> Deployments, Knative or core Services,
        # HPAs and ScaledObjects.
        kserve_made = {(_applied_namespace(isvc.kind, isvc.namespace, target), f"{isvc.name}-{component}")
                       for isvc in isvcs for component in ("predictor", "transformer", "explainer")}
        for key in sorted(listed):
            group, kind, name, ns = key
            if _among(key, created) or (group in KSERVE_CHILD_GROUPS and any(
                    _same_ns(ns, n) and name == made for n, made in kserve_made)):
                continue
            yield ks.finding("flux-health-checks", f"spec.healthChecks lists {kind} {ns}/{name} ({group or 'core'}), "
                             f"which nothing this Kustomization applies creates (a model removed by hand?): Flux waits "
                             f"for it until spec.timeout and fails every sync; remove the entry")


def _seconds(duration: str) -> int | None:
    """A Go duration (1h30m, 90s) in whole seconds; None when it is not one."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    if not re.fullmatch(r"([0-9]+(?:[.][0-9]+)?(?:ms|s|m|h))+", duration):
        return None
    return int(sum(float(n) * units[u] for n, u in re.findall(r"([0-9]+(?:[.][0-9]+)?)(ms|s|m|h)", duration)))


# --- the catalogue: containers ------------------------------------------------------------------------


AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
# A PromQL label matcher: name, operator, quoted value.
PROMQL_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"')


def _prometheus_label(pod_label: str) -> str:
    """The label name Prometheus Operator gives a pod label it copies (podTargetLabels): invalid characters -> _."""
    return re.sub(r"[^A-Za-z0-9_]", "_", pod_label)


@rule("keda-scaling", "an InferenceService with autoscalerClass keda is in Standard mode, sets no scaleMetric and "
      "scales on External metrics whose Prometheus queries can select its pods' series")
def keda_scaling(env: Environment) -> Iterator[Finding]:
    copied = {_prometheus_label(str(label)) for monitor in env.kind("PodMonitor")
              for label in _get(monitor.obj, "spec", "podTargetLabels", default=[]) or []}
    models = {pod.res.name: pod.model for pod in env.pods() if pod.component == "predictor" and pod.model}
    for isvc in env.kind("InferenceService"):
        annotations = _get(isvc.obj, "metadata", "annotations", default={}) or {}
        if annotations.get(AUTOSCALER_CLASS) != "keda":
            continue
        predictor = _get(isvc.obj, "spec", "predictor", default={}) or {}
        # KServe reads autoscalerClass in Standard mode only; Knative scales with its own autoscaler.
        if annotations.get("serving.kserve.io/deploymentMode") in ("Knative", "Serverless"):
            yield isvc.finding("keda-scaling", "autoscalerClass keda in Knative mode: KServe ignores it there; "
                               "set serving.kserve.io/deploymentMode: Standard, or drop the keda component")
        # KServe's webhook (validateScalingKedaCompExtension) refuses these.
        if "scaleMetric" in predictor:
            yield isvc.finding("keda-scaling", f"scaleMetric {predictor['scaleMetric']} with autoscalerClass keda: "
                               "KServe's webhook refuses it; remove scaleMetric and scaleTarget")
        metrics = _get(predictor, "autoScaling", "metrics", default=[]) or []
        if not metrics:
            yield isvc.finding("keda-scaling", "autoscalerClass keda without spec.predictor.autoScaling.metrics: "
                               "KServe writes a ScaledObject with no triggers; add External Prometheus metrics")
        for metric in metrics:
            external = metric.get("external") if isinstance(metric, dict) else None
            if not isinstance(external, dict):
                continue
            query = str(_get(external, "metric", "query", default="") or "")
            if not query or _get(external, "target", "value") in (None, ""):
                yield isvc.finding("keda-scaling", "an External metric without a query or target.value: KServe's "
                                   "webhook refuses it; give both")
                continue
            matchers = {name: value for name, op, value in PROMQL_MATCHER.findall(query) if op == "="}
            model = models.get(isvc.name)
            if matchers.get("model_name") == isvc.name and model is not None and _is_vllm(model) \
                    and not _flag(model.args, "--served-model-name"):
                # vLLM labels its metrics with the served model name: the model path unless set.
                yield isvc.finding("keda-scaling", f"query {query} selects model_name=\"{isvc.name}\", but vLLM "
                                   "labels its metrics with the model path (/mnt/models) here: select by "
                                   f"{_prometheus_label(ISVC_LABEL)} (PodMonitor podTargetLabels), or pass "
                                   "--served-model-name")
            pod_label = _prometheus_label(ISVC_LABEL)
            if pod_label in matchers and env.kind("PodMonitor") and pod_label not in copied:
                yield isvc.finding("keda-scaling", f"query {query} selects {pod_label}, but no PodMonitor copies "
                                   f"the pod label {ISVC_LABEL}: add it to the PodMonitor's podTargetLabels")


@rule("resources", "every container has cpu and memory requests and limits")
def resources_rule(env: Environment) -> Iterator[Finding]:
    for pod, c in env.containers():
        missing = [f"{k}.{r}" for k in ("requests", "limits") for r in ("cpu", "memory") if not _get(c.resources, k, r)]
        if missing:
            yield pod.res.finding("resources", f"{c.where} has no {', '.join(missing)}: set cpu and memory "
                                  "requests and limits")


@rule("image-pinned", "every image has a tag other than latest, or a digest")
def image_pinned(env: Environment) -> Iterator[Finding]:
    for pod, c in env.containers():
        image = c.spec.get("image")
        if image and not _pinned(str(image)):
            yield pod.res.finding("image-pinned", f"{c.where} image {image} is not pinned: use a version tag "
                                  "(not latest) or a @sha256: digest")


@rule("secret-plaintext", "no Secret with plaintext data/stringData anywhere in the repo (SOPS files excepted)")
def secret_plaintext(env: Environment) -> Iterator[Finding]:
    # The engine also scans every YAML file of the repo with the same test (_plaintext_secret).
    for res in env.docs:
        yield from _plaintext_secret(res)


@rule("env-credential", "no literal value for an env variable whose name says it holds a credential (*TOKEN*, *KEY*, ...)")
def env_credential(env: Environment) -> Iterator[Finding]:
    credential = _credential_env_name()
    for pod, c in env.containers():
        for var in c.spec.get("env") or []:
            if isinstance(var, dict) and var.get("value") not in (None, "") and credential.search(str(var.get("name"))):
                yield pod.res.finding("env-credential", f"{c.where} env {var.get('name')} has a literal value, "
                                      "committed to Git: take it from a Secret (valueFrom.secretKeyRef)")


@rule("host-path", "no hostPath volumes")
def host_path(env: Environment) -> Iterator[Finding]:
    for pod in env.pods():
        for volume in pod.spec.get("volumes") or []:
            if isinstance(volume, dict) and "hostPath" in volume:
                yield pod.res.finding("host-path", f"volume {volume.get('name')} is a hostPath: use a PVC, "
                                      "emptyDir or the model's storageUri instead")


@rule("privileged", "no privileged containers")
def privileged(env: Environment) -> Iterator[Finding]:
    for pod, c in env.containers():
        if (c.spec.get("securityContext") or {}).get("privileged") is True:
            yield pod.res.finding("privileged", f"{c.where} is privileged: remove securityContext.privileged")


@rule("privilege-escalation", "no allowPrivilegeEscalation: true")
def privilege_escalation(env: Environment) -> Iterator[Finding]:
    for pod, c in env.containers():
        if (c.spec.get("securityContext") or {}).get("allowPrivilegeEscalation") is True:
            yield pod.res.finding("privilege-escalation", f"{c.where} sets allowPrivilegeEscalation: true: set "
                                  "it to false")


@rule("capabilities", "no added Linux capabilities (NET_BIND_SERVICE aside)")
def capabilities(env: Environment) -> Iterator[Finding]:
    for pod, c in env.containers():
        added = _get(c.spec, "securityContext", "capabilities", "add", default=[]) or []
        extra = [str(a) for a in added if str(a).upper().removeprefix("CAP_") != "NET_BIND_SERVICE"]
        if extra:
            yield pod.res.finding("capabilities", f"{c.where} adds capabilities {', '.join(extra)}: remove "
                                  "securityContext.capabilities.add (model servers need none) and drop ALL")


@rule("host-namespaces", "no hostNetwork, hostPID or hostIPC")
def host_namespaces(env: Environment) -> Iterator[Finding]:
    for pod in env.pods():
        shared = [key for key in ("hostNetwork", "hostPID", "hostIPC") if pod.spec.get(key) is True]
        if shared:
            where = f"{pod.component} " if pod.component else ""
            yield pod.res.finding("host-namespaces", f"{where}{' and '.join(shared)}: true shares the node's "
                                  "namespaces with the model server: remove it")


# --- the catalogue: namespaces ------------------------------------------------------------------------


@rule("ns-pod-security", "the models' namespace enforces a Pod Security Admission level")
def ns_pod_security(env: Environment) -> Iterator[Finding]:
    for ns, isvc in _model_namespaces(env):
        namespaces = [n for n in env.kind("Namespace") if _same_ns(n.name, ns)]
        if not namespaces:
            yield isvc.finding("ns-pod-security", f"namespace {ns or '(unset)'} is not deployed with this "
                               "environment: add the Namespace with label pod-security.kubernetes.io/enforce")
        for namespace in namespaces:
            level = namespace.labels.get("pod-security.kubernetes.io/enforce")
            if level not in ("baseline", "restricted"):
                yield namespace.finding("ns-pod-security", f"pod-security.kubernetes.io/enforce is "
                                        f"{level or 'unset'}: label the namespace "
                                        "pod-security.kubernetes.io/enforce=baseline (or restricted)")


@rule("ns-network-policy", "the models' namespace has a default NetworkPolicy admitting only listed sources")
def ns_network_policy(env: Environment) -> Iterator[Finding]:
    for ns, isvc in _model_namespaces(env):
        policies = env.kind("NetworkPolicy", ns)
        if not any(_selects_all(p) and "Ingress" in (_get(p.obj, "spec", "policyTypes") or []) for p in policies):
            owner = next((n for n in env.kind("Namespace") if _same_ns(n.name, ns)), isvc)
            yield owner.finding("ns-network-policy", f"namespace {ns or '(unset)'} has no NetworkPolicy with "
                                "podSelector {} and policyTypes [Ingress]: add one admitting only the "
                                "gateway, Knative and monitoring namespaces")
        for policy in policies:
            for number, ingress in enumerate(_get(policy.obj, "spec", "ingress", default=[]) or []):
                if _admits_anyone(ingress):
                    yield policy.finding("ns-network-policy", f"ingress rule {number} admits traffic from "
                                         "anywhere: list the allowed sources under `from`")


@rule("ns-gateway-ingress", "the models' NetworkPolicy admits the gateway's data plane (lint.gatewayNamespaces, "
      "lint.gatewayCidrs: from the answer gateway_implementation)")
def ns_gateway_ingress(env: Environment) -> Iterator[Finding]:
    # Envoy Gateway's proxies run in envoy-gateway-system, Kourier's in kourier-system, GKE's load balancers come
    # from Google's ranges: a policy admitting only istio-system blocks them all.
    wanted = [("namespace", n) for n in env.settings.gateway_namespaces] + [("cidr", c) for c in env.settings.gateway_cidrs]
    if not wanted:
        return
    for ns, _ in _model_namespaces(env):
        policies = [p for p in env.kind("NetworkPolicy", ns)
                    if "Ingress" in (_get(p.obj, "spec", "policyTypes") or []) and _selects_all(p)]
        if not policies:
            continue  # ns-network-policy reports the missing policy
        owner = policies[0]
        for what, value in wanted:
            if not any(_admits(rule, what, value) for p in policies
                       for rule in _get(p.obj, "spec", "ingress", default=[]) or []):
                source = f"namespace {value}" if what == "namespace" else f"addresses {value}"
                yield owner.finding("ns-gateway-ingress", f"no ingress rule admits {source}, where the gateway's "
                                    f"traffic comes from: admit it (answers gateway_implementation, knative_ingress) "
                                    f"or fix lint.gateway{'Namespaces' if what == 'namespace' else 'Cidrs'} in "
                                    f"{SETTINGS_FILE}")


# --- helpers the rules share --------------------------------------------------------------------------


def _supports(runtime: Resource, fmt: str, auto: bool = False) -> bool:
    """The runtime lists model format `fmt` (auto: with autoSelect true)."""
    return any(
        str(f.get("name", "")).lower() == fmt.lower() and (not auto or f.get("autoSelect") is True)
        for f in _get(runtime.obj, "spec", "supportedModelFormats", default=[]) or [] if isinstance(f, dict)
    )


def _pod_secret_refs(pod: Pod) -> list[str]:
    """Secrets a pod needs to start: image pull secrets, secret volumes, env secretKeyRefs/secretRefs (optional
    ones excepted)."""
    spec, refs = pod.spec, [s.get("name") for s in pod.spec.get("imagePullSecrets") or [] if isinstance(s, dict)]
    for volume in spec.get("volumes") or []:
        if not isinstance(volume, dict):
            continue
        if _get(volume, "secret", "optional") is not True:
            refs.append(_get(volume, "secret", "secretName"))
        for source in _get(volume, "projected", "sources", default=[]) or []:
            if _get(source, "secret", "optional") is not True:
                refs.append(_get(source, "secret", "name"))
    for c in pod.containers:
        for env in c.spec.get("env") or []:
            ref = _get(env, "valueFrom", "secretKeyRef", default={})
            if ref.get("name") and ref.get("optional") is not True:
                refs.append(ref["name"])
        for env in c.spec.get("envFrom") or []:
            ref = _get(env, "secretRef", default={})
            if ref.get("name") and ref.get("optional") is not True:
                refs.append(ref["name"])
    return [r for r in refs if r]


def _priority_differs(spec: dict) -> str | None:
    """validateModelFormatPrioritySame: one runtime gives an auto-selected format two priorities."""
    seen: dict[str, object] = {}
    for f in kserve.auto_formats(spec):
        name, priority = str(f.get("name")), f.get("priority")
        if name in seen and seen[name] is not None and priority is not None and seen[name] != priority:
            return name
        seen.setdefault(name, priority)
    return None


def _collision(fmt: str, spec: dict, other: str) -> str:
    protocols = ", ".join(map(str, spec.get("protocolVersions") or []))
    return (f"auto-selects model format {fmt} over protocols {protocols} like {other}, so KServe's webhook refuses "
            "it: set autoSelect: false (models name their runtime) or a priority no other runtime uses")


def _admitted_containers(env: Environment) -> Iterator[tuple[Resource, str, dict]]:
    """(resource, where, container) of every container KServe's webhooks check for blocked env vars."""
    for pod in env.pods():
        if pod.res.group == KSERVE:
            for c in pod.containers:
                yield pod.res, c.where, c.spec
    for res in env.kind("ClusterServingRuntime") + env.kind("ServingRuntime") + env.kind("InferenceService"):
        worker = _get(res.obj, "spec", "workerSpec") or _get(res.obj, "spec", "predictor", "workerSpec") or {}
        for c in _containers(worker, "worker ") if isinstance(worker, dict) else []:
            yield res, c.where, c.spec


POOL_NAME_FLAGS = ("--pool-name", "-pool-name", "-poolName", "--poolName")
POOL_NAMESPACE_FLAGS = ("--pool-namespace", "-pool-namespace", "-poolNamespace", "--poolNamespace")


def _picker_ref(pool: Resource) -> tuple[str, int | None]:
    """(Service name, port) of a pool's endpoint picker: v1 endpointPickerRef, v1alpha2 extensionRef."""
    spec = _get(pool.obj, "spec", default={})
    if isinstance(spec.get("endpointPickerRef"), dict):
        ref = spec["endpointPickerRef"]
        return str(ref.get("name") or ""), _get(ref, "port", "number")
    ref = spec.get("extensionRef") if isinstance(spec.get("extensionRef"), dict) else {}
    return str(ref.get("name") or ""), ref.get("portNumber")


def _pool_route_rules(env: Environment) -> Iterator[tuple[Resource, int, dict, list[str]]]:
    """(route, rule number, rule, names of the InferencePools it sends to) of every HTTPRoute rule."""
    for route in env.kind("HTTPRoute"):
        for number, route_rule in enumerate(_get(route.obj, "spec", "rules", default=[]) or []):
            if isinstance(route_rule, dict):
                refs = [r for r in route_rule.get("backendRefs") or [] if isinstance(r, dict)]
                yield route, number, route_rule, [str(r.get("name")) for r in refs if r.get("kind") == "InferencePool"]


def _forwarded_path(path: str, rules: list[dict]) -> str | None:
    """The path a backend receives for `path` through the best-matching rule (longest PathPrefix or Exact),
    after its URLRewrite; None when no rule matches."""
    best: tuple[int, str, dict] | None = None
    for route_rule in rules:
        for match in route_rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]:
            kind = _get(match, "path", "type", default="PathPrefix")
            value = str(_get(match, "path", "value", default="/"))
            prefix = value.rstrip("/")
            hit = path == value if kind == "Exact" else (path == prefix or path.startswith(prefix + "/"))
            if hit and (best is None or len(value) > best[0]):
                best = (len(value), prefix, route_rule)
    if best is None:
        return None
    _, prefix, route_rule = best
    for f in route_rule.get("filters") or []:
        rewrite = _get(f, "urlRewrite", "path", default={}) if _get(f, "type") == "URLRewrite" else {}
        if rewrite.get("type") == "ReplacePrefixMatch":
            return str(rewrite.get("replacePrefixMatch") or "").rstrip("/") + path[len(prefix):]
        if rewrite.get("type") == "ReplaceFullPath":
            return str(rewrite.get("replaceFullPath") or "/")
    return path


def _openai_prefix(env: Environment, pod: Pod) -> str | None:
    """Where a model server serves the OpenAI API ('' = at /v1), or None for servers this does not know."""
    if pod.model is None:
        return None
    repository = re.split(r"[@:]", pod.model.image.rsplit("/", 1)[-1])[0]
    if repository == "vllm-openai":
        return ""
    if repository != "huggingfaceserver":
        return None
    runtime = env.runtime(pod.res)
    runtime_containers = _containers(_get(runtime.obj, "spec", default={})) if runtime is not None else []
    for container in [pod.model.spec] + [c.spec for c in runtime_containers if c.spec.get("name") == "kserve-container"]:
        for var in container.get("env") or []:
            if isinstance(var, dict) and var.get("name") == "KSERVE_OPENAI_ROUTE_PREFIX" and "value" in var:
                value = str(var.get("value") or "")
                return ("/" + value.lstrip("/")).rstrip("/") if value else ""
    return "/openai"


def _pool_matches(env: Environment) -> Iterator[tuple[Resource, str, list[tuple[str, bool]]]]:
    """(pool, its selector shown, [(InferenceService name, serves with vLLM: True, False or None when its runtime
    does not resolve)] whose predictor pods it selects)."""
    servers = []  # (namespace, name, pod labels, is vLLM) of each InferenceService's predictor pods
    for pod in env.pods():
        if pod.component == "predictor":
            labels = {**pod.res.labels, **(pod.spec.get("labels") or {}),
                      ISVC_LABEL: pod.res.name, "component": "predictor"}
            # None: the runtime does not resolve (ref-runtime says so), so whether it is vLLM is unknown.
            vllm = None if env.runtime(pod.res) is None else pod.model is not None and _is_vllm(pod.model)
            servers.append((pod.res.namespace, pod.res.name, labels, vllm))
    for pool in env.kind("InferencePool"):
        selector = _get(pool.obj, "spec", "selector", default={})
        if pool.group == "inference.networking.k8s.io":
            selector = _get(selector, "matchLabels", default={})
        selector = {str(k): str(v) for k, v in (selector or {}).items()} if isinstance(selector, dict) else {}
        shown = ",".join(f"{k}={v}" for k, v in selector.items()) or "(empty)"
        matched = [
            (name, vllm) for ns, name, labels, vllm in servers
            if _same_ns(ns, pool.namespace) and all(str(labels.get(k, "\0")) == v for k, v in selector.items())
        ]
        yield pool, shown, matched


def _model_namespaces(env: Environment) -> list[tuple[str, Resource]]:
    """Each namespace InferenceServices run in, with the first of them (to name when the namespace is missing)."""
    first: dict[str, Resource] = {}
    for isvc in env.kind("InferenceService"):
        first.setdefault(isvc.namespace, isvc)
    return sorted(first.items())


def _avoids_gpus(pod: Pod) -> bool:
    """The cpu component's placement: required node affinity `nvidia.com/gpu.present DoesNotExist`."""
    terms = _get(pod.affinity, "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution",
                 "nodeSelectorTerms", default=[]) or []
    return any(
        _get(e, "key") == "nvidia.com/gpu.present" and _get(e, "operator") == "DoesNotExist"
        for t in terms if isinstance(t, dict) for e in t.get("matchExpressions") or []
    )


def _admits(ingress, what: str, value: str) -> bool:
    """An ingress rule admits every pod of namespace `value` (what=namespace) or the addresses `value` (cidr)."""
    if not isinstance(ingress, dict):
        return False
    peers = ingress.get("from") or []
    if not peers:
        return True  # from anywhere
    for peer in peers:
        if not isinstance(peer, dict):
            continue
        if what == "cidr" and isinstance(peer.get("ipBlock"), dict):
            try:
                block = ipaddress.ip_network(str(peer["ipBlock"].get("cidr")), strict=False)
                wanted = ipaddress.ip_network(value, strict=False)
                excepted = [ipaddress.ip_network(str(e), strict=False) for e in peer["ipBlock"].get("except") or []]
            except ValueError:
                continue
            if wanted.version == block.version and wanted.subnet_of(block) and not any(
                    wanted.overlaps(e) for e in excepted if e.version == wanted.version):
                return True
        if what == "namespace" and "namespaceSelector" in peer and not _get(peer, "podSelector", default={}):
            if _selector_matches(peer.get("namespaceSelector") or {}, {"kubernetes.io/metadata.name": value}):
                return True
    return False


def _selector_matches(selector: dict, labels: dict) -> bool:
    """A label selector matches an object with exactly these labels (what is known of a namespace)."""
    if not isinstance(selector, dict):
        return False
    if any(labels.get(str(k)) != str(v) for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = str(_get(expr, "key", default="")), _get(expr, "operator"), list(_get(expr, "values", default=[]) or [])
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _selects_all(policy: Resource) -> bool:
    selector = _get(policy.obj, "spec", "podSelector", default={})
    return isinstance(selector, dict) and not selector.get("matchLabels") and not selector.get("matchExpressions")


@functools.cache
def _credential_env_name() -> re.Pattern[str]:
    from .render import credential_env_name  # the one list: overlays-catalog/secret-patterns.yml

    return credential_env_name()


def _admits_anyone(rule) -> bool:
    peers = _get(rule, "from", default=[]) if isinstance(rule, dict) else []
    if not peers:
        return True
    for peer in peers:
        if not isinstance(peer, dict):
            continue
        if set(peer) == {"namespaceSelector"} and not any(_get(peer, "namespaceSelector", default={}).values()):
            return True  # every pod of every namespace
        if _get(peer, "ipBlock", "cidr") in ("0.0.0.0/0", "::/0"):
            return True
    return False


def _tolerates_gpu(toleration) -> bool:
    if not isinstance(toleration, dict):
        return False
    operator = toleration.get("operator") or "Equal"
    key_ok = toleration.get("key") == GPU or (not toleration.get("key") and operator == "Exists")
    return key_ok and operator in ("Exists", "Equal") and toleration.get("effect") in (None, "", "NoSchedule")


def _pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name = image.rsplit("/", 1)[-1]
    tag = name.partition(":")[2]
    return bool(tag) and tag != "latest"


def _plaintext_secret(res: Resource) -> list[Finding]:
    if res.kind != "Secret" or res.group:
        return []
    if "sops" in res.obj:
        # A SOPS file: every value must be encrypted (ENC[...]); the sops: key alone proves nothing.
        plain = [f"{part}.{key}" for part in ("data", "stringData") if isinstance(res.obj.get(part), dict)
                 for key, value in res.obj[part].items() if not SOPS_VALUE.match(str(value))]
        if not plain:
            return []
        return [res.finding("secret-plaintext", f"{', '.join(plain)} in plain text although the file carries "
                            "sops metadata: encrypt it again with sops (`make secret`)")]
    fields = [k for k in ("data", "stringData") if res.obj.get(k)]
    if not fields:
        return []
    return [res.finding("secret-plaintext", f"{' and '.join(fields)} in plain text: never commit Secret values; "
                        "use an ExternalSecret, a SealedSecret or a SOPS-encrypted file (`make secret`)")]


# --- CLI ----------------------------------------------------------------------------------------------


def list_rules() -> str:
    """The catalogue, one rule a line: id, then why."""
    width = max(len(r) for r in RULES)
    return "\n".join(f"{r.id:{width}}  {r.why}" for r in RULES.values())


def cmd_lint(args: argparse.Namespace) -> int:
    if args.list_rules:
        print(list_rules())
        return 0
    if not args.paths:
        raise InputError("lint needs a PATH (a kustomization folder, a folder to search, or a YAML file), "
                              "or --list-rules")
    return print_report(lint_paths(args.paths, jobs=args.jobs), args.output)


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """Register this module's CLI verb (wired from cli.py)."""
    lint = verbs.add_parser(
        "lint",
        help="checks schemas cannot express: references, GPUs, resources, images, secrets, pod security",
        description="Build every overlay under PATH and run the checks schemas cannot express, resolving references "
        "across each environment's layers. One line per finding (overlay: resource: [rule] problem: fix); exit 1 "
        "on any finding. `--list-rules` prints the catalogue of rules.",
    )
    lint.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                      help="kustomization folder, folder to search for kustomizations, or YAML file")
    lint.add_argument("--list-rules", action="store_true", help="print every rule (id and why) and exit")
    lint.add_argument("--output", choices=["text", "json"], default="text", help="report format (default: %(default)s)")
    lint.add_argument("--jobs", type=int, default=default_jobs(), help="parallel builds (default: %(default)s)")
    lint.set_defaults(func=cmd_lint)
