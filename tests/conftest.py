"""Shared fixtures. Real binaries and the real pinned CRDs (../shared/crds): nothing here is mocked away."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from servingops import render, schemas
from servingops.build import kustomize_build, split_documents


@pytest.fixture(scope="session")
def store() -> schemas.Store:
    """The schema store every validation test uses (built once; rebuilt only when its inputs change)."""
    return schemas.build_store()


@pytest.fixture(scope="module")
def template():
    """One snapshot of the template's working tree per test module: its renders share the compiled template."""
    with render.template_snapshot() as snapshot:
        yield snapshot


def copy_repo(template: Path, dst: Path, data: dict) -> Path:
    """`copier copy` of the snapshot with these answers (the others default) into dst."""
    return render.render(dst, data, template=template, vcs_ref=None)


def built_docs(repo: Path) -> list[dict]:
    """Every document `kustomize build` makes of each environment's platform and models layers."""
    docs = []
    for env in sorted((repo / "environments").iterdir()):
        for layer in ("platform", "models"):
            docs += [d for d, _ in split_documents(kustomize_build(env / layer))]
    return docs


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def terminal_sigint() -> None:
    """preexec_fn for a child that a test interrupts with SIGINT: Ctrl-C as in a terminal. A job started in the
    background by a non-interactive shell (`nohup make test &`) inherits SIGINT ignored, and Python keeps an
    ignored SIGINT ignored, so the child would never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def child_pids(pid: int) -> set[int]:
    """Direct children of `pid`, read from /proc (the processes a check starts may run in their own sessions,
    but keep their parent): what an interrupted run must leave behind is none of them."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found
