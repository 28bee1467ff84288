"""The pinned Kubernetes control-plane binaries (kube-apiserver with etcd, kube-controller-manager, kube-scheduler).

The pin is the [kube-control-plane] table of data/tools.toml. In order of preference:
  1. this checkout's build, .tools/kube-<version>/bin, where kube-apiserver runs the pinned etcd in-process;
  2. kube-apiserver + etcd of the pinned versions from $KUBEBUILDER_ASSETS, then PATH (the envtest convention:
     `setup-envtest use 1.34.4 -p path` prints such a folder);
  3. `go build` of the Go module in tools/kube (upstream k8s.io/kubernetes, unmodified) into .tools/kube-<version>/bin.
There is no release download yet: no upstream checksums are pinned for these binaries.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import ToolError
from .tools import GO_BUILDINFO_MODULE, PROJECT_ROOT, pin_table, tools_dir

GO_BUILD_TIMEOUT = 3 * 3600
# Go records every dependency in the binary's build info: "dep\t<module>\t<version>\t<sum>".
GO_BUILDINFO_DEP = re.compile(rb"\ndep\t([^\t\n]+)\t(v[^\t\n]+)\t")
EMBEDDED_ETCD_MODULE = "go.etcd.io/etcd/server/v3"


@dataclass(frozen=True)
class Pin:
    version: str
    etcd_version: str
    go_module_dir: Path
    binaries: tuple[str, ...]

    @property
    def build_dir(self) -> Path:
        """Where `go build` puts the binaries: one folder per version, so a new pin never reuses an old build."""
        return tools_dir().parent / f"kube-{self.version}" / "bin"

    def ldflags(self) -> str:
        """What upstream's hack/lib/version.sh stamps (without it /version says v0.0.0-master)."""
        major, minor = self.version.removeprefix("v").split(".")[:2]
        stamps = {"gitVersion": self.version, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
        flags = [
            f"-X {package}.{key}={value}"
            for key, value in stamps.items()
            for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        ]
        return " ".join(["-s", "-w", *flags])


@cache
def pin() -> Pin:
    data = pin_table()["kube-control-plane"]
    return Pin(
        version=data["version"],
        etcd_version=data["etcd_version"],
        go_module_dir=PROJECT_ROOT / data["go_module_dir"],
        binaries=tuple(data["binaries"]),
    )


@dataclass(frozen=True)
class ControlPlane:
    """The binaries to run. etcd is None when kube-apiserver runs etcd in-process (this project's build)."""

    kube_apiserver: Path
    etcd: Path | None
    source: str

    @property
    def embedded_etcd(self) -> bool:
        return self.etcd is None

    def identity(self) -> str:
        """A digest of the binaries themselves (keys the etcd snapshots taken with them)."""
        digest = hashlib.sha256()
        for path in (self.kube_apiserver, self.etcd):
            if path is not None:
                digest.update(_file_sha256(str(path), *_stat_key(path)).encode())
        return digest.hexdigest()


def _stat_key(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@cache
def _reported_version(path: str, size: int, mtime_ns: int, flag: str) -> str | None:
    try:
        out = subprocess.run((path, flag), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"v?(\d+\.\d+\.\d+)", out.stdout + out.stderr)
    return f"v{match.group(1)}" if match else None


def binary_version(path: Path) -> str | None:
    """`kube-apiserver --version` says "Kubernetes v1.34.4", `etcd --version` "etcd Version: 3.6.4"."""
    return _reported_version(str(path), *_stat_key(path), "--version")


@cache
def _go_dependency_version(path: str, size: int, mtime_ns: int, module: str) -> str | None:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    found = dict(GO_BUILDINFO_DEP.findall(data)) | dict(GO_BUILDINFO_MODULE.findall(data))
    version = found.get(module.encode())
    return version.decode() if version else None


def embedded_etcd_version(kube_apiserver: Path) -> str | None:
    return _go_dependency_version(str(kube_apiserver), *_stat_key(kube_apiserver), EMBEDDED_ETCD_MODULE)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find(tried: list[str] | None = None) -> ControlPlane | None:
    """The first matching set of binaries (see the module docstring), or None; `tried` collects why not."""
    tried = [] if tried is None else tried
    wanted = pin()
    built = wanted.build_dir / "kube-apiserver"
    if _executable(built):
        version, etcd = binary_version(built), embedded_etcd_version(built)
        if (version, etcd) == (wanted.version, wanted.etcd_version):
            return ControlPlane(built, None, f"{wanted.build_dir} (this project's build)")
        tried.append(f"{built} is kube-apiserver {version} with etcd {etcd}")
    folders = [("$KUBEBUILDER_ASSETS", Path(os.environ["KUBEBUILDER_ASSETS"]))] if os.environ.get("KUBEBUILDER_ASSETS") else []
    folders += [("PATH", Path(entry or ".")) for entry in os.environ.get("PATH", "").split(os.pathsep)]
    for where, folder in folders:
        apiserver, etcd = folder / "kube-apiserver", folder / "etcd"
        if not _executable(apiserver):
            continue
        versions = (binary_version(apiserver), binary_version(etcd) if _executable(etcd) else None)
        if versions == (wanted.version, wanted.etcd_version):
            return ControlPlane(apiserver, etcd, f"{folder} ({where})")
        tried.append(f"{folder} ({where}) has kube-apiserver {versions[0]} and etcd {versions[1] or '(none)'}")
    return None


def control_plane() -> ControlPlane:
    """The binaries to run, or a ToolError that says how to get them."""
    tried: list[str] = []
    found = find(tried)
    if found is None:
        raise ToolError(_missing_message(tried))
    return found


def binary(name: str) -> Path:
    """A pinned control-plane binary of this project's build (kube-controller-manager, kube-scheduler, ...)."""
    wanted = pin()
    path = wanted.build_dir / name
    if name not in wanted.binaries:
        raise ToolError(f"{name} is not part of the pinned control plane ({', '.join(wanted.binaries)})")
    if not _executable(path) or binary_version(path) != wanted.version:
        raise ToolError(f"{name} {wanted.version} is not built at {path}: run `servingops tools install kube-control-plane`")
    return path


def _missing_message(tried: list[str]) -> str:
    wanted = pin()
    return (
        f"kube-apiserver {wanted.version} with etcd {wanted.etcd_version} is missing"
        f"{' (' + '; '.join(tried) + ')' if tried else ''}. Fix one of: install Go (1.24 or newer) and run "
        f"`servingops tools install kube-control-plane` (`make test` does; it builds {wanted.go_module_dir} into "
        f"{wanted.build_dir}, about 20 minutes once); or set KUBEBUILDER_ASSETS to a folder with kube-apiserver "
        f"{wanted.version} and etcd {wanted.etcd_version} (`setup-envtest use {wanted.version.removeprefix('v')} -p path`)."
    )


def install(*, all_binaries: bool = False, log=print) -> ControlPlane:
    """Find the pinned control plane, else build it with Go (once: later calls find the build).
    all_binaries: also kube-controller-manager and kube-scheduler, which only this project's build has."""
    tried: list[str] = []
    if (found := find(tried)) is not None and (found.embedded_etcd or not all_binaries):
        return found
    wanted = pin()
    go = shutil.which("go")
    if not go:
        raise ToolError(_missing_message(tried + ["`go` is not on PATH"]))
    lock_path = wanted.build_dir.parent / ".build.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second caller waits for the first build, then finds it
        if (built := find()) is not None and built.embedded_etcd:
            return built
        _go_build(go, wanted, log)
    built = find()
    if built is None or not built.embedded_etcd:
        raise ToolError(f"`go build` in {wanted.go_module_dir} did not produce kube-apiserver {wanted.version} with etcd {wanted.etcd_version}")
    return built


def _go_build(go: str, wanted: Pin, log) -> None:
    if not (wanted.go_module_dir / "go.mod").is_file():
        raise ToolError(f"{wanted.go_module_dir}/go.mod is missing: build from a checkout of model-serving-gitops")
    out = wanted.build_dir.with_name("bin.partial")  # renamed when complete: a cut build never looks finished
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log_file = wanted.build_dir.parent / "build.log"
    argv = [go, "build", "-buildvcs=false", "-trimpath", "-ldflags", wanted.ldflags(), "-o", f"{out}/",
            *(f"./cmd/{name}" for name in wanted.binaries)]
    log(f"kube-control-plane {wanted.version}: go build {' '.join(wanted.binaries)} in {wanted.go_module_dir} "
        f"(about 20 minutes on 2 cores the first time; log: {log_file})")
    started = time.monotonic()
    with open(log_file, "w") as handle:
        proc = subprocess.run(argv, cwd=wanted.go_module_dir, env={**os.environ, "CGO_ENABLED": "0"},
                              stdout=handle, stderr=subprocess.STDOUT, timeout=GO_BUILD_TIMEOUT)
    if proc.returncode != 0:
        tail = " | ".join(log_file.read_text().strip().splitlines()[-5:])
        raise ToolError(f"`go build` in {wanted.go_module_dir} failed (exit {proc.returncode}): {tail}")
    shutil.rmtree(wanted.build_dir, ignore_errors=True)
    out.rename(wanted.build_dir)
    seconds = time.monotonic() - started
    (wanted.build_dir.parent / "build-seconds").write_text(f"{seconds:.0f}\n")  # for scripts/bench-server
    log(f"kube-control-plane {wanted.version}: built in {seconds:.0f} s into {wanted.build_dir}")
