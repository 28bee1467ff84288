"""Finding what to build and building it: kustomization folders and manifest files, kustomize runs, YAML read the
way Kubernetes reads it, and report printing. The layer `validate` (schemas) and `lint` (cross-object rules) both
stand on; it imports neither of them.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .command import Command
from .errors import CommandError, InputError
from .tools import tool_path

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MANIFEST_SUFFIXES = (".yaml", ".yml")


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


# kustomize's report of a YAML syntax error, deep inside its chain of "accumulating resources from ..." messages.
MALFORMED_YAML = re.compile(r"MalformedYAMLError: yaml: line (\d+): (.*?) in File: (\S+)")
RECURSED_PATH = re.compile(r"recursed accumulation of path '([^']+)'")


def explain_build_error(message: str, overlay: Path) -> str:
    """A kustomize build error, short: a YAML syntax error as `<file>:<line>: <problem>`, anything else as is."""
    found = MALFORMED_YAML.search(message)
    if not found:
        return message
    line, problem, name = found.groups()
    folders = RECURSED_PATH.findall(message[:found.start()])
    path = Path(folders[-1]) / name if folders else overlay / name
    try:  # kustomize's line numbers are off (it drops the leading comments): the YAML parser's mark is exact
        list(yaml.safe_load_all(path.read_text()))
    except yaml.MarkedYAMLError as exc:
        if exc.problem_mark is not None:  # where the construct opened (a '[' or a quote), and what broke it
            line, problem = exc.problem_mark.line + 1, exc.problem or problem
            if exc.context_mark is not None and exc.context:
                problem = f"{exc.context} here: {problem} on line {line}"
                line = exc.context_mark.line + 1
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        pass
    return f"{display_path(path)}:{line}: not valid YAML: {problem} (fix the file: kustomize cannot read it)"


def plural(count: int, noun: str) -> str:
    """'1 finding', '2 findings': counts in reports read as English."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class Target:
    """Something to validate: a kustomization folder (built first) or a plain manifest file."""

    path: Path

    @property
    def is_kustomization(self) -> bool:
        return self.path.is_dir()


# --- finding what to validate ------------------------------------------------------------------------


def kustomization_file(folder: Path) -> Path | None:
    return next((folder / n for n in KUSTOMIZATION_FILES if (folder / n).is_file()), None)


def kustomization_refs(folder: Path, fields: Sequence[str] = ("resources", "bases", "components", "patches")) -> list[Path]:
    """The paths the kustomization in `folder` names under `fields` (a patch by its `path`), resolved.
    No kustomization, or one that is not valid YAML (kustomize reports that), names nothing."""
    kfile = kustomization_file(folder)
    try:
        entries = _named_paths(kfile.read_text(), tuple(fields)) if kfile else ()
    except (UnicodeDecodeError, OSError):
        entries = ()
    return [(folder / e).resolve() for e in entries]


@functools.lru_cache(maxsize=4096)
def _named_paths(kustomization: str, fields: tuple[str, ...]) -> tuple[str, ...]:
    """The relative paths a kustomization's text names under `fields` (the matrix reads the same texts in every
    render: parsed once)."""
    try:
        spec = yaml.load(kustomization, Loader=YAML_LOADER)
    except yaml.YAMLError:
        return ()
    if not isinstance(spec, dict):
        return ()
    entries = [e.get("path") if isinstance(e, dict) else e for name in fields for e in spec.get(name) or []]
    return tuple(e for e in entries if isinstance(e, str))


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


def split_documents(text: str, known: dict[str, Any] | None = None) -> list[tuple[dict, str]]:
    """(parsed, source text) for each non-empty YAML document, cut at the parser's own document boundaries
    (a `---` line inside a block scalar stays where it is). `known` (source text -> parsed) is read and filled:
    a document seen before is not constructed again, and callers share its parsed object (read it, never change it)."""
    docs = []
    loader = YAML_LOADER(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            source = text[node.start_mark.index : node.end_mark.index]
            if known is not None and source in known:
                parsed = known[source]
            else:
                parsed = loader.construct_document(node)
                if known is not None:
                    known[source] = parsed
            if parsed:
                docs.append((parsed, source))
    finally:
        loader.dispose()
    return docs


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
