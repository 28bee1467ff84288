"""Build kustomizations and validate every resource strictly against the schema store.

kustomize builds run in a bounded thread pool (each is its own process); all resources then go through ONE
kubeconform process, each distinct resource exactly once, so schemas are compiled once per run.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from . import lint as lint_module
from . import releases
from .build import default_jobs, display_path, explain_build_error, find_targets, plural, render_targets, split_documents
from .build import kustomize_build  # noqa: F401  (tests and scripts import it from here)
from .command import Command, last_lines
from .errors import CommandError
from .schemas import DEFAULT_KUBERNETES_VERSION, DEFAULT_STORE, Store, default_crd_dirs, open_store, release_store
from .tools import tool_path

# Offline runs point kubeconform's proxies at a closed port: anything it tried to fetch would fail loudly.
CLOSED_PROXY = "http://127.0.0.1:9"
VALID, INVALID, ERROR = "valid", "invalid", "error"


@dataclass
class ResourceResult:
    target: str
    api_version: str
    kind: str
    namespace: str
    name: str
    status: str
    message: str = ""

    @property
    def ref(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


@dataclass
class TargetResult:
    target: str
    status: str
    resources: int = 0
    message: str = ""


@dataclass
class Report:
    targets: list[TargetResult] = field(default_factory=list)
    resources: list[ResourceResult] = field(default_factory=list)
    lint: lint_module.LintReport | None = None  # None when validation ran with lint=False
    server: str = ""  # "kube-apiserver v1.34.4" when every resource was also dry-run on one

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.resources)

    @property
    def errors(self) -> int:
        return self.count(ERROR) + sum(t.status == ERROR for t in self.targets)

    @property
    def ok(self) -> bool:
        return self.count(INVALID) == 0 and self.errors == 0 and (self.lint is None or self.lint.ok)

    def failures(self) -> list[str]:
        broken = {t.target for t in self.targets if t.status == ERROR}
        lines = [f"{t.target}: {t.message}" for t in self.targets if t.status == ERROR]
        lines += [f"{r.target}: {r.ref} ({r.api_version}): {r.message}" for r in self.resources if r.status != VALID]
        # lint builds the overlays again: a build error validate reported above is not printed a second time.
        lint = [f.line() for f in self.lint.findings if not (f.rule == "build" and f.overlay in broken)] \
            if self.lint is not None else []
        return lines + lint

    def summary(self) -> str:
        schema = (
            f"{plural(self.count(VALID), 'resource')} valid, {self.count(INVALID)} invalid, "
            f"{plural(self.errors, 'error')} in {plural(len(self.targets), 'overlay')}"
            + (f" (kubeconform and {self.server} dry-run)" if self.server else "")
        )
        return schema if self.lint is None else f"{schema}; lint: {self.lint.summary()}"

    def to_json(self) -> dict:
        return {
            **({"lint": self.lint.to_json()} if self.lint is not None else {}),
            "targets": [asdict(t) for t in self.targets],
            "resources": [asdict(r) for r in self.resources],
            "summary": {
                **({"server": self.server} if self.server else {}),
                "valid": self.count(VALID),
                "invalid": self.count(INVALID),
                "errors": self.errors,
                "overlays": len(self.targets),
            },
        }


# --- validating ---------------------------------------------------------------------------------------


@dataclass
class Verdict:
    status: str
    message: str = ""


def kubeconform_verdicts(
    documents: Sequence[str], store: Store, *, online: bool = False, jobs: int | None = None
) -> list[Verdict]:
    """Validate each YAML document (one resource each) with a single kubeconform process; same order out."""
    if not documents:
        return []
    unique = list(dict.fromkeys(documents))
    with tempfile.TemporaryDirectory(prefix="servingops-kubeconform-") as tmp:
        files = []
        for number, doc in enumerate(unique):
            path = Path(tmp) / f"{number:06d}.yaml"
            path.write_text(doc)
            files.append(str(path))
        argv = [
            str(tool_path("kubeconform")),
            "-strict",
            "-summary",
            "-verbose",
            "-output", "json",
            "-kubernetes-version", store.kubernetes_version,
            "-schema-location", store.location,
            "-n", str(max(1, jobs or default_jobs())),
        ]
        env = {}
        if online:
            argv += ["-schema-location", "default"]
        else:
            env = {k: CLOSED_PROXY for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
            env.update(NO_PROXY="", no_proxy="")
        result = Command((*argv, *files), env=env, timeout=600).run(check=False)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise CommandError(f"kubeconform printed no JSON report (exit {result.returncode}): {last_lines(result.stderr)}") from exc
    by_file: dict[str, Verdict] = {}
    for entry in report.get("resources") or []:
        by_file[Path(entry["filename"]).name] = _verdict(entry, store)
    verdicts = []
    for number in range(len(unique)):
        verdicts.append(by_file.get(f"{number:06d}.yaml", Verdict(ERROR, "kubeconform reported nothing for this resource")))
    lookup = dict(zip(unique, verdicts))
    return [lookup[doc] for doc in documents]


def _verdict(entry: dict, store: Store) -> Verdict:
    status = entry.get("status", "")
    if status == "statusValid":
        return Verdict(VALID)
    message = entry.get("msg", "")
    if "could not find schema" in message:
        api = f"{entry.get('version', '')} {entry.get('kind', '')}".strip()
        return Verdict(
            ERROR,
            f"no schema for {api} in {store.path}: add its CRD with --crds DIR "
            f"(e.g. `kubectl get crd -o yaml > crds.yaml`)",
        )
    if status == "statusInvalid":
        # kubeconform's validationErrors stop at the first $ref ("/spec: validation failed"); its msg holds
        # the innermost causes: "... failed with '<schema>' - at '/path': reason".
        _, found, causes = message.partition("' - ")
        return Verdict(INVALID, " ".join(causes.split()) if found else message)
    return Verdict(ERROR, message)


def server_verdicts(objects: Sequence[dict], crd_sources: Sequence[Path], *, jobs: int | None = None) -> list[Verdict]:
    """Dry-run each object on a kube-apiserver started for this call with the CRDs in crd_sources (files or
    folders); same order out."""
    from . import apiserver, controlplane  # only --server needs them

    plane = controlplane.install(log=lambda message: print(message, file=sys.stderr))
    with apiserver.start(crd_sources, plane=plane, log=lambda message: print(message, file=sys.stderr)) as server:
        return server_dry_run(server, objects, jobs=jobs)


def server_crd_sources(target: Path, crd_dirs: Sequence[Path] | None) -> tuple[str, list[Path]]:
    """(label, CRD files or folders) for a target's server: --crds or $SERVINGOPS_CRDS when given, else the CRD
    set of the KServe release its repository's answers name (the default release outside a generated repo)."""
    if crd_dirs is not None:
        return "--crds", list(crd_dirs)
    if os.environ.get("SERVINGOPS_CRDS"):
        return "$SERVINGOPS_CRDS", default_crd_dirs()
    version = releases.recorded_version([target]) or releases.default_version()
    return f"KServe {version}", releases.crd_files(version)


