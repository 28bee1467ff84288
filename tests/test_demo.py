"""`servingops demo --out DIR` replaces only its own earlier output (issue 15): never a Git repository, never a
folder that merely looks generated."""

from __future__ import annotations

import subprocess

import pytest

from servingops import cli
from servingops.errors import ServingOpsError


def test_demo_refuses_a_git_repository_and_leaves_it_intact(tmp_path, capsys):
    repo = tmp_path / "my-repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    # Looks like a generated repo, and even carries the demo marker: a .git folder still wins.
    for name in (".copier-answers.yml", cli.DEMO_MARKER, "README.md"):
        (repo / name).write_text("mine\n")
    assert cli.main(["demo", "--out", str(repo)]) == 1
    assert "is a Git repository" in capsys.readouterr().err
    assert (repo / ".git" / "HEAD").is_file()
    assert sorted(p.name for p in repo.iterdir()) == sorted([".git", ".copier-answers.yml", cli.DEMO_MARKER, "README.md"])


def test_demo_refuses_a_generated_repo_without_its_marker(tmp_path, capsys):
    out = tmp_path / "generated"
    out.mkdir()
    (out / ".copier-answers.yml").write_text("_src_path: x\n")
    assert cli.main(["demo", "--out", str(out)]) == 1
    assert cli.DEMO_MARKER in capsys.readouterr().err
    assert (out / ".copier-answers.yml").read_text() == "_src_path: x\n"


def test_only_an_earlier_demo_is_replaceable(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / cli.DEMO_MARKER).write_text("")
    assert cli.replaceable_demo(out)
    (out / cli.DEMO_MARKER).unlink()
    with pytest.raises(ServingOpsError, match="not an earlier demo"):
        cli.replaceable_demo(out)
