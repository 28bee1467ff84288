"""`servingops cluster-check --gitops`: the real engines (Argo CD's application-controller + repo-server, Flux's
source-controller + kustomize-controller, built from their pinned release modules) sync a copier-rendered repo from
a local Git server into a cluster in a box (real kube-apiserver, KServe's own manager and webhooks,
kube-controller-manager, kube-scheduler, simulated nodes), offline. Nothing on the engines' side is faked: what
"healthy" means is their verdict (Application Synced/Healthy, Kustomization Ready with its health checks) plus each
InferenceService's own Ready condition."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from servingops import cli, gitops_check, releases, render

pytestmark = [pytest.mark.slow, pytest.mark.gitops, pytest.mark.xdist_group("cluster")]


def break_models_path(worktree: Path, env) -> str:
    """The commit a user could push: a model folder renamed without updating the environment that lists it."""
    models = worktree / "models"
    first = sorted(p.name for p in models.iterdir())[0]
    (models / first).rename(models / f"{first}-renamed")
    return f"rename models/{first} (environments/{env.name}/models still lists it)"


OLD_PIN = releases.runtime_pins()["vllm"]["tag"]  # the default release's huggingfaceserver, e.g. v0.20.0-gpu
NEW_PIN = re.sub(r"^(v?\d+\.\d+\.)(\d+)", lambda m: f"{m[1]}{int(m[2]) + 1}", OLD_PIN)
NAMESPACE_LABEL = "pod-security.kubernetes.io/enforce-version: latest"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory) -> Path:
    """This template as v0.1.0, and a v0.2.0 on top that changes what the clusters get: the vLLM runtime's image
    (KServe rolls the vLLM model's Deployment) and a label on the namespace."""
    root = tmp_path_factory.mktemp("template") / "model-serving-gitops"
    with render.template_snapshot() as snapshot:
        shutil.copytree(snapshot, root, symlinks=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "The template as it is")
    git(root, "tag", "v0.1.0")
    pins = root / "overlays-catalog/releases.yml"
    assert pins.read_text().count(f"huggingfaceserver_tag: {OLD_PIN}\n") == 1
    pins.write_text(pins.read_text().replace(f"huggingfaceserver_tag: {OLD_PIN}\n",
                                             f"huggingfaceserver_tag: {NEW_PIN}\n"))
    namespace = root / "template/platform/admin/namespace.yaml.jinja"
    assert namespace.read_text().count("audit: restricted\n") == 1
    namespace.write_text(namespace.read_text().replace("audit: restricted\n",
                                                       f"audit: restricted\n    {NAMESPACE_LABEL}\n"))
    git(root, "commit", "-q", "-am", "v0.2.0: a newer vLLM image, a namespace label")
    git(root, "tag", "v0.2.0")
    return root


@pytest.fixture(scope="module")
def standard_repo(tmp_path_factory, template_repo) -> Path:
    """The default answers in Standard mode, with both engines' entry points, generated from v0.1.0."""
    return render.render(tmp_path_factory.mktemp("gitops") / "repo",
                         {"deployment_mode": "Standard", "gitops_engine": "both", "kserve_version": "v0.20"},
                         template=template_repo, vcs_ref="v0.1.0")


def run(repo: Path, engine: str, **kwargs) -> list[gitops_check.Phase]:
    lines: list[str] = []
    try:
        return gitops_check.gitops_check(repo, engine, log=lines.append, **kwargs)
    finally:
        print("\n".join(lines))


# Flux's day 2 raises a model's maxReplicas: KServe passes it to the HPA, not the Deployment, so the
# InferenceService's observedGeneration (copied from the Deployment, kserve/kserve#6081) falls behind its generation
# for good; the update's new vLLM image rolls the Deployment, which puts it ahead. The generated models
# Kustomization health-checks the Deployments, not the InferenceServices.
@pytest.mark.parametrize("engine", ["flux", "argocd"])
def test_engine_syncs_default_repo_day2_template_update_and_reports_a_broken_path(standard_repo, engine):
    bootstrap, day2_phase, update, broken = run(standard_repo, engine, day2=True, update_to="v0.2.0",
                                                then=[break_models_path], only=["gpu"])
    assert bootstrap.ok, "\n".join(bootstrap.lines())
    names = {u.name for u in bootstrap.units}
    if engine == "flux":
        assert names == {"flux-system", "llm-serving-platform", "llm-serving-models"}
    else:
        assert names == {"llm-serving-gpu-platform", "llm-serving-gpu-models"}
    models = {m.name for m in bootstrap.models}
    assert models == {"llm-platform/qwen25-1-5b", "llm-platform/qwen25-0-5b-gguf", "llm-platform/qwen3-4b"}
    assert all(m.ok and m.seconds is not None for m in bootstrap.models)

    assert day2_phase.ok, "\n".join(day2_phase.lines())
    replicas, added = (c.name for c in day2_phase.checks)
    assert replicas.endswith(" maxReplicas") and added.startswith("new model ")
    new_model = added.removeprefix("new model ")
    assert f"llm-platform/{new_model}" in {m.name for m in day2_phase.models if m.ok}
    assert {u.name for u in day2_phase.units} == names and all(u.ok for u in day2_phase.units)

    # copier update v0.1.0 -> v0.2.0 on top of the day-2 edits: applied, converged, nothing drifted
    assert update.title.startswith("copier update v0.1.0 -> v0.2.0 at "), update.title
    assert update.ok, "\n".join(update.lines())
    checks = {c.name: c for c in update.checks}
    assert "updated Namespace llm-platform" in checks
    assert "updated ClusterServingRuntime kserve-vllm" in checks
    if engine == "argocd":
        drift = [c for c in update.checks if c.name.startswith("no drift in ")]
        assert {c.name.removeprefix("no drift in ") for c in drift} == names
        assert all("(server-side diff)" in c.status for c in drift)
    else:
        assert {n for n in checks if " at " in n} == {f"{n} at {update.title.rsplit(' ', 1)[-1]}" for n in names}

    assert not broken.ok
    failing = [u for u in broken.units if not u.ok]
    assert [u.name for u in failing] == ["llm-serving-models" if engine == "flux" else "llm-serving-gpu-models"]
    # the engine's own words, from its status
    assert "qwen25-0-5b-gguf" in failing[0].message
    assert ("kustomize build failed" if engine == "flux" else "kustomize build") in failing[0].message


def test_cli_exits_nonzero_with_the_engines_message(tmp_path, capsys):
    repo = render.render(tmp_path / "repo", {"deployment_mode": "Standard", "gitops_engine": "flux",
                                             "kserve_version": "v0.20",
                                             "environments": [{"name": "gpu", "cluster": "in-cluster",
                                                               "components": ["gpu"]}]})
    break_models_path(repo, type("Env", (), {"name": "gpu"}))
    code = cli.main(["cluster-check", "--gitops", "flux", "--timeout", "120", str(repo)])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 1, captured.err
    assert not captured.err, captured.err  # the engine's verdict, not an error of ours
    assert "FAIL Kustomization llm-serving-models" in out and "kustomize build failed" in out


def test_flux_tenant_reads_what_its_health_checks_read(tmp_path):
    """Multi-tenant Flux (flux_service_account): the Kustomizations apply and health-check as the tenant, under the
    box's RBAC. kstatus reads a Deployment with its ReplicaSets and their Pods: without those reads in the tenant's
    Role the models Kustomization stays in its health wait. With inference-pool, the tenant (no `bind`) writes each
    endpoint picker's RoleBinding: the API server resolves the role it names, which must already exist (the admin's
    ClusterRole) and grant nothing the tenant does not hold."""
    repo = render.render(tmp_path / "repo", {"deployment_mode": "Standard", "gitops_engine": "flux",
                                             "kserve_version": "v0.20", "flux_service_account": "llm-tenant",
                                             "environments": [{"name": "gpu", "cluster": "in-cluster",
                                                               "components": ["gpu", "monitoring", "inference-pool"]}]})
    (bootstrap,) = run(repo, "flux", timeout=180)
    assert bootstrap.ok, "\n".join(bootstrap.lines())
    assert {u.name for u in bootstrap.units} == {"flux-system", "llm-serving-platform", "llm-serving-models"}
    assert {m.name for m in bootstrap.models} == {"llm-platform/qwen25-1-5b", "llm-platform/qwen25-0-5b-gguf",
                                                  "llm-platform/qwen3-4b"}