def server_dry_run(server, objects: Sequence[dict], *, jobs: int | None = None) -> list[Verdict]:
    """Dry-run create and server-side apply (strict field validation) of each object on a running
    apiserver.Server; each distinct object is sent once. Namespaces are created for real first (a throwaway server)."""
    keys = [json.dumps(obj, sort_keys=True) for obj in objects]
    unique = dict(zip(keys, objects))
    for namespace in sorted(_namespaces(server, unique.values())):
        server.ensure_namespace(namespace)  # a refused name shows up as its objects' refusal
    with ThreadPoolExecutor(max_workers=max(2, jobs or default_jobs())) as pool:
        outcomes = dict(zip(unique, pool.map(server.dry_run, unique.values())))
    # code 0: never sent (no API for the kind, no name) -> an error, like kubeconform's missing schema
    return [
        Verdict(VALID) if outcomes[k].accepted else Verdict(INVALID if outcomes[k].code else ERROR, outcomes[k].message)
        for k in keys
    ]


def _namespaces(server, objects: Iterable[dict]) -> set[str]:
    names = set()
    for obj in objects:
        resource = server.resource_for(obj)
        meta = obj.get("metadata") or {}
        if (obj.get("apiVersion"), obj.get("kind")) == ("v1", "Namespace") and meta.get("name"):
            names.add(str(meta["name"]))
        elif resource is not None and resource.namespaced:
            names.add(str(meta.get("namespace") or "default"))
    return names


