"""Render the Copier template in-process (copier's Python API): the demo, the tests and the matrix use this."""

from __future__ import annotations

import copy
import functools
import re
import shutil
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import copier
import jinja2
import yaml

from .command import Command
from .errors import InputError
from .tools import PROJECT_ROOT, is_checkout

TEMPLATE_ROOT = PROJECT_ROOT
# The catalog files: overlays-catalog/ in a checkout; installed from git or a wheel, the copy packaged with servingops
# (src/servingops/catalog links to overlays-catalog).
CATALOG = PROJECT_ROOT / "overlays-catalog" if is_checkout() else Path(__file__).resolve().parent / "catalog"


def catalog(name: str) -> Any:
    """One of the catalog files (runtimes, components, models): the same data copier.yml reads."""
    return yaml.safe_load((CATALOG / f"{name}.yml").read_text())


def secret_patterns() -> list[tuple[re.Pattern[str], str]]:
    """(regex, what) for every secret shape in overlays-catalog/secret-patterns.yml, the one list that copier's
    validators, the Helm values importer, lint and the tests all use."""
    return [(re.compile(p["pattern"]), p["what"]) for p in catalog("secret-patterns") if "pattern" in p]


def credential_env_name() -> re.Pattern[str]:
    """Environment variable names whose values are credentials (secret-patterns.yml's env_name entry)."""
    (entry,) = [p for p in catalog("secret-patterns") if "env_name" in p]
    return re.compile(entry["env_name"])


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
    files = Command(
        ("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"), cwd=TEMPLATE_ROOT, timeout=60
    ).run().stdout.split("\0")
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


def batch_mode() -> None:
    """Make copier cheap to run many times in this process (the matrix's render workers). Output is unchanged.

    - Copier builds a fresh Jinja environment per run and compiles every question string and template file
      again; with the same template and settings the compiled code is the same, so compile each source once.
    - It parses YAML answers (the catalog among them) with PyYAML's pure-Python loader; libyaml reads them the same.
      The catalog (about 9 KB of YAML) is parsed several times per run: parse each long text once per process.
    - It asks git, once per rendered file, whether the destination's index needs an executable bit: a fresh
      folder outside any git repository never does.
    - It parses copier.yml again on every run (half of a refused run's time): the same file parses the same, so
      keep one parse per file version and hand each run its own copy.
    - It asks git (subprocesses) several times per run whether the template is a repository or a bundle: the
      snapshot stays a plain folder.
    """
    if getattr(jinja2.Environment.compile, "servingops_cached", False):
        return
    copier_main, copier_template = sys.modules["copier._main"], sys.modules["copier._template"]
    for module, name in ((copier_main, "is_git_available"), (copier_template, "load_template_config"),
                         (copier_template, "get_repo")):
        if not callable(getattr(module, name, None)):  # copier internals moved: say so, loudly, before patching
            raise RuntimeError(f"{module.__name__}.{name} is gone: update render.batch_mode for this copier")
    original = jinja2.Environment.compile
    compiled: dict[tuple, Any] = {}

    def compile(self, source, name=None, filename=None, raw=False, defer_init=False):  # noqa: A001
        settings = (type(self), self.block_start_string, self.variable_start_string, self.comment_start_string,
                    self.line_statement_prefix, self.trim_blocks, self.lstrip_blocks, self.keep_trailing_newline,
                    self.autoescape, tuple(sorted(self.extensions)))
        key = (settings, source, name, filename, raw, defer_init)
        if key not in compiled:
            compiled[key] = original(self, source, name, filename, raw, defer_init)
        else:
            # Extensions' preprocess hooks still run: copier's yield tag resets its state there.
            self.preprocess(source, name, filename)
        return compiled[key]

    compile.servingops_cached = True
    jinja2.Environment.compile = compile
    # Copier and its Jinja filters parse YAML answers (the catalog among them) with PyYAML's pure-Python
    # loader; libyaml's loader reads the same documents the same way, several times faster, and the catalog's
    # text is the same in every run.
    if hasattr(yaml, "CSafeLoader"):
        yaml.safe_load = _cached_safe_load
    copier_main.is_git_available = lambda: False
    parse_config = copier_template.load_template_config
    parsed: dict[tuple, Any] = {}

    def load_template_config(conf_path: Path, quiet: bool = False) -> dict[str, Any]:
        stat = Path(conf_path).stat()
        key = (str(conf_path), stat.st_mtime_ns, stat.st_size, quiet)
        if key not in parsed:
            parsed[key] = parse_config(conf_path, quiet)
        return copy.deepcopy(parsed[key])

    copier_template.load_template_config = load_template_config
    # Copier asks git (two subprocesses) whether the template folder is a repository or a bundle, several times
    # per run; the snapshot is a plain folder for the worker's whole life.
    copier_template.get_repo = functools.cache(copier_template.get_repo)


def _cached_safe_load(stream: Any) -> Any:
    """yaml.safe_load with libyaml; a long text (the catalog, parsed several times per copier run) is parsed once
    per process and each caller gets its own copy."""
    if not isinstance(stream, str) or len(stream) < 1024:
        return yaml.load(stream, Loader=yaml.CSafeLoader)  # noqa: S506 (safe loader)
    return copy.deepcopy(_parse_long(stream))


@functools.lru_cache(maxsize=64)
def _parse_long(text: str) -> Any:
    return yaml.load(text, Loader=yaml.CSafeLoader)  # noqa: S506 (safe loader)


def load_answers(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise InputError(f"{path}: an answers file is a YAML mapping of question: answer")
    return data
