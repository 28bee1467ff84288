"""The GitOps engines (Flux source/kustomize-controller, Argo CD) built from their pinned release Go modules.

Pins live in data/tools.toml (entries with `go_source_module`). A release module cannot be `go install`ed: its
go.mod has `replace ... => ./api` (Flux) or `=> ./gitops-engine` (Argo CD), and the module zip the proxy serves
omits those nested modules. So: download the module (checksum-verified by Go), copy it to .tools/src, point each
such replace at the nested module downloaded at its pinned version, and `go build` the main package unmodified.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .command import Command
from .errors import CommandError, ToolError
from .tools import PROJECT_ROOT, pin_table

BUILD_TIMEOUT = 3600  # cold, 2 shared cores: source-controller alone took ~7 minutes unloaded
STAMP = ".servingops-build.json"


@dataclass(frozen=True)
class Engine:
    name: str
    version: str
    module: str
    main_package: str
    binary: str
    nested_modules: dict[str, str]
    links: tuple[str, ...]
    extra_files: tuple[str, ...]
    crds: str  # the release's own CRDs (folder in the module), copied to <home>/crds

    @property
    def pin(self) -> dict:
        """Everything that decides the build: a different pin means a rebuild."""
        return {
            "module": self.module,
            "version": self.version,
            "main_package": self.main_package,
            "nested_modules": self.nested_modules,
        }

    @property
    def home(self) -> Path:
        return engines_dir() / f"{self.name}-{self.version}"

    @property
    def bin_dir(self) -> Path:
        return self.home / "bin"

    @property
    def path(self) -> Path:
        return self.bin_dir / self.binary

    @property
    def crd_dir(self) -> Path:
        return self.home / "crds"


@cache
def pinned_engines() -> dict[str, Engine]:
    data = pin_table()
    return {
        name: Engine(
            name=name,
            version=entry["version"],
            module=entry["go_source_module"],
            main_package=entry["main_package"],
            binary=entry["binary"],
            nested_modules=dict(entry.get("nested_modules", {})),
            links=tuple(entry.get("links", ())),
            extra_files=tuple(entry.get("extra_files", ())),
            crds=entry.get("crds", ""),
        )
        for name, entry in data.items()
        if "go_source_module" in entry
    }


def engines_dir() -> Path:
    """$SERVINGOPS_ENGINES_DIR, else .tools in this checkout (beside .tools/bin)."""
    if override := os.environ.get("SERVINGOPS_ENGINES_DIR"):
        return Path(override).resolve()
    return PROJECT_ROOT / ".tools"


def _stamp_ok(engine: Engine) -> bool:
    try:
        stamp = json.loads((engine.bin_dir / STAMP).read_text())
    except (OSError, ValueError):
        return False
    if stamp.get("pin") != engine.pin or not engine.path.is_file():
        return False
    if engine.crds and not any(engine.crd_dir.glob("*.yaml")):
        return False
    return stamp.get("sha256") == _sha256(engine.path)


def engine_path(name: str) -> Path:
    """The built binary of a pinned engine, or a ToolError that says how to build it."""
    engine = pinned_engines()[name]
    if not _stamp_ok(engine):
        raise ToolError(
            f"{name} {engine.version} is not built at {engine.path}: run `make engines`"
        )
    return engine.path


def install(name: str, *, log=print) -> Path:
    """Build the pinned engine into .tools/<name>-<version>/bin unless that build is already there."""
    engine = pinned_engines()[name]
    if _stamp_ok(engine):
        return engine.path
    go = shutil.which("go")
    if not go:
        raise ToolError(
            f"{name} {engine.version} must be built from its Go module and `go` is not on PATH: install Go "
            f"(the version {engine.module}'s go.mod asks for, or let GOTOOLCHAIN=auto fetch it)"
        )
    source = _download(go, engine.module, engine.version)
    work = engines_dir() / "src" / f"{name}-{engine.version}"
    if work.exists():
        shutil.rmtree(work, onerror=_make_writable_and_retry)
    shutil.copytree(source, work)
    _make_tree_writable(work)
    replaces = _local_replaces(go, work)
    for nested, version in engine.nested_modules.items():
        if nested not in replaces:
            raise ToolError(f"{engine.module}@{engine.version} no longer replaces {nested}: update tools.toml")
        nested_dir = _download(go, nested, version)
        Command((go, "mod", "edit", f"-replace={nested}={nested_dir}"), cwd=work).run()
    missing = sorted(set(replaces) - set(engine.nested_modules))
    if missing:
        raise ToolError(f"{engine.module}@{engine.version} replaces {missing} with folders: pin them in tools.toml")
    engine.bin_dir.mkdir(parents=True, exist_ok=True)
    log(f"{name} {engine.version}: go build {engine.module} {engine.main_package} (minutes when cold)")
    env = {"GOFLAGS": "-mod=mod -buildvcs=false", "GOWORK": "off"}
    Command(
        (go, "build", "-trimpath", "-o", str(engine.path), engine.main_package), cwd=work, env=env,
        timeout=BUILD_TIMEOUT,
    ).run()
    for link in engine.links:
        target = engine.bin_dir / link
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(engine.binary)
    for extra in engine.extra_files:
        copy = engine.bin_dir / Path(extra).name
        shutil.copyfile(work / extra, copy)
        copy.chmod(0o755)
    if engine.crds:
        if engine.crd_dir.exists():
            shutil.rmtree(engine.crd_dir)
        engine.crd_dir.mkdir()
        for crd in sorted((work / engine.crds).glob("*.yaml")):
            if crd.name != "kustomization.yaml":
                shutil.copyfile(crd, engine.crd_dir / crd.name)
    (engine.bin_dir / STAMP).write_text(json.dumps({"pin": engine.pin, "sha256": _sha256(engine.path)}, indent=1))
    return engine.path


def redis_path(*, log=print) -> Path:
    """The in-memory Redis Argo CD caches in, built from tools/redis (rebuilt when its sources change)."""
    entry = pin_table()["argocd-redis"]
    source = PROJECT_ROOT / entry["go_module_dir"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(source.iterdir()) if p.is_file())).hexdigest()
    target = engines_dir() / f"redis-{entry['version']}" / "bin" / entry["binary"]
    stamp = target.parent / STAMP
    if target.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("sources") == digest:
        return target
    go = shutil.which("go")
    if not go:
        raise ToolError("the in-memory Redis for Argo CD is built from tools/redis: install Go")
    log(f"redis (miniredis {entry['version']}): go build {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    Command((go, "build", "-trimpath", "-o", str(target), "."), cwd=source, env={"GOWORK": "off"},
            timeout=BUILD_TIMEOUT).run()
    stamp.write_text(json.dumps({"sources": digest}))
    return target


def _download(go: str, module: str, version: str) -> Path:
    try:
        out = Command((go, "mod", "download", "-json", f"{module}@{version}"), timeout=900).run(check=False)
        info = json.loads(out.stdout)
    except (CommandError, ValueError) as exc:
        raise ToolError(f"cannot download {module}@{version} from the Go module proxy: {exc}") from exc
    if info.get("Error") or not info.get("Dir"):
        raise ToolError(f"cannot download {module}@{version}: {info.get('Error', out.stderr.strip())}")
    return Path(info["Dir"])


def _local_replaces(go: str, work: Path) -> dict[str, str]:
    """The go.mod replaces that point at a folder inside the module (the nested modules the zip omits)."""
    mod = json.loads(Command((go, "mod", "edit", "-json"), cwd=work).run().stdout)
    return {
        r["Old"]["Path"]: r["New"]["Path"]
        for r in mod.get("Replace") or []
        if r["New"]["Path"].startswith("./") and not (work / r["New"]["Path"] / "go.mod").exists()
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _make_tree_writable(root: Path) -> None:
    """The module cache is read-only; the copy must not be, or go mod edit and the next rmtree fail."""
    for path in (root, *root.rglob("*")):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _make_writable_and_retry(func, path, _exc_info) -> None:
    os.chmod(os.path.dirname(path), 0o755)
    os.chmod(path, 0o755)
    func(path)


if __name__ == "__main__":  # `make engines`: build every pinned engine (and Argo CD's Redis) once
    for pinned in pinned_engines():
        print(f"{pinned} {pinned_engines()[pinned].version}: {install(pinned)}")
    print(f"redis: {redis_path()}")