def _combine(schema: Verdict, server: Verdict) -> Verdict:
    """The worse of the two verdicts; both messages when both complain."""
    if server.status == VALID:
        return schema
    message = f"kube-apiserver: {server.message}"
    if schema.status == VALID:
        return Verdict(server.status, message)
    return Verdict(schema.status, f"{schema.message}; {message}")


def validate(
    paths: Iterable[Path],
    *,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    crd_dirs: Sequence[Path] | None = None,
    store_dir: Path = DEFAULT_STORE,
    online: bool = False,
    jobs: int | None = None,
    lint: bool = True,
    prebuilt_store: Path | None = None,
    server: bool = False,
    kserve_version: str | None = None,
    crd_root: Path | None = None,
) -> Report:
    """Build and validate every target; then lint the built output (cross-object checks) unless lint=False.
    server=True: also server-side dry-run every resource on a real kube-apiserver (see apiserver.py).

    Schemas: crd_dirs (or $SERVINGOPS_CRDS) as given; else the CRDs of the KServe release `kserve_version`, by
    default the one recorded in the repository's .copier-answers.yml (else the template's default release)."""
    jobs = jobs or default_jobs()
    paths = list(paths)
    targets = find_targets(paths)
    version = kserve_version or releases.recorded_version(paths)
    store = (open_store(prebuilt_store) if prebuilt_store
             else release_store(version, store_dir, kubernetes_version, crd_dirs, root=crd_root))
    rendered = render_targets(targets, jobs)
    report = Report()
    pending: list[tuple[str, dict]] = []  # (target label, parsed doc) awaiting a verdict
    documents: list[str] = []
    built: dict[str, list[dict]] = {}  # target label -> parsed docs, for lint
    target_paths: dict[str, Path] = {}  # target label -> its path (which repository, which KServe release)
    for target, output in zip(targets, rendered):
        label = display_path(target.path)
        target_paths[label] = target.path
        if isinstance(output, CommandError):
            report.targets.append(TargetResult(label, ERROR, message=explain_build_error(str(output), target.path)))
            continue
        try:
            docs = split_documents(output)
        except yaml.YAMLError as exc:
            report.targets.append(TargetResult(label, ERROR, message=f"not valid YAML: {str(exc).splitlines()[0]}"))
            continue
        report.targets.append(TargetResult(label, VALID, resources=len(docs)))
        built[label] = [parsed for parsed, _ in docs]
        for parsed, text in docs:
            pending.append((label, parsed))
            documents.append(text)
    verdicts = kubeconform_verdicts(documents, store, online=online, jobs=jobs)
    if server:
        # one server per CRD set (a repository's KServe release), each distinct object dry-run once on it
        groups: dict[str, tuple[list[Path], list[int]]] = {}
        for index, (label, _) in enumerate(pending):
            name, sources = server_crd_sources(target_paths[label], crd_dirs)
            groups.setdefault(name, (sources, []))[1].append(index)
        for sources, indexes in groups.values():
            objects = [pending[i][1] if isinstance(pending[i][1], dict) else {} for i in indexes]
            for i, verdict in zip(indexes, server_verdicts(objects, sources, jobs=jobs)):
                verdicts[i] = _combine(verdicts[i], verdict)
        from .controlplane import pin

        report.server = f"kube-apiserver {pin().version}"
    for (label, parsed), verdict in zip(pending, verdicts):
        meta = parsed.get("metadata") or {} if isinstance(parsed, dict) else {}
        report.resources.append(
            ResourceResult(
                target=label,
                api_version=str(parsed.get("apiVersion", "")) if isinstance(parsed, dict) else "",
                kind=str(parsed.get("kind", "")) if isinstance(parsed, dict) else "",
                namespace=str(meta.get("namespace", "") or ""),
                name=str(meta.get("name", "") or ""),
                status=verdict.status,
                message=verdict.message,
            )
        )
    for result in report.targets:
        if result.status == VALID and any(r.target == result.target and r.status != VALID for r in report.resources):
            result.status = INVALID
    if lint:
        report.lint = lint_module.lint_built(built, jobs=jobs)
    return report
