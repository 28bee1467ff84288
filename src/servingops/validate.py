"""Build kustomizations and validate every resource strictly against the schema store.

kustomize builds run in a bounded thread pool (each is its own process); all resources then go through ONE
kubeconform process, each distinct resource exactly once, so schemas are compiled once per run.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .command import Command, last_lines
from .errors import CommandError, InputError
from .schemas import DEFAULT_KUBERNETES_VERSION, DEFAULT_STORE, Store, build_store
from .tools import tool_path

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MANIFEST_SUFFIXES = (".yaml", ".yml")
# Offline runs point kubeconform's proxies at a closed port: anything it tried to fetch would fail loudly.
CLOSED_PROXY = "http://127.0.0.1:9"
class KubernetesYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML's safe loader, reading plain scalars the way Kubernetes' YAML does: `<<` and `=` are text, not a
    merge key or a value tag (kustomize writes them unquoted), and a malformed number stays text."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers
                if tag not in ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # `0x_` matches YAML 1.1's int pattern but is no number
            return self.construct_scalar(node)


KubernetesYamlLoader.add_constructor("tag:yaml.org,2002:int", KubernetesYamlLoader.construct_yaml_int)
YAML_LOADER = KubernetesYamlLoader
VALID, INVALID, ERROR = "valid", "invalid", "error"


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class Target:
    """Something to validate: a kustomization folder (built first) or a plain manifest file."""

    path: Path

    @property
    def is_kustomization(self) -> bool:
        return self.path.is_dir()


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
    lint: Any = None  # a lint.LintReport unless validation ran with lint=False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.resources)

    @property
    def errors(self) -> int:
        return self.count(ERROR) + sum(t.status == ERROR for t in self.targets)

    @property
    def ok(self) -> bool:
        return self.count(INVALID) == 0 and self.errors == 0 and (self.lint is None or self.lint.ok)

    def failures(self) -> list[str]:
        lines = [f"{t.target}: {t.message}" for t in self.targets if t.status == ERROR]
        lines += [f"{r.target}: {r.ref} ({r.api_version}): {r.message}" for r in self.resources if r.status != VALID]
        return lines + (self.lint.failures() if self.lint is not None else [])

    def summary(self) -> str:
        schema = (
            f"{self.count(VALID)} resources valid, {self.count(INVALID)} invalid, "
            f"{self.errors} errors in {len(self.targets)} overlays"
        )
        return schema if self.lint is None else f"{schema}; lint: {self.lint.summary()}"

    def to_json(self) -> dict:
        return {
            **({"lint": self.lint.to_json()} if self.lint is not None else {}),
            "targets": [asdict(t) for t in self.targets],
            "resources": [asdict(r) for r in self.resources],
            "summary": {
                "valid": self.count(VALID),
                "invalid": self.count(INVALID),
                "errors": self.errors,
                "overlays": len(self.targets),
            },
        }


# --- finding what to validate ------------------------------------------------------------------------


def kustomization_file(folder: Path) -> Path | None:
    return next((folder / n for n in KUSTOMIZATION_FILES if (folder / n).is_file()), None)


def kustomization_refs(folder: Path, fields: Sequence[str] = ("resources", "bases", "components", "patches")) -> list[Path]:
    """The paths the kustomization in `folder` names under `fields` (a patch by its `path`), resolved.
    No kustomization, or one that is not valid YAML (kustomize reports that), names nothing."""
    kfile = kustomization_file(folder)
    try:
        spec = yaml.load(kfile.read_text(), Loader=YAML_LOADER) if kfile else None
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        spec = None
    if not isinstance(spec, dict):
        return []
    entries = [e.get("path") if isinstance(e, dict) else e for name in fields for e in spec.get(name) or []]
    return [(folder / e).resolve() for e in entries if isinstance(e, str)]


def is_component(kustomization: Path) -> bool:
    try:
        doc = yaml.load(kustomization.read_text(), Loader=YAML_LOADER) or {}
    except yaml.YAMLError:
        return False  # let kustomize report the syntax error
    return isinstance(doc, dict) and doc.get("kind") == "Component"


def find_targets(paths: Iterable[Path]) -> list[Target]:
    """Each path: a manifest file, a kustomization folder, or a folder searched for buildable kustomizations."""
    found: list[Target] = []
    for path in paths:
        if path.is_file():
            found.append(Target(path))
            continue
        if not path.is_dir():
            raise InputError(f"{path} does not exist: pass a kustomization folder, a folder to search, or a YAML file")
        own = kustomization_file(path)
        if own is not None:
            if is_component(own):
                raise InputError(f"{path} is a kustomize Component: validate an overlay that lists it under components:")
            found.append(Target(path))
            continue
        nested = [
            Target(k.parent)
            for k in sorted(path.rglob("*"))
            if k.name in KUSTOMIZATION_FILES
            and not any(part.startswith(".") for part in k.relative_to(path).parts)
            and not is_component(k)
        ]
        if not nested:
            raise InputError(f"no kustomization under {path}: pass a folder that contains kustomization.yaml files")
        found.extend(nested)
    return list(dict.fromkeys(found))


# --- building -----------------------------------------------------------------------------------------


def kustomize_build(folder: Path) -> str:
    return Command((str(tool_path("kustomize")), "build", str(folder)), timeout=120).run().stdout


def render_targets(targets: Sequence[Target], jobs: int) -> list[str | CommandError]:
    """The YAML each target stands for (kustomize output or the file itself), or the error building it."""

    def render(target: Target) -> str | CommandError:
        if not target.is_kustomization:
            return target.path.read_text()
        try:
            return kustomize_build(target.path)
        except CommandError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(render, targets))


def split_documents(text: str) -> list[tuple[dict, str]]:
    """(parsed, source text) for each non-empty YAML document, cut at the parser's own document boundaries
    (a `---` line inside a block scalar stays where it is)."""
    docs = []
    loader = YAML_LOADER(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            parsed = loader.construct_document(node)
            if parsed:
                docs.append((parsed, text[node.start_mark.index : node.end_mark.index]))
    finally:
        loader.dispose()
    return docs


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


def validate(
    paths: Iterable[Path],
    *,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    crd_dirs: Sequence[Path] | None = None,
    store_dir: Path = DEFAULT_STORE,
    online: bool = False,
    jobs: int | None = None,
    lint: bool = True,
) -> Report:
    """Build and validate every target; then lint the built output (cross-object checks) unless lint=False."""
    jobs = jobs or default_jobs()
    targets = find_targets(paths)
    store = build_store(store_dir, kubernetes_version, crd_dirs)
    rendered = render_targets(targets, jobs)
    report = Report()
    pending: list[tuple[str, dict]] = []  # (target label, parsed doc) awaiting a verdict
    documents: list[str] = []
    built: dict[str, list[dict]] = {}  # target label -> parsed docs, for lint
    for target, output in zip(targets, rendered):
        label = display_path(target.path)
        if isinstance(output, CommandError):
            report.targets.append(TargetResult(label, ERROR, message=str(output)))
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
    for (label, parsed), verdict in zip(pending, kubeconform_verdicts(documents, store, online=online, jobs=jobs)):
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
        from . import lint as lint_module  # lint builds on this module: imported here, not at the top

        report.lint = lint_module.lint_built(built, jobs=jobs)
    return report


def print_report(report, output: str) -> int:
    """Print a validate or lint report (one line per failure and the summary, or JSON); the exit status."""
    if output == "json":
        print(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.failures():
            print(line)
        print(report.summary())
    return 0 if report.ok else 1


def display_path(path: Path) -> str:
    """A path relative to the working directory when it is below it (shorter, stable messages)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
