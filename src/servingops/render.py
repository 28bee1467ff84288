"""Render the Copier template in-process (copier's Python API): the demo, the tests and the matrix use this."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import copier
import yaml

from .errors import InputError
from .tools import PROJECT_ROOT

TEMPLATE_ROOT = PROJECT_ROOT
CATALOG = PROJECT_ROOT / "overlays-catalog"


def catalog(name: str) -> Any:
    """One of the catalog files (runtimes, components, models): the same data copier.yml reads."""
    return yaml.safe_load((CATALOG / f"{name}.yml").read_text())


def render(dst: Path, data: dict[str, Any] | None = None, *, template: Path | str = TEMPLATE_ROOT,
           vcs_ref: str | None = "HEAD") -> Path:
    """`copier copy --defaults` with `data` overriding answers. vcs_ref=None renders a plain folder as is."""
    with warnings.catch_warnings():
        # Rendering the working tree of this checkout (uncommitted changes included) is the point here.
        warnings.simplefilter("ignore", copier.errors.DirtyLocalWarning)
        copier.run_copy(
            str(template), str(dst), data=data or {}, defaults=True, vcs_ref=vcs_ref, quiet=True, unsafe=False
        )
    return dst


@contextmanager
def template_snapshot() -> Iterator[Path]:
    """The template as it is in the working tree, copied to a folder without git.

    Copier clones a git template for every copy; rendering many answer sets from one plain snapshot skips that.
    """
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=TEMPLATE_ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    with tempfile.TemporaryDirectory(prefix="servingops-template-") as tmp:
        root = Path(tmp) / "template"
        for rel in filter(None, files):
            if not rel.startswith(("copier.yml", "template/", "overlays-catalog/", "jinja/")):
                continue
            source, target = TEMPLATE_ROOT / rel, root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                target.symlink_to(source.readlink())
            elif source.exists():
                shutil.copy2(source, target)
        yield root


def load_answers(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise InputError(f"{path}: an answers file is a YAML mapping of question: answer")
    return data
