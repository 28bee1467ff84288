"""A generated repository that checks itself (issue 13): `make validate` on a fresh machine, a clean tree after
validating, `make diff` of the built manifests, and CI / pre-commit / Renovate configs checked by their own
linters (actionlint, `pre-commit validate-config`, check-jsonschema's vendored GitLab CI and Renovate schemas).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servingops import render
from servingops.tools import PROJECT_ROOT, tool_path

BIN = Path(sys.executable).parent
SERVINGOPS = BIN / "servingops"
SHARED_CRDS = PROJECT_ROOT.parent / "shared" / "crds"
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]
USER_PIN = "v0.16.1-gpu"
CI_BOTH = {"ci": ["github", "gitlab"], "vllm_image_tag": USER_PIN}


def run(argv: list, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=timeout)


def git(repo: Path, *args: str) -> str:
    result = run([*GIT, *args], repo)
    assert result.returncode == 0, result.stderr
    return result.stdout


def committed(repo: Path) -> Path:
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Generated")
    return repo


@pytest.fixture(scope="module")
def template():
    with render.template_snapshot() as snapshot:
        yield snapshot


@pytest.fixture(scope="module")
def ci_repo(template, tmp_path_factory) -> Path:
    return render.render(tmp_path_factory.mktemp("ci") / "repo", CI_BOTH, template=template, vcs_ref=None)


# --- a clean tree, and `make validate` / `make diff` --------------------------------------------------------


def test_validate_inside_a_generated_repo_leaves_it_clean(template, tmp_path):
    repo = committed(render.render(tmp_path / "repo", {}, template=template, vcs_ref=None))
    result = run([SERVINGOPS, "validate", "."], repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert git(repo, "status", "--porcelain", "--untracked-files=all", "--ignored") == ""


def test_the_generated_gitignore_covers_what_make_creates(template, tmp_path):
    repo = committed(render.render(tmp_path / "repo", {}, template=template, vcs_ref=None))
    for made in (".venv/bin/python", ".tools/bin/kustomize", ".cache/servingops/schemas/index.json",
                 "build/manifest-diff.md"):
        (repo / made).parent.mkdir(parents=True, exist_ok=True)
        (repo / made).write_text("")
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_make_diff_shows_what_changes_in_the_built_manifests(template, tmp_path):
    repo = committed(render.render(tmp_path / "repo", {}, template=template, vcs_ref=None))
    values = next((repo / "environments" / "gpu" / "models" / "values").glob("*.yaml"))
    values.write_text(values.read_text() + "spec:\n  predictor:\n    maxReplicas: 7\n")
    result = run(["make", "--no-print-directory", "diff", "BASE=HEAD", f"SERVINGOPS={SERVINGOPS}",
                  "DIFF_FLAGS=--output=markdown"], repo,
                 env={"SERVINGOPS_TOOLS_DIR": str(tool_path("kustomize").parent)})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("### Built manifests: 1 overlay changes against `HEAD`"), out[:500]
    assert "<code>environments/gpu/models</code>" in out
    assert re.search(r"^-\s+maxReplicas: \d+$", out, re.M) and re.search(r"^\+\s+maxReplicas: 7$", out, re.M), out
    # The worktree of the base is gone again; nothing was written into the repository.
    assert git(repo, "worktree", "list").count("\n") == 1
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == f" M {values.relative_to(repo)}\n"


@pytest.mark.slow
def test_make_validate_on_a_fresh_machine_runs_the_validator_of_the_template_version(tmp_path):
    """A repo copied from a git template: `make validate` creates .venv, installs servingops from the template at
    the recorded commit, links the pinned tools found on PATH, and validates offline against the given CRDs."""
    source = tmp_path / "model-serving-gitops"
    with render.template_snapshot() as snapshot:
        shutil.copytree(snapshot, source, symlinks=True)
    for extra in ("pyproject.toml", "README.md", "src"):
        (shutil.copytree if (PROJECT_ROOT / extra).is_dir() else shutil.copy2)(
            PROJECT_ROOT / extra, source / extra, **({"ignore": shutil.ignore_patterns("*.egg-info", "__pycache__")}
                                                      if (PROJECT_ROOT / extra).is_dir() else {}))
    git(source, "init", "-q", "-b", "main")
    git(source, "add", "-A")
    git(source, "commit", "-q", "-m", "Template")
    git(source, "tag", "v0.1.0")
    repo = tmp_path / "repo"
    result = run([BIN / "copier", "copy", "--quiet", "--defaults", "--vcs-ref=v0.1.0", source, repo], tmp_path)
    assert result.returncode == 0, result.stderr
    committed(repo)
    # A fresh machine: no servingops, no copier; kustomize and kubeconform only as matching binaries on PATH.
    path = os.pathsep.join([str(tool_path("kustomize").parent), "/usr/local/bin", "/usr/bin", "/bin"])
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("SERVINGOPS_") and k != "VIRTUAL_ENV"}
    result = subprocess.run(["make", "--no-print-directory", "validate", f"CRDS={SHARED_CRDS}"], cwd=repo,
                            capture_output=True, text=True, timeout=900,
                            env={**clean_env, "PATH": path, "HOME": str(tmp_path / "home"),
                                 "PIP_CACHE_DIR": str(Path.home() / ".cache" / "pip"),
                                 # lint's runtime-admission rule reads the runtimes KServe ships (no download yet)
                                 "SERVINGOPS_KSERVE_RUNTIMES": str(SHARED_CRDS.parent / "kserve" / "v0.20.0" / "runtimes")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (repo / ".venv" / "servingops-v0.1.0.installed").is_file()
    assert (repo / ".tools" / "bin" / "kustomize").is_symlink()
    assert "ok" in result.stdout.lower() or "valid" in result.stdout.lower(), result.stdout
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


# --- CI ---------------------------------------------------------------------------------------------------


def actionlint(repo: Path) -> subprocess.CompletedProcess:
    return run([tool_path("actionlint"), "-no-color", ".github/workflows/validate.yml"], repo)


def test_github_workflow_passes_actionlint(ci_repo):
    result = actionlint(ci_repo)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(ci_repo, tmp_path):
    """The check above can fail: the same workflow with an undefined step output is refused."""
    repo = shutil.copytree(ci_repo / ".github", tmp_path / ".github")
    workflow = repo / "workflows" / "validate.yml"
    workflow.write_text(workflow.read_text().replace("${{ github.event.pull_request.base.sha }}",
                                                     "${{ steps.nope.outputs.sha }}"))
    result = actionlint(tmp_path)
    assert result.returncode != 0 and "nope" in result.stdout, result.stdout


def test_github_workflow_validates_and_posts_the_built_diff(ci_repo):
    workflow = yaml.safe_load((ci_repo / ".github" / "workflows" / "validate.yml").read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
    steps = workflow["jobs"]["validate"]["steps"]
    runs = [step.get("run", "") for step in steps]
    assert any(r.strip() == "make tools" for r in runs) and any(r.strip() == "make validate" for r in runs)
    diff_step = next(r for r in runs if "make --no-print-directory diff" in r)
    assert "github.event.pull_request.base.sha" in str(steps) and "BASE=\"$BASE_SHA\"" in diff_step
    assert any("gh pr comment" in r for r in runs)
    assert workflow["jobs"]["validate"]["permissions"] == {"contents": "read", "pull-requests": "write"}


def test_gitlab_ci_only_when_asked_and_valid_by_gitlabs_schema(ci_repo, template, tmp_path):
    default = render.render(tmp_path / "repo", {}, template=template, vcs_ref=None)
    assert not (default / ".gitlab-ci.yml").exists() and (default / ".github" / "workflows" / "validate.yml").is_file()
    result = run([BIN / "check-jsonschema", "--builtin-schema", "vendor.gitlab-ci", ".gitlab-ci.yml"], ci_repo)
    assert result.returncode == 0, result.stdout + result.stderr
    script = "\n".join(yaml.safe_load((ci_repo / ".gitlab-ci.yml").read_text())["validate"]["script"])
    assert "make tools" in script and "make validate" in script and "CI_MERGE_REQUEST_DIFF_BASE_SHA" in script


# --- pre-commit and Renovate -------------------------------------------------------------------------------


def test_pre_commit_config_is_valid_and_runs_yaml_checks_the_validator_and_a_secret_scan(ci_repo):
    result = run([BIN / "pre-commit", "validate-config", ".pre-commit-config.yaml"], ci_repo)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((ci_repo / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert {"check-yaml", "gitleaks", "validate"} <= set(hooks)
    assert hooks["validate"]["entry"] == "make validate"


def renovate_matches(config: dict, repo: Path) -> list[dict]:
    """What Renovate's regex managers extract from the repository's files (JavaScript named groups as Python's)."""
    found = []
    for manager in config["customManagers"]:
        files = [re.compile(p.strip("/")) for p in manager["managerFilePatterns"]]
        for path in sorted(repo.rglob("*")):
            rel = path.relative_to(repo).as_posix()
            if path.is_file() and any(f.search(rel) for f in files):
                for pattern in manager["matchStrings"]:
                    found += [m.groupdict() | {"file": rel}
                              for m in re.finditer(pattern.replace("(?<", "(?P<"), path.read_text())]
    return found


def test_renovate_config_is_valid_by_renovates_schema(ci_repo):
    result = run([BIN / "check-jsonschema", "--builtin-schema", "vendor.renovate", "renovate.json"], ci_repo)
    assert result.returncode == 0, result.stdout + result.stderr


def test_renovate_bumps_your_image_pins_and_the_template(ci_repo, template, tmp_path):
    config = json.loads((ci_repo / "renovate.json").read_text())
    assert config["copier"]["enabled"] and config["pre-commit"]["enabled"]
    # The pin you typed (vllm_image_tag) is found; the template's pins (llama.cpp, Ollama) are left to copier update.
    assert renovate_matches(config, ci_repo) == [
        {"depName": "kserve/huggingfaceserver", "currentValue": USER_PIN,
         "file": "platform/runtimes/vllm/kustomization.yaml"},
    ]
    default = render.render(tmp_path / "repo", {}, template=template, vcs_ref=None)
    assert renovate_matches(config, default) == []
    assert (default / "platform" / "runtimes" / "vllm" / "kustomization.yaml").read_text().count("newTag:") == 1
