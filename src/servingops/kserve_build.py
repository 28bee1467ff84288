"""KServe's own controller manager (`cmd/manager`), built from its Go module at the chosen release.

The Go module of github.com/kserve/kserve carries the manager's source, its config/ (webhook manifests) and a
go.mod whose `replace` lines only a main-module build honours: so the module folder is copied out of the module
cache and built in place, unchanged. The Knative Service CRD comes from the knative.dev/serving module the same
go.mod requires (KServe's Knative mode needs the CRD, not Knative itself).

Everything lands in .tools/kserve-<tag>/ and is reused while the module's checksum (pinned in data/tools.toml)
matches; a build takes about 6 minutes on 2 cores.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .command import Command
from .errors import CommandError, ToolError
from .tools import PROJECT_ROOT, pin_table

BUILD_TIMEOUT = 3600
KNATIVE_SERVICE_CRD = "config/core/300-resources/service.yaml"


@dataclass(frozen=True)
class ManagerPin:
    tag: str
    module: str
    package: str
    module_sum: str


@cache
def manager_pins() -> dict[str, ManagerPin]:
    entry = pin_table()["kserve-manager"]
    return {
        tag: ManagerPin(tag, entry["module"], entry["package"], module_sum)
        for tag, module_sum in entry["module_sum"].items()
    }


@dataclass(frozen=True)
class KServeBuild:
    """A built manager and the files that come with it."""

    tag: str
    root: Path

    @property
    def manager(self) -> Path:
        return self.root / "bin" / "manager"

    @property
    def source(self) -> Path:
        return self.root / "src"

    @property
    def webhook_manifests(self) -> Path:
        return self.source / "config" / "webhook" / "manifests.yaml"

    @property
    def knative_service_crd(self) -> Path:
        return self.root / "knative-serving-service-crd.yaml"

    @property
    def stamp(self) -> Path:
        return self.root / "built-from"


def build_root(tag: str) -> Path:
    base = Path(os.environ["SERVINGOPS_TOOLS_DIR"]).parent if os.environ.get("SERVINGOPS_TOOLS_DIR") else PROJECT_ROOT / ".tools"
    return base / f"kserve-{tag}"


def ensure(tag: str, log=print) -> KServeBuild:
    """The manager for KServe `tag`, built once (cached by the pinned module checksum)."""
    pins = manager_pins()
    if tag not in pins:
        raise ToolError(f"no KServe manager pin for {tag}: pinned releases are {', '.join(pins)} (data/tools.toml)")
    pin = pins[tag]
    build = KServeBuild(tag, build_root(tag))
    if _built(build, pin):
        return build
    build.root.parent.mkdir(parents=True, exist_ok=True)
    with open(build.root.parent / f".kserve-{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second caller (another test worker) waits, then finds the build
        if not _built(build, pin):
            _build(build, pin, log)
    return build


def _built(build: KServeBuild, pin: ManagerPin) -> bool:
    return (build.stamp.is_file() and build.stamp.read_text().strip() == pin.module_sum and build.manager.is_file()
            and build.knative_service_crd.is_file())


def _build(build: KServeBuild, pin: ManagerPin, log) -> None:
    tag = pin.tag
    go = shutil.which("go")
    if not go:
        raise ToolError(
            f"KServe's manager {tag} is not built in {build.root} and `go` is not on PATH: install Go "
            "(the Go module proxy must be reachable) and run the command again"
        )
    log(f"kserve manager {tag}: building {pin.module}@{tag} {pin.package} (about 6 minutes on 2 cores, once)")
    module = _download(go, f"{pin.module}@{tag}")
    if module["Sum"] != pin.module_sum:
        raise ToolError(f"{pin.module}@{tag} has checksum {module['Sum']}, but {pin.module_sum} is pinned")
    if build.root.exists():
        shutil.rmtree(build.root)
    build.root.mkdir(parents=True)
    shutil.copytree(module["Dir"], build.source)
    for path in [build.source, *build.source.rglob("*")]:  # the module cache is read-only
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)
    Command(
        (go, "build", "-trimpath", "-o", str(build.manager), pin.package),
        cwd=build.source, env={"CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}, timeout=BUILD_TIMEOUT,
    ).run()
    knative = _required_version(build.source / "go.mod", "knative.dev/serving")
    serving = _download(go, f"knative.dev/serving@{knative}")
    shutil.copyfile(Path(serving["Dir"]) / KNATIVE_SERVICE_CRD, build.knative_service_crd)
    build.stamp.write_text(pin.module_sum + "\n")
    log(f"kserve manager {tag}: built into {build.manager}")


def _download(go: str, module_at_version: str) -> dict:
    try:
        out = Command((go, "mod", "download", "-json", module_at_version), timeout=BUILD_TIMEOUT).run()
    except CommandError as exc:
        raise ToolError(f"cannot download the Go module {module_at_version}: {exc}") from exc
    return json.loads(out.stdout)


def _required_version(go_mod: Path, module: str) -> str:
    """The version go.mod resolves `module` to (a replace line wins over the require line)."""
    text = go_mod.read_text()
    for pattern in (rf"^\s*{re.escape(module)}\s+=>\s+{re.escape(module)}\s+(v\S+)",
                    rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)"):
        if match := re.search(pattern, text, re.MULTILINE):
            return match.group(1)
    raise ToolError(f"{go_mod} does not require {module}")
