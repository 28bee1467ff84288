"""The offline schema store: one folder of standalone JSON schemas that kubeconform reads without any network.

Layout (kubeconform -schema-location SCHEMA_LOCATION under the store folder):
    <group>/<kind>_<version>.json     e.g. apps/deployment_v1.json, serving.kserve.io/inferenceservice_v1beta1.json
kubeconform names the core group after its version, so core kinds live in v1/ (v1/pod_v1.json).

Sources: core Kubernetes schemas from the kubernetes-validate package, and CRDs from folders (the pinned
../shared/crds by default, a user's own `kubectl get crd -o yaml`, or the pinned upstream files downloaded
with their sha256). The store is rebuilt only when one of those inputs changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tomllib
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import yaml

from . import crdschema
from .errors import SchemaError
from .tools import PROJECT_ROOT, cache_dir


DEFAULT_STORE = cache_dir() / "schemas"

DEFAULT_KUBERNETES_VERSION = "1.33.0"
SCHEMA_LOCATION = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
# kind files point into _definitions.json by a root-relative URL (fetched over HTTPS by kubeconform unless
# rewritten); refs inside _definitions.json are local.
CORE_DEFS_PREFIXES = ("/api/_definitions.json#/$defs/", "#/$defs/")
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
CRD_SUFFIXES = (".yaml", ".yml", ".json")
MIRROR_ENV = "SERVINGOPS_RELEASE_MIRROR"
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Store:
    path: Path
    kubernetes_version: str
    schema_count: int
    rebuilt: bool

    @property
    def location(self) -> str:
        """The -schema-location argument for kubeconform."""
        return f"{self.path}/{SCHEMA_LOCATION}"

    def index(self) -> dict[str, str]:
        """'<apiVersion> <Kind>' -> schema file, for every schema in the store."""
        return json.loads((self.path / "index.json").read_text())["schemas"]


def schema_file(group_or_version: str, kind: str, version: str) -> str:
    return f"{group_or_version}/{kind.lower()}_{version}.json"


# --- CRD sources -----------------------------------------------------------------------------------


def shared_root() -> Path:
    """The local copy of the pinned upstream files: crds/ (every CRD but KServe's) and kserve/<tag>/crds/.
    $SERVINGOPS_SHARED, else ../shared beside this checkout."""
    return Path(os.environ.get("SERVINGOPS_SHARED") or PROJECT_ROOT.parent / "shared")


def shared_crds_dir() -> Path:
    return shared_root() / "crds"


def upstream_cache() -> Path:
    """Where the pinned upstream files are fetched to, laid out like shared_root(): <cache_dir>/upstream."""
    return cache_dir() / "upstream"


def default_crd_dirs() -> list[Path]:
    """$SERVINGOPS_CRDS (os.pathsep-separated folders), else ../shared/crds beside this checkout."""
    if override := os.environ.get("SERVINGOPS_CRDS"):
        return [Path(p) for p in override.split(os.pathsep) if p]
    return [shared_crds_dir()] if shared_crds_dir().is_dir() else []


def pinned_crds() -> list[dict[str, str]]:
    """The lock: every pinned upstream CRD file (`file` relative to shared_root(), `url`, `sha256`)."""
    text = resources.files(__package__).joinpath("data/crds.lock.toml").read_text()
    return tomllib.loads(text)["crd"]


def download_pinned_crds(cache_dir: Path | None = None, log=print) -> Path:
    """Fetch every pinned upstream CRD (every KServe release's too) into cache_dir, laid out like shared_root(),
    skipping files already there with the right sha256. $SERVINGOPS_RELEASE_MIRROR: a base URL laid out like
    shared_root() to fetch from instead of the upstream URLs (an internal mirror)."""
    cache_dir = cache_dir or upstream_cache()
    mirror = os.environ.get(MIRROR_ENV, "").rstrip("/")
    missing = [e for e in pinned_crds()
               if not ((cache_dir / e["file"]).is_file() and _sha256((cache_dir / e["file"]).read_bytes()) == e["sha256"])]
    if missing:
        log(f"fetching {len(missing)} pinned upstream files from {mirror or 'their upstream URLs'} into {cache_dir}")
    for entry in missing:
        target = cache_dir / entry["file"]
        url = f"{mirror}/{entry['file']}" if mirror else entry["url"]
        try:
            with urllib.request.urlopen(url, timeout=120) as response:
                body = response.read()
        except (OSError, ValueError) as exc:
            raise SchemaError(f"cannot download {url}: {exc}") from exc
        if (actual := _sha256(body)) != entry["sha256"]:
            raise SchemaError(f"{url} has sha256 {actual}, but {entry['sha256']} is pinned")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp.write_bytes(body)
        tmp.rename(target)  # never a half-written file in the cache
    return cache_dir


def _has_release_files(root: Path) -> bool:
    """Does root hold the common CRDs and every KServe release's CRDs?"""
    from . import releases

    return (root / "crds").is_dir() and all(
        (root / "kserve" / releases.release(v)["crds"]["kserve"] / folder).is_dir()
        for v in releases.versions() for folder in ("crds", "runtimes")
    )


def release_files_root(*, fetch: bool = True, log=print) -> Path:
    """shared_root() when it holds the pinned files, else the cache (fetched when incomplete and fetch=True).
    No source, no cache, no network: one line naming the fixes."""
    if _has_release_files(shared_root()):
        return shared_root()
    cache = upstream_cache()
    if all((cache / e["file"]).is_file() for e in pinned_crds()):
        return cache
    reason = "fetching is off"
    if fetch:
        try:
            return download_pinned_crds(cache, log=log)
        except SchemaError as exc:
            reason = f"fetching them failed: {exc}"
    raise SchemaError(
        f"no CRD source: {shared_root()} does not exist and the pinned upstream CRDs are not in {cache} "
        f"({reason}); fix: pass --crds DIR (e.g. `kubectl get crd -o yaml > crds.yaml`), set SERVINGOPS_CRDS=DIR, "
        f"or run once with network access (or {MIRROR_ENV}=URL of a mirror)"
    )


def release_crd_paths(kserve_version: str | None = None, *, root: Path | None = None, fetch: bool = True,
                      log=print) -> list[Path]:
    """The CRDs a cluster running this KServe release has: the common set (../shared/crds) without what the
    release's dependencies do not install (overlays-catalog/releases.yml `crds.without`) and without the
    common set's serving.kserve.io, plus the release's own serving.kserve.io CRDs."""
    from . import releases

    row = releases.release(kserve_version)
    root = root or release_files_root(fetch=fetch, log=log)
    common = root / "crds"
    skip = ("serving.kserve.io/", *row["crds"]["without"])
    files = [
        f for f in sorted(common.rglob("*"))
        if f.is_file() and f.suffix in CRD_SUFFIXES and not f.relative_to(common).as_posix().startswith(skip)
    ]
    return files + [root / "kserve" / row["crds"]["kserve"] / "crds"]


def release_store(
    kserve_version: str | None = None,
    out: Path = DEFAULT_STORE,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    crd_dirs: Iterable[Path] | None = None,
    *,
    root: Path | None = None,
    force: bool = False,
) -> Store:
    """The schema store to validate a repository for a KServe release with. CRDs given (crd_dirs, or
    $SERVINGOPS_CRDS: a cluster's own) are used as they are, in `out`; otherwise the release's CRD set
    (release_crd_paths, from `root` or ../shared or the fetched cache), in out/kserve-<release>."""
    from . import releases

    if crd_dirs is None and not os.environ.get("SERVINGOPS_CRDS"):
        version = kserve_version or releases.default_version()
        paths = release_crd_paths(version, root=root)
        return build_store(store_dir(out, f"kserve-{version}", kubernetes_version), kubernetes_version, paths,
                           force=force)
    return build_store(store_dir(out, "given-crds", kubernetes_version), kubernetes_version, crd_dirs, force=force)


def store_dir(out: Path, crd_set: str, kubernetes_version: str) -> Path:
    """One folder per CRD set and Kubernetes version inside `out`. A rebuild swaps its whole folder, so no store
    may hold another (a pytest worker's rebuild deleted a release store another worker was validating with), and
    one folder per Kubernetes version keeps two versions from rebuilding each other under a running kubeconform."""
    version = kubernetes_version.removeprefix("v")
    suffix = "" if version == DEFAULT_KUBERNETES_VERSION.removeprefix("v") else f"-k8s-{version}"
    return Path(out) / f"{crd_set}{suffix}"


def crd_files(dirs: Iterable[Path]) -> list[tuple[Path, Path]]:
    """(source folder, file) pairs, sorted within each folder; a path may also be a single file."""
    found: list[tuple[Path, Path]] = []
    for source in dirs:
        if source.is_file():
            found.append((source.parent, source))
            continue
        if not source.is_dir():
            raise SchemaError(f"CRD folder {source} does not exist: pass an existing folder to --crds")
        found.extend(
            (source, f) for f in sorted(source.rglob("*")) if f.suffix in CRD_SUFFIXES and f.is_file()
        )
    return found


def load_crds(path: Path) -> Iterator[dict[str, Any]]:
    """Every CustomResourceDefinition in a file (multi-document YAML, JSON, or a `kind: List`)."""
    try:
        docs = list(yaml.load_all(path.read_text(), Loader=YAML_LOADER))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        for item in doc.get("items", []) if doc.get("kind", "").endswith("List") else [doc]:
            if item.get("kind") == "CustomResourceDefinition":
                if item.get("apiVersion") != "apiextensions.k8s.io/v1":
                    raise SchemaError(f"{path}: only apiextensions.k8s.io/v1 CRDs are supported")
                yield item


# --- core Kubernetes schemas (kubernetes-validate) --------------------------------------------------


def core_schema_dir(kubernetes_version: str) -> Path:
    import kubernetes_validate

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    folder = base / f"v{kubernetes_version.removeprefix('v')}-local-strict"
    if not folder.is_dir():
        known = sorted(p.name.split("-")[0][1:] for p in base.glob("v*-local-strict"))
        raise SchemaError(
            f"kubernetes-validate has no schemas for Kubernetes {kubernetes_version}: "
            f"pass --kubernetes-version with one of {', '.join(known)}"
        )
    return folder


def _is_ref(key: str, value: Any) -> bool:
    # A *property named* "$ref" (JSONSchemaProps has one) maps to a schema object, never to a string.
    return key == "$ref" and isinstance(value, str)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if _is_ref(key, value):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _definition_name(ref: str) -> str:
    for prefix in CORE_DEFS_PREFIXES:
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    raise SchemaError(f"unexpected $ref {ref} in kubernetes-validate schemas")


def _rewrite_refs(node: Any, prefix: str) -> Any:
    """Point every ref at a definition embedded in the same file under `prefix`."""
    if isinstance(node, dict):
        return {
            k: (prefix + _definition_name(v) if _is_ref(k, v) else _rewrite_refs(v, prefix))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item, prefix) for item in node]
    return node


def _definition_closure(roots: Iterable[str], defs: dict[str, Any]) -> dict[str, Any]:
    todo, seen = list(roots), {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in defs:
            raise SchemaError(f"kubernetes-validate references an unknown definition {name}")
        seen[name] = defs[name]
        todo.extend(_definition_name(r) for r in _refs(defs[name]))
    return dict(sorted(seen.items()))


def core_schemas(kubernetes_version: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(store file, standalone schema) for every top-level kind of one Kubernetes version."""
    folder = core_schema_dir(kubernetes_version)
    defs = json.loads((folder / "_definitions.json").read_text())["$defs"]
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("_"):
            continue
        doc = json.loads(path.read_text())
        gvks = doc.get("x-kubernetes-group-version-kind") or []
        if len(gvks) != 1:  # lists of GVKs mark shared meta types (DeleteOptions, ...), not resources
            continue
        gvk = gvks[0]
        closure = _definition_closure((_definition_name(r) for r in _refs(doc)), defs)
        schema = {k: v for k, v in doc.items() if k != "$id"}
        schema = _rewrite_refs(schema, "#/$defs/")
        if closure:
            schema["$defs"] = _rewrite_refs(closure, "#/$defs/")
        yield schema_file(gvk["group"] or gvk["version"], gvk["kind"], gvk["version"]), schema


def object_meta_schema(kubernetes_version: str) -> dict[str, Any]:
    """ObjectMeta and what it references, as draft-4 definitions to embed in CRD schemas."""
    defs = json.loads((core_schema_dir(kubernetes_version) / "_definitions.json").read_text())["$defs"]
    closure = _definition_closure([OBJECT_META], defs)
    return {"$ref": f"#/definitions/{OBJECT_META}", "definitions": _rewrite_refs(closure, "#/definitions/")}


# --- building the store ------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _inputs_key(kubernetes_version: str, files: list[tuple[Path, Path]]) -> str:
    digest = hashlib.sha256()
    # The converter's own source is an input too: a changed conversion rebuilds every store.
    for module in (crdschema.__file__, __file__):
        digest.update(Path(module).read_bytes())
    digest.update(f"{metadata.version('kubernetes-validate')}\0{kubernetes_version}\0".encode())
    for source, path in files:
        digest.update(f"{path.relative_to(source)}\0{_sha256(path.read_bytes())}\0".encode())
    return digest.hexdigest()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def open_store(path: Path) -> Store:
    """A schema store built earlier (`servingops schemas build --out DIR`, perhaps on another machine), used as is."""
    path = Path(path).resolve()
    try:
        index = json.loads((path / "index.json").read_text())
        return Store(path, index["kubernetesVersion"], len(index["schemas"]), rebuilt=False)
    except (OSError, ValueError, KeyError) as exc:
        raise SchemaError(f"{path} is not a schema store (no readable index.json): build one with "
                          "`servingops schemas build --out DIR`") from exc


def build_store(
    out: Path = DEFAULT_STORE / "default-crds",
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    crd_dirs: Iterable[Path] | None = None,
    *,
    force: bool = False,
) -> Store:
    """Write (or reuse) a deterministic schema store. Later CRD folders win over earlier ones."""
    out = Path(out).resolve()
    kubernetes_version = kubernetes_version.removeprefix("v")
    files = crd_files(default_crd_dirs() if crd_dirs is None else list(crd_dirs))
    key = _inputs_key(kubernetes_version, files)
    with _locked(out):
        stamp = out / "index.json"
        if not force and stamp.is_file():
            index = json.loads(stamp.read_text())
            if index.get("inputs") == key:
                return Store(out, kubernetes_version, len(index["schemas"]), rebuilt=False)
        schemas = _render_store(kubernetes_version, files)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        for relpath, schema in schemas.items():
            target = tmp / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")))
        index = {
            "inputs": key,
            "kubernetesVersion": kubernetes_version,
            "schemas": {name: rel for rel, name in sorted((rel, _index_name(rel, s)) for rel, s in schemas.items())},
        }
        (tmp / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    return Store(out, kubernetes_version, len(schemas), rebuilt=True)


def _index_name(relpath: str, schema: dict[str, Any]) -> str:
    props = schema.get("properties", {})
    return f"{props['apiVersion']['enum'][0]} {props['kind']['enum'][0]}"


def _render_store(kubernetes_version: str, files: list[tuple[Path, Path]]) -> dict[str, dict[str, Any]]:
    schemas = dict(core_schemas(kubernetes_version))
    object_meta = object_meta_schema(kubernetes_version)
    for _, path in files:
        for crd in load_crds(path):
            try:
                for version in crdschema.served_versions(crd, object_meta):
                    schemas[schema_file(version.group, version.kind, version.version)] = version.schema
            except (KeyError, TypeError) as exc:
                raise SchemaError(f"{path}: malformed CRD {crd.get('metadata', {}).get('name')}: {exc}") from exc
    return dict(sorted(schemas.items()))
