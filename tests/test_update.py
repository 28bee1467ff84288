"""`copier update` never loses work (issue 6): a real template history, the real copier CLI, real git repos.

`template_repo` builds a throwaway template repository from this working tree:
  v0.1.0      the template as it is
  (untagged)  bumps the vLLM image pin of the default KServe release in overlays-catalog/releases.yml
  v0.2.0      adds a namespace label and an .editorconfig, renames platform/networkpolicy.yaml to
              networkpolicy-serving.yaml, with the `_migrations` entry (docs/upgrading.md) that carries edits across,
              and changes the user-owned files' templates (values/*.yaml, local-patch.yaml): `_skip_if_exists`
              must keep the users' copies as they are
  (untagged)  work after the release: HEAD
Each test generates a repository from it with the copier CLI (what users run), commits, edits it the way a user
would and updates it, then checks the files, `git status`, the kustomize builds and strict offline validation.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servingops import releases, render
from servingops.tools import PROJECT_ROOT
from servingops.validate import kustomize_build, split_documents, validate

COPIER = Path(sys.executable).with_name("copier")
GIT = ("git", "-c", "user.name=t", "-c", "user.email=t@example.com")
STORE = PROJECT_ROOT / ".cache" / "schemas"

OLD_PIN = releases.runtime_pins()["vllm"]["tag"]  # the default release's huggingfaceserver, e.g. v0.20.0-gpu
NEW_PIN = re.sub(r"^(v?\d+\.\d+\.)(\d+)", lambda m: f"{m[1]}{int(m[2]) + 1}", OLD_PIN)  # v0.20.1-gpu
OWN_PIN = "v0.15.9-gpu"
VLLM_PIN_FILE = "platform/runtimes/vllm/kustomization.yaml"

# The documented rename pattern (docs/upgrading.md): after copier has removed the old file and written the new
# one, put the user's version (HEAD: update needs a clean tree) under the new name. v0.2.0 renames only.
MIGRATION = """_migrations:
  - version: v0.2.0
    command: >-
      if git cat-file -e HEAD:./platform/networkpolicy.yaml 2>/dev/null && test ! -e platform/networkpolicy.yaml;
      then git show HEAD:./platform/networkpolicy.yaml > platform/networkpolicy-serving.yaml; fi
"""
MISTRAL = '[{name: mistral-7b, runtime: vllm, storageUri: "hf://mistralai/Mistral-7B-Instruct-v0.3", gpus: 1}]'
REPLICAS = "spec:\n  predictor:\n    minReplicas: 2\n    maxReplicas: 5\n"
OWNER = "    team.example.com/owner: ml-platform\n"
# `git status` after updating a default repository from v0.1.0 to v0.2.0, besides the vLLM pin file.
RELEASE_CHANGES = {
    " M .copier-answers.yml",
    " M README.md",  # the runtime table names the pins
    " M platform/kustomization.yaml",
    " M platform/admin/namespace.yaml",
    " D platform/networkpolicy.yaml",
    "?? platform/networkpolicy-serving.yaml",
    "?? .editorconfig",
}
# What v0.2.0 adds to the templates of user-owned files: it must never reach an existing repository's copy.
USER_OWNED_RELEASE_LINE = "# v0.2.0: a line the template added to a file you own\n"
LIMITRANGE = """apiVersion: v1
kind: LimitRange
metadata:
  name: container-defaults
spec:
  limits:
    - type: Container
      defaultRequest:
        cpu: 100m
"""


# --------------------------------------------------------------------------------------------------- helpers


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def git(repo: Path, *args: str) -> str:
    result = run([*GIT, *args], repo)
    assert result.returncode == 0, result.stderr
    return result.stdout


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def copier(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([str(COPIER), *args], repo)


def update(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`copier update --defaults` (the recorded answers), to the newest release unless --vcs-ref says otherwise."""
    return copier(repo, "update", "--defaults", *args)


def generate(template: Path, dst: Path, *data: str, ref: str = "v0.1.0") -> Path:
    """`copier copy` at `ref` with default answers but `data` (key=value), then the first commit."""
    result = copier(dst.parent, "copy", "--quiet", "--defaults", f"--vcs-ref={ref}",
                    *(f"--data={d}" for d in data), str(template), str(dst))
    assert result.returncode == 0, result.stderr
    git(dst, "init", "-q", "-b", "main")
    commit(dst, "Generated")
    return dst


