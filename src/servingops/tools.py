"""Pinned kustomize and kubeconform: find, install and locate them.

Pins live in data/tools.toml. Everything else in this package asks `tool_path(name)` for a binary.
The Kubernetes control plane pinned in the same file is built differently: see controlplane.py.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import re
import shutil
import tarfile
import tomllib
import urllib.request
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .command import Command
from .errors import CommandError, ToolError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SEMVER = re.compile(r"v\d+\.\d+\.\d+")
# Go embeds the main module's path and version in every binary it builds (read by `go version -m`).
GO_BUILDINFO_MODULE = re.compile(rb"\nmod\t([^\t\n]+)\t(v[^\t\n]+)\t")
DOWNLOAD_TIMEOUT = 120
GO_INSTALL_TIMEOUT = 1200


@dataclass(frozen=True)
class Tool:
    name: str
    version: str
    go_package: str
    version_args: tuple[str, ...]
    release_url: str
    sha256: dict[str, str]

    @property
    def go_module(self) -> str:
        return self.go_package.split("/cmd/")[0]


@cache
def pin_table() -> dict[str, Any]:
    """data/tools.toml, parsed once: the pins of every tool, engine and build this package installs."""
    return tomllib.loads(resources.files(__package__).joinpath("data/tools.toml").read_text())


@cache
def pinned_tools() -> dict[str, Tool]:
    data = pin_table()
    return {
        name: Tool(
            name=name,
            version=entry["version"],
            go_package=entry["go_package"],
            version_args=tuple(entry["version_args"]),
            release_url=entry["release_url"],
            sha256=dict(entry.get("sha256", {})),
        )
        for name, entry in data.items()
        if "go_package" in entry  # `go install`-able tools; the others are built by controlplane.py / engines.py
    }


def is_checkout() -> bool:
    """Is servingops running from a source checkout of this project (not installed from a wheel or git URL)?"""
    return (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "src" / "servingops").is_dir()


def cache_dir() -> Path:
    """Where servingops keeps what it builds or downloads: never inside the repository it checks.

    $SERVINGOPS_CACHE_DIR; else .cache in a source checkout of servingops (the project's own tests and Makefile);
    else the user's cache folder ($XDG_CACHE_HOME/servingops, ~/.cache/servingops).
    """
    if override := os.environ.get("SERVINGOPS_CACHE_DIR"):
        return Path(override)
    if is_checkout():
        return PROJECT_ROOT / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "servingops"


def tools_dir() -> Path:
    """Where installed tools live: $SERVINGOPS_TOOLS_DIR, else .tools/bin in this checkout, else the user's cache."""
    if override := os.environ.get("SERVINGOPS_TOOLS_DIR"):
        return Path(override).resolve()
    return PROJECT_ROOT / ".tools" / "bin" if is_checkout() else cache_dir() / "tools" / "bin"


def binary_version(path: Path, tool: Tool) -> str | None:
    """The version a binary reports; for `go install` builds that print 'development', Go's build info."""
    try:
        out = Command((str(path), *tool.version_args), timeout=30).run(check=False)
    except CommandError:
        return None
    if match := SEMVER.search(out.stdout + out.stderr):
        return match.group(0)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    for module, version in GO_BUILDINFO_MODULE.findall(data):
        if module.decode() == tool.go_module:
            return version.decode()
    return None


def tool_path(name: str) -> Path:
    """The verified binary for a pinned tool, or a ToolError that says how to get it."""
    return _verified_tool_path(name, os.environ.get(f"SERVINGOPS_{name.upper()}", ""), str(tools_dir()))


@cache
def _verified_tool_path(name: str, override: str, directory: str) -> Path:
    tool = pinned_tools()[name]
    path = Path(override) if override else Path(directory) / name
    if not path.exists():
        raise ToolError(f"{name} {tool.version} is not installed at {path}: run `make setup`")
    found = binary_version(path, tool)
    if found != tool.version:
        raise ToolError(
            f"{path} is {name} {found or '(unknown version)'}, but {tool.version} is pinned: run `make setup`"
        )
    return path


def install(name: str, *, allow_go: bool = True, allow_download: bool = True, log=print) -> Path:
    """Make tools_dir()/name the pinned version, trying PATH, then go install, then the release archive."""
    tool = pinned_tools()[name]
    target_dir = tools_dir()
    target = target_dir / name
    if target.exists() and binary_version(target, tool) == tool.version:
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    tried: list[str] = []

    on_path = _matching_on_path(tool, target_dir, tried)
    if on_path:
        _replace_with_symlink(target, on_path)
        log(f"{name} {tool.version}: using {on_path} from PATH")
        return target

    for method, allowed in ((_go_install, allow_go), (_download_release, allow_download)):
        if not allowed:
            tried.append(f"{method.__doc__} disabled")
            continue
        if method(tool, target, tried, log) and binary_version(target, tool) == tool.version:
            return target

    raise ToolError(
        f"{name} {tool.version} is missing ({'; '.join(tried)}). Fix one of: "
        f"put {name} {tool.version} on PATH; or install Go and run `make setup` "
        f"(it runs `go install {tool.go_package}@{tool.version}`); "
        f"or allow access to github.com and run `make setup` to download the release."
    )


def _matching_on_path(tool: Tool, skip_dir: Path, tried: list[str]) -> Path | None:
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(entry or ".") / tool.name
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        if candidate.resolve().parent == skip_dir.resolve():
            continue
        found = binary_version(candidate, tool)
        if found == tool.version:
            return candidate.resolve()
        tried.append(f"{candidate} is {found or 'an unknown version'}, not {tool.version}")
    if not tried:
        tried.append(f"no {tool.name} on PATH")
    return None


def _replace_with_symlink(target: Path, source: Path) -> None:
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(source)


def _go_install(tool: Tool, target: Path, tried: list[str], log) -> bool:
    """go install"""
    go = shutil.which("go")
    if not go:
        tried.append("`go` is not on PATH")
        return False
    log(f"{tool.name} {tool.version}: go install {tool.go_package}@{tool.version} (this takes about a minute)")
    if target.is_symlink():
        target.unlink()
    try:
        Command(
            (go, "install", f"{tool.go_package}@{tool.version}"),
            env={"GOBIN": str(target.parent), "CGO_ENABLED": "0"},
            timeout=GO_INSTALL_TIMEOUT,
        ).run()
    except CommandError as exc:
        tried.append(f"go install failed: {exc}")
        return False
    return True


def release_platform() -> str:
    system = platform.system().lower()
    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    return f"{system}_{machine}"


def _download_release(tool: Tool, target: Path, tried: list[str], log) -> bool:
    """release download"""
    plat = release_platform()
    expected = tool.sha256.get(plat)
    if not expected:
        tried.append(f"no pinned sha256 for the {plat} release archive")
        return False
    system, arch = plat.split("_")
    base = os.environ.get("SERVINGOPS_RELEASE_MIRROR")
    url = tool.release_url.format(version=tool.version, version_number=tool.version.removeprefix("v"), os=system, arch=arch)
    if base:  # an internal mirror with the same file names
        url = base.rstrip("/") + "/" + url.rsplit("/", 1)[1]
    log(f"{tool.name} {tool.version}: downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
            archive = response.read()
    except OSError as exc:
        tried.append(f"download of {url} failed: {exc}")
        return False
    actual = hashlib.sha256(archive).hexdigest()
    if actual != expected:
        tried.append(f"{url} has sha256 {actual}, expected {expected}")
        return False
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        member = next((m for m in tar.getmembers() if Path(m.name).name == tool.name and m.isfile()), None)
        if member is None:
            tried.append(f"{url} does not contain {tool.name}")
            return False
        payload = tar.extractfile(member).read()
    if target.is_symlink() or target.exists():
        target.unlink()
    target.write_bytes(payload)
    target.chmod(0o755)
    return True
