"""What a KServe release installs and admits, for the checks that must match the cluster a repo targets.

- `shipped_runtimes(tag)`: the ClusterServingRuntimes KServe installs by default (config/runtimes at that tag),
  read from ../shared/kserve/<tag>/runtimes beside this checkout (else the pinned upstream files, fetched once
  into .cache/upstream: schemas.release_files_root), or from $SERVINGOPS_KSERVE_RUNTIMES (a folder of that
  release's config/runtimes files). overlays-catalog/releases.yml summarises them (releases.shipped_runtimes).
- `blocked_env_vars(tag)`: the environment variables KServe's admission webhooks refuse in runtime and
  InferenceService containers (releases.yml `blocked_env_vars`, from pkg/validation/env_policy.go).
- `priority_collision(new, existing)`: the model format two runtime specs both auto-select with one priority
  over a shared protocol, which KServe's runtime webhook refuses (validateServingRuntimePriority).
- `repo_release(root)`: the release tag a generated repo targets (its kserve_version in releases.yml).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import yaml

from . import releases, schemas
from .errors import InputError, SchemaError

def repo_release(root: Path | None) -> str:
    """The KServe release tag a generated repo targets: its recorded kserve_version (overlays-catalog/releases.yml),
    else the template's default release."""
    version = releases.recorded_version([root]) if root is not None else None
    return str(releases.release(version)["tag"])


DEFAULT_RELEASE = repo_release(None)


def runtimes_dir(tag: str) -> Path:
    if override := os.environ.get("SERVINGOPS_KSERVE_RUNTIMES"):
        return Path(override)
    try:
        return schemas.release_files_root() / "kserve" / tag / "runtimes"
    except SchemaError as exc:
        raise InputError(f"{exc}; or point SERVINGOPS_KSERVE_RUNTIMES at KServe {tag}'s config/runtimes") from exc


@functools.cache
def shipped_runtimes(tag: str) -> tuple[dict, ...]:
    """The ClusterServingRuntime documents KServe `tag` installs. Missing data is an error, never an empty list."""
    folder = runtimes_dir(tag)
    files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    docs = tuple(
        doc for file in files for doc in yaml.load_all(file.read_text(), Loader=schemas.YAML_LOADER)
        if isinstance(doc, dict) and doc.get("kind") == "ClusterServingRuntime"
    )
    if not docs:
        raise InputError(
            f"no ClusterServingRuntimes of KServe {tag} in {folder}: put that release's config/runtimes/*.yaml "
            "there or point SERVINGOPS_KSERVE_RUNTIMES at a folder holding them"
        )
    return docs


def blocked_env_vars(tag: str) -> tuple[str, ...]:
    rows = releases.table()["kserve"].values()
    row = next((row for row in rows if row["tag"] == tag), None)
    if row is None:
        raise InputError(f"KServe release {tag} is unknown: use one of {', '.join(r['tag'] for r in rows)}")
    return tuple(row["blocked_env_vars"])


def auto_formats(spec: dict) -> list[dict]:
    """The model formats a runtime spec auto-selects (autoSelect: true)."""
    return [f for f in spec.get("supportedModelFormats") or [] if isinstance(f, dict) and f.get("autoSelect") is True]


def priority_collision(new: dict, existing: dict) -> str | None:
    """validateServingRuntimePriority (symmetric): the model format both auto-select with the same priority.
    A disabled runtime collides with nothing (the webhook admits it, and skips it as the existing one)."""
    if bool(new.get("multiModel")) != bool(existing.get("multiModel")) or True in (new.get("disabled"),
                                                                                     existing.get("disabled")):
        return None
    if not set(map(str, new.get("protocolVersions") or [])) & set(map(str, existing.get("protocolVersions") or [])):
        return None
    for a in auto_formats(existing):
        for b in auto_formats(new):
            if (str(a.get("name", "")).lower() == str(b.get("name", "")).lower()
                    and a.get("version") == b.get("version")
                    and a.get("priority") is not None and a.get("priority") == b.get("priority")):
                return f"{b.get('name')} (version {b.get('version')}, priority {b.get('priority')})"
    return None