def make(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The generated Makefile, with this venv's copier on PATH and no make state leaking in from a `make test`."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["PATH"] = f"{COPIER.parent}{os.pathsep}{env.get('PATH', '')}"
    return run(["make", "--no-print-directory", *args], repo, env)


def status(repo: Path) -> set[str]:
    return set(git(repo, "status", "--porcelain", "--untracked-files=all").splitlines())


def files(repo: Path) -> set[str]:
    return {p.relative_to(repo).as_posix() for p in repo.rglob("*")
            if p.is_file() and p.relative_to(repo).parts[0] != ".git"}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: expected {old!r} exactly once"
    path.write_text(text.replace(old, new))


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def built(repo: Path, overlay: str, kind: str, name: str) -> dict:
    docs = [d for d, _ in split_documents(kustomize_build(repo / overlay))]
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def assert_valid(repo: Path) -> None:
    report = validate([repo], store_dir=STORE)
    assert report.ok, "\n".join(report.failures())


# ------------------------------------------------------------------------------------------ the template


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "model-serving-gitops"
    with render.template_snapshot() as snapshot:
        shutil.copytree(snapshot, root, symlinks=True)
    assert all(p.is_symlink() for p in (root / "template" / "components").iterdir())
    git(root, "init", "-q", "-b", "main")
    commit(root, "The template as it is")
    git(root, "tag", "v0.1.0")

    edit(root / "overlays-catalog/releases.yml", f"huggingfaceserver_tag: {OLD_PIN}\n", f"huggingfaceserver_tag: {NEW_PIN}\n")
    commit(root, "Bump the vLLM image pin")

    edit(root / "template/platform/admin/namespace.yaml.jinja", "audit: restricted\n",
         "audit: restricted\n    pod-security.kubernetes.io/enforce-version: latest\n")
    # The release also changes the templates of the files users own (values/*.yaml, local-patch.yaml).
    for owned in [*root.glob("template/environments/*/models/values/*.jinja"), *root.glob("template/models/*/local-patch.yaml.jinja")]:
        owned.write_text(USER_OWNED_RELEASE_LINE + owned.read_text())
    (root / "template/.editorconfig").write_text("root = true\n[*.{yaml,yml}]\nindent_style = space\nindent_size = 2\n")
    platform = root / "template/platform"
    (platform / "networkpolicy.yaml.jinja").rename(platform / "networkpolicy-serving.yaml.jinja")
    edit(platform / "kustomization.yaml.jinja", "  - networkpolicy.yaml\n", "  - networkpolicy-serving.yaml\n")
    edit(root / "copier.yml", "_migrations: []\n", MIGRATION)
    commit(root, "Rename the NetworkPolicy file, label the namespace, add .editorconfig")
    git(root, "tag", "v0.2.0")

    edit(root / "template/Makefile.jinja", "SHELL := /bin/bash\n", "SHELL := /bin/bash\n# next release\n")
    commit(root, "Work after v0.2.0")
    return root


# ------------------------------------------------------------------------------------------------- tests


def test_update_keeps_every_user_edit_and_brings_the_release(template_repo: Path, tmp_path: Path) -> None:
    repo = generate(template_repo, tmp_path / "repo")
    # A model added through the answers (README "Adding a model"), still at v0.1.0.
    added = update(repo, "--vcs-ref=v0.1.0", f"--data=custom_models={MISTRAL}")
    assert added.returncode == 0, added.stderr
    commit(repo, "Add mistral-7b")
    values = repo / "environments/gpu/models/values/mistral-7b.yaml"  # user-owned (_skip_if_exists)
    append(values, REPLICAS)
    isvc = repo / "models/qwen25-1-5b/inferenceservice.yaml"  # a generated manifest, edited in place
    edit(isvc, "serving.kserve.io/deploymentMode: Knative\n", "serving.kserve.io/deploymentMode: Knative\n" + OWNER)
    netpol = repo / "platform/networkpolicy.yaml"  # edited, then renamed by v0.2.0
    item = " " * 18 + "- "  # an entry of the NetworkPolicy's namespace list
    edit(netpol, f"{item}monitoring\n", f"{item}monitoring\n{item}observability\n")
    append(repo / "platform/kustomization.yaml", "  - limitrange.yaml\n")  # the user's own manifest, listed
    (repo / "platform/limitrange.yaml").write_text(LIMITRANGE)
    (repo / "NOTES.md").write_text("Runbook: ask #ml-platform before scaling mistral-7b.\n")
    commit(repo, "Local changes")
    mine = {p: p.read_text() for p in (values, isvc, netpol, repo / "platform/limitrange.yaml", repo / "NOTES.md")}

    refused = update(repo)  # to the newest release, v0.2.0, whose migration needs --trust
    assert refused.returncode == 4
    assert "unsafe feature: migrations" in refused.stderr and "--trust" in refused.stderr
    assert status(repo) == set()

    result = update(repo, "--trust")
    assert result.returncode == 0, result.stderr

    assert "_commit: v0.2.0\n" in (repo / ".copier-answers.yml").read_text()
    assert values.read_text() == mine[values]
    assert isvc.read_text() == mine[isvc]
    # User-owned files are never rewritten (copier's _skip_if_exists), edited or not, though v0.2.0 changed
    # their templates.
    owned = [*repo.glob("environments/*/models/values/*.yaml"), *repo.glob("models/*/local-patch.yaml")]
    assert len(owned) > 2 and not [p for p in owned if USER_OWNED_RELEASE_LINE in p.read_text()]
    assert (repo / "platform/limitrange.yaml").read_text() == mine[repo / "platform/limitrange.yaml"]
    assert (repo / "NOTES.md").read_text() == mine[repo / "NOTES.md"]
    # The rename: the user's edited file under its new name (v0.2.0 renamed without changing content).
    assert not netpol.exists()
    assert (repo / "platform/networkpolicy-serving.yaml").read_text() == mine[netpol]
    # The release arrived, merged with the user's line in the same kustomization.
    assert (repo / "platform/kustomization.yaml").read_text().endswith(
        "  - networkpolicy-serving.yaml\n  - networkpolicy-egress.yaml\n  - priorityclasses.yaml\n  - limitrange.yaml\n")
    assert f"    newTag: {NEW_PIN}  # the template's pin" in (repo / VLLM_PIN_FILE).read_text()
    assert "pod-security.kubernetes.io/enforce-version: latest" in (repo / "platform/admin/namespace.yaml").read_text()
    assert (repo / ".editorconfig").is_file()
    # The edits take effect in what the clusters get.
    mistral = built(repo, "environments/gpu/models", "InferenceService", "mistral-7b")
    assert (mistral["spec"]["predictor"]["minReplicas"], mistral["spec"]["predictor"]["maxReplicas"]) == (2, 5)
    qwen = built(repo, "environments/gpu/models", "InferenceService", "qwen25-1-5b")
    assert qwen["metadata"]["annotations"]["team.example.com/owner"] == "ml-platform"
    policy = built(repo, "environments/gpu/platform", "NetworkPolicy", "allow-serving-traffic")
    assert "observability" in str(policy["spec"]["ingress"])
    assert built(repo, "environments/gpu/platform", "LimitRange", "container-defaults")
    assert_valid(repo)
    assert status(repo) == RELEASE_CHANGES | {f" M {VLLM_PIN_FILE}"}


def test_own_image_tag_survives_a_pin_bump(template_repo: Path, tmp_path: Path) -> None:
    repo = generate(template_repo, tmp_path / "repo", f"vllm_image_tag={OWN_PIN}")
    assert f"newTag: {OWN_PIN}" in (repo / VLLM_PIN_FILE).read_text()

    result = update(repo, "--trust")
    assert result.returncode == 0, result.stderr

    pin = (repo / VLLM_PIN_FILE).read_text()
    assert f"newTag: {OWN_PIN}" in pin and NEW_PIN not in pin
    assert f"vllm_image_tag: {OWN_PIN}\n" in (repo / ".copier-answers.yml").read_text()
    assert f"`kserve/huggingfaceserver:{OWN_PIN}` (your pin)" in (repo / "README.md").read_text()
    assert status(repo) == RELEASE_CHANGES - {" M README.md"}


def hotfixed_repo(template: Path, dst: Path) -> Path:
    """A repo at v0.1.0 whose user hand-edited the vLLM pin line that v0.2.0 changes, and tuned a model."""
    repo = generate(template, dst)
    edit(repo / VLLM_PIN_FILE, f"newTag: {OLD_PIN}  #", f"newTag: {OLD_PIN}-hotfix1  # ours, CVE fix; was:")
    append(repo / "environments/gpu/models/values/qwen25-1-5b.yaml", REPLICAS)
    commit(repo, "Hotfix image")
    return repo


def test_conflict_ends_inline_unmerged_and_make_update_reports_it(template_repo: Path, tmp_path: Path) -> None:
    repo = hotfixed_repo(template_repo, tmp_path / "repo")

    result = make(repo, "update", "UPDATE_FLAGS=--trust")
    assert result.returncode != 0
    assert f"resolve the conflict markers in: {VLLM_PIN_FILE}" in result.stderr

    assert status(repo) == RELEASE_CHANGES | {f"UU {VLLM_PIN_FILE}"}  # nothing else touched
    assert git(repo, "diff", "--name-only", "--diff-filter=U").split() == [VLLM_PIN_FILE]
    text = (repo / VLLM_PIN_FILE).read_text()
    assert (
        "<<<<<<< before updating\n"
        f"    newTag: {OLD_PIN}-hotfix1  # ours, CVE fix; was: the template's pin: `copier update` keeps it current\n"
        "=======\n"
        f"    newTag: {NEW_PIN}  # the template's pin: `copier update` keeps it current\n"
        ">>>>>>> after updating\n"
    ) in text
    assert (repo / "environments/gpu/models/values/qwen25-1-5b.yaml").read_text().endswith(REPLICAS)
    assert "enforce-version: latest" in (repo / "platform/admin/namespace.yaml").read_text()


def test_conflict_rej_leaves_the_users_hunk_in_a_rej_file(template_repo: Path, tmp_path: Path) -> None:
    repo = hotfixed_repo(template_repo, tmp_path / "repo")

    result = update(repo, "--trust", "--conflict=rej")
    assert result.returncode == 0, result.stderr

    assert status(repo) == RELEASE_CHANGES | {f" M {VLLM_PIN_FILE}", f"?? {VLLM_PIN_FILE}.rej"}
    assert f"    newTag: {NEW_PIN}  #" in (repo / VLLM_PIN_FILE).read_text()
    assert f"+    newTag: {OLD_PIN}-hotfix1  # ours" in (repo / f"{VLLM_PIN_FILE}.rej").read_text()
    assert (repo / "environments/gpu/models/values/qwen25-1-5b.yaml").read_text().endswith(REPLICAS)


def test_changed_answers_add_and_remove_exactly_the_right_files(template_repo: Path, tmp_path: Path) -> None:
    repo = generate(template_repo, tmp_path / "repo", "runtimes=[vllm]", "catalog_models=[qwen25-1-5b, qwen25-7b]")
    dropped = ["models/qwen25-7b/inferenceservice.yaml", "models/qwen25-7b/kustomization.yaml"]
    dropped_mine = ["models/qwen25-7b/local-patch.yaml", "environments/gpu/models/values/qwen25-7b.yaml"]
    for path in dropped_mine:
        append(repo / path, REPLICAS)
    (repo / "models/qwen25-7b/NOTES.md").write_text("why we tried qwen25-7b\n")
    commit(repo, "Tune qwen25-7b")
    before = files(repo)
    assert not (repo / "platform/runtimes/ollama").exists()

    result = update(repo, "--trust", "--data=runtimes=[vllm, ollama]", "--data=catalog_models=[qwen25-1-5b, qwen3-4b]")
    assert result.returncode == 0, result.stderr

    added = {
        "platform/runtimes/ollama/kustomization.yaml",
        "platform/runtimes/ollama/servingruntime-ollama.yaml",
        "models/qwen3-4b/inferenceservice.yaml",
        "models/qwen3-4b/kustomization.yaml",
        "models/qwen3-4b/local-patch.yaml",
        "environments/gpu/models/values/qwen3-4b.yaml",
        "platform/networkpolicy-serving.yaml",  # the release's rename
        ".editorconfig",
    }
    removed = {*dropped, *dropped_mine, "platform/networkpolicy.yaml"}
    assert files(repo) == (before - removed) | added
    # A dropped model's files go, the user-owned ones too (the model is gone), but never silently: git shows
    # them deleted and keeps the user's version. A file of the user's own in the folder stays.
    assert {f" D {path}" for path in dropped + dropped_mine} <= status(repo)
    assert git(repo, "show", "HEAD:models/qwen25-7b/local-patch.yaml").endswith(REPLICAS)
    assert (repo / "models/qwen25-7b/NOTES.md").read_text() == "why we tried qwen25-7b\n"
    models_layer = (repo / "environments/gpu/models/kustomization.yaml").read_text()
    assert "qwen25-7b" not in models_layer and "../../../models/qwen3-4b" in models_layer
    assert "../../../platform/runtimes/ollama" in (repo / "environments/gpu/platform/kustomization.yaml").read_text()
    assert built(repo, "environments/gpu/platform", "ClusterServingRuntime", "kserve-ollama")
    assert_valid(repo)


def test_dirty_tree_is_refused_and_left_alone(template_repo: Path, tmp_path: Path) -> None:
    repo = generate(template_repo, tmp_path / "repo")
    append(repo / "models/qwen25-1-5b/local-patch.yaml", REPLICAS)
    (repo / "scratch.yaml").write_text("kind: ConfigMap\n")
    dirty = status(repo)

    result = update(repo, "--trust")
    assert result.returncode == 1
    assert "Destination repository is dirty" in result.stderr and "commit or stash" in result.stderr
    assert status(repo) == dirty
    assert "_commit: v0.1.0\n" in (repo / ".copier-answers.yml").read_text()


@pytest.mark.parametrize(("ref", "recorded", "advice"), [
    ("HEAD", "v0.2.0-1-g", "--vcs-ref=<tag> with a release newer than that commit"),  # after the newest release
    ("HEAD~2", "v0.1.0-1-g", "--vcs-ref=v0.2.0"),  # between releases: the newer one is named
])
def test_untagged_copy_make_update_says_which_ref(
    template_repo: Path, tmp_path: Path, ref: str, recorded: str, advice: str
) -> None:
    repo = generate(template_repo, tmp_path / "repo", ref=ref)
    answers = (repo / ".copier-answers.yml").read_text()
    version = next(line for line in answers.splitlines() if line.startswith("_commit: ")).removeprefix("_commit: ")
    assert version.startswith(recorded)
    if ref == "HEAD":  # what a bare `copier update` says here: true, but no help
        raw = update(repo, "--trust")
        assert raw.returncode == 1 and "Downgrades are not supported" in raw.stderr

    result = make(repo, "update")
    assert result.returncode != 0
    message = [line for line in result.stderr.splitlines() if line.startswith("make update:")]
    assert len(message) == 1, result.stderr
    assert message[0].startswith(
        f"make update: this repository was copied from the untagged template commit {version}; "
        f"run once: copier update --defaults --conflict inline {advice}"
    )
    assert status(repo) == set()
    if ref != "HEAD":  # the advice works
        followed = update(repo, "--conflict=inline", "--vcs-ref=v0.2.0", "--trust")
        assert followed.returncode == 0, followed.stderr
        assert "_commit: v0.2.0\n" in (repo / ".copier-answers.yml").read_text()


def test_make_update_check(template_repo: Path, tmp_path: Path) -> None:
    behind = generate(template_repo, tmp_path / "behind")
    result = make(behind, "update-check")
    assert result.returncode != 0 and "update-check] Error 1" in result.stderr  # the recipe's exit 1
    assert result.stdout == "template v0.2.0 is available (this repository is at v0.1.0): run make update\n"

    current = generate(template_repo, tmp_path / "current", ref="v0.2.0")
    result = make(current, "update-check")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "up to date: template v0.2.0 (newest release v0.2.0)\n"


def test_changelog_names_the_current_image_pins() -> None:
    """A pin bump reaches users on update: the CHANGELOG must say so (docs/upgrading.md "Image pins")."""
    changelog = (PROJECT_ROOT / "CHANGELOG.md").read_text()
    for name, runtime in releases.runtime_pins().items():  # the default KServe release's
        assert f"`{runtime['image']}:{runtime['tag']}`" in changelog, f"CHANGELOG.md: name the new {name} pin"


# --------------------------------------------------------------------------------- moving the KServe release

POOL_FILE = "components/inference-pool/inferencepool.yaml"


def test_kserve_v016_repo_updates_to_v020_keeping_a_hand_edit(template_repo: Path, tmp_path: Path) -> None:
    """`copier update -d kserve_version=v0.20` on a repo generated for KServe v0.16 (issue 10): the vLLM image,
    the InferencePool API and the README move, the user's edit stays, and the result validates against
    KServe v0.20's CRDs."""
    old, new = releases.release("v0.16"), releases.release("v0.20")
    repo = generate(template_repo, tmp_path / "repo", "kserve_version=v0.16")
    assert f"newTag: {old['huggingfaceserver_tag']}  #" in (repo / VLLM_PIN_FILE).read_text()
    assert f"apiVersion: {old['inference_pool_api']}\n" in (repo / POOL_FILE).read_text()
    assert_valid(repo)  # against v0.16's CRDs (the recorded release)
    isvc = repo / "models/qwen25-1-5b/inferenceservice.yaml"  # a generated manifest, edited in place
    edit(isvc, "serving.kserve.io/deploymentMode: Knative\n", "serving.kserve.io/deploymentMode: Knative\n" + OWNER)
    append(repo / "environments/gpu/models/values/qwen25-1-5b.yaml", REPLICAS)  # user-owned
    commit(repo, "Local changes")
    mine = isvc.read_text()
    # The v0.16 pool is not served by v0.20's Inference Extension: validating for v0.20 must say so.
    stale = validate([repo], store_dir=STORE, kserve_version="v0.20")
    assert any("InferencePool" in line and "no schema" in line for line in stale.failures()), stale.failures()

    result = update(repo, "--vcs-ref=v0.1.0", "--data=kserve_version=v0.20")
    assert result.returncode == 0, result.stderr

    assert "kserve_version: v0.20\n" in (repo / ".copier-answers.yml").read_text()
    assert isvc.read_text() == mine
    assert f"    newTag: {new['huggingfaceserver_tag']}  # the template's pin" in (repo / VLLM_PIN_FILE).read_text()
    pool = built(repo, "environments/gpu/models", "InferencePool", "qwen25-1-5b")
    assert pool["apiVersion"] == new["inference_pool_api"] == "inference.networking.k8s.io/v1"
    assert pool["spec"]["targetPorts"] and pool["spec"]["endpointPickerRef"]["name"]
    route = built(repo, "environments/gpu/models", "HTTPRoute", "qwen25-1-5b")
    assert route["spec"]["rules"][0]["backendRefs"][0]["group"] == "inference.networking.k8s.io"
    qwen = built(repo, "environments/gpu/models", "InferenceService", "qwen25-1-5b")
    assert qwen["metadata"]["annotations"]["team.example.com/owner"] == "ml-platform"
    assert "KServe v0.20.0" in (repo / "README.md").read_text()
    # The AppProject admits the new InferencePool group instead of the old one.
    project = (repo / "clusters/argocd/appproject.yaml").read_text()
    assert "inference.networking.k8s.io" in project and "inference.networking.x-k8s.io" not in project
    # The endpoint picker's image is the release's too (releases.yml), and so are the API groups it reads
    # (the admin-owned ClusterRole its RoleBinding names).
    assert status(repo) == {" M .copier-answers.yml", " M README.md", f" M {VLLM_PIN_FILE}", f" M {POOL_FILE}",
                            " M clusters/argocd/appproject.yaml", " M components/inference-pool/endpoint-picker.yaml",
                            " M platform/admin/endpoint-picker-role.yaml"}
    picker_role = yaml.safe_load((repo / "platform/admin/endpoint-picker-role.yaml").read_text())
    assert {"inference.networking.k8s.io", "llm-d.ai"} <= {g for r in picker_role["rules"] for g in r["apiGroups"]}
    report = validate([repo], store_dir=STORE)  # the recorded release, now v0.20: its CRDs
    assert report.ok, "\n".join(report.failures())
    assert (STORE / "kserve-v0.20" / "index.json").is_file()
