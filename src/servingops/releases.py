"""The KServe releases a generated repository can target: overlays-catalog/releases.yml read from Python.

The same table copier.yml and jinja/lib.jinja read (the answer `kserve_version`); nothing here restates it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError
from .schemas import YAML_LOADER
from .tools import PROJECT_ROOT, is_checkout

# overlays-catalog/ in a checkout; installed from git or a wheel, the catalog packaged with servingops.
CATALOG_DIR = PROJECT_ROOT / "overlays-catalog" if is_checkout() else Path(__file__).resolve().parent / "catalog"
RELEASES_FILE = CATALOG_DIR / "releases.yml"
RUNTIMES_FILE = CATALOG_DIR / "runtimes.yml"
ANSWERS_FILE = ".copier-answers.yml"


@cache
def table() -> dict[str, Any]:
    return yaml.safe_load(RELEASES_FILE.read_text())


def versions() -> list[str]:
    """Every release the template supports, newest first (the answer's choices)."""
    return list(table()["kserve"])


def default_version() -> str:
    return table()["default"]


def release(version: str | None = None) -> dict[str, Any]:
    """One release's row; None is the default release. An unknown one is a one-line error."""
    version = version or default_version()
    rows = table()["kserve"]
    if version not in rows:
        raise InputError(f"kserve_version: unknown KServe release {version!r}: use one of {', '.join(rows)}")
    return rows[version]


def shipped_runtimes(version: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The ClusterServingRuntimes KServe installs itself at this release: name -> its supportedModelFormats
    ({name, version, autoSelect, priority}), as in config/runtimes of that tag."""
    return release(version)["shipped_runtimes"]


def runtime_pins(version: str | None = None) -> dict[str, dict[str, Any]]:
    """overlays-catalog/runtimes.yml with each runtime's image pin filled in (`tag`): what lib.jinja's RUNTIMES
    holds for that release."""
    row, pins = release(version), table()["pins"]
    runtimes = yaml.safe_load(RUNTIMES_FILE.read_text())
    return {
        key: {**rt, "tag": row["huggingfaceserver_tag"] if rt.get("kserve_image") else pins[key]["tag"]}
        for key, rt in runtimes.items()
    }


def version_for_huggingfaceserver_tag(tag: str) -> str | None:
    """The release whose huggingfaceserver image has this tag (v0.16.0-gpu -> v0.16), if any."""
    return next((v for v, row in table()["kserve"].items() if row["huggingfaceserver_tag"] == tag), None)


def recorded_version(paths: list[Path]) -> str | None:
    """The kserve_version in the .copier-answers.yml of the repository that holds the first path (searching up
    from it), if there is one. A repository generated before the question existed targeted KServe v0.16."""
    for path in paths[:1]:
        for folder in [path.resolve(), *path.resolve().parents]:
            answers = folder / ANSWERS_FILE
            if answers.is_file():
                data = yaml.load(answers.read_text(), Loader=YAML_LOADER) or {}  # libyaml: read per lint group
                if not isinstance(data, dict):
                    return None
                version = str(data.get("kserve_version") or "v0.16")
                release(version)  # an unknown release in the answers is an error, not a silent default
                return version
    return None


def crd_files(version: str | None = None, shared: Path | None = None) -> list[Path]:
    """The CRD files a cluster running this KServe release has: the common set (../shared/crds) without the
    release's `without` files and without serving.kserve.io, then that release's own serving.kserve.io CRDs
    (../shared/kserve/<tag>/crds). `servingops validate --server` installs exactly these."""
    row = release(version)["crds"]
    shared = shared or PROJECT_ROOT.parent / "shared"
    common, own = shared / "crds", shared / "kserve" / row["kserve"] / "crds"
    for folder in (common, own):
        if not folder.is_dir():
            raise InputError(f"CRD folder {folder} does not exist: pass --crds DIR (e.g. `kubectl get crd -o yaml`)")
    dropped = {common / path for path in row["without"]}
    files = [p for p in sorted(common.rglob("*.yaml"))
             if p not in dropped and p.relative_to(common).parts[0] != "serving.kserve.io"]
    return files + sorted(own.glob("*.yaml"))
