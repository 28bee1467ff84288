"""The parts of `cluster-check --gitops` that need no cluster: the local Git server (real git over smart HTTP), the
engines' build pins, and the day-2 edit (real kustomize build of the edited repo)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from servingops import engines, gitops_check, render
from servingops.build import YAML_LOADER, kustomize_build
from servingops.cluster_check import environments
from servingops.errors import InputError
from servingops.gitserver import GitServer


def test_git_server_serves_each_commit_over_smart_http(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a.yaml").write_text("one\n")
    with GitServer(tmp_path / "git") as git:
        first = git.commit("repo", folder, "first")
        (folder / "a.yaml").unlink()
        (folder / "b.yaml").write_text("two\n")
        second = git.commit("repo", folder, "second")
        refs = subprocess.run(["git", "ls-remote", git.url("repo")], capture_output=True, text=True, check=True)
        assert f"{second}\trefs/heads/main" in refs.stdout and first != second
        clone = tmp_path / "clone"
        env = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
        subprocess.run(["git", "clone", "--quiet", git.url("repo"), str(clone)], check=True, env=env)
    assert sorted(p.name for p in clone.iterdir() if p.name != ".git") == ["b.yaml"]  # deletions are committed too


def test_engine_pins_name_every_folder_replace_they_need():
    pins = engines.pinned_engines()
    assert set(pins) == {"argocd", "flux-source-controller", "flux-kustomize-controller"}
    assert pins["argocd"].links == ("argocd-application-controller", "argocd-repo-server")
    for pin in pins.values():
        assert pin.nested_modules and pin.crds, pin.name


def test_day2_edit_changes_max_replicas_and_adds_a_model(tmp_path):
    repo = render.render(tmp_path / "repo", {"deployment_mode": "Standard", "gitops_engine": "both"})
    _, envs = environments(repo)
    gpu = next(e for e in envs if e.name == "gpu")
    model, new, message, new_max = gitops_check.day2_change(repo, gpu)
    built = {d["metadata"]["name"]: d for d in yaml.load_all(kustomize_build(repo / "environments/gpu/models"),
                                                              Loader=YAML_LOADER)
             if d and d["kind"] == "InferenceService"}
    assert built[model]["spec"]["predictor"]["maxReplicas"] == new_max
    assert built[new]["spec"]["predictor"]["model"] == built[model]["spec"]["predictor"]["model"]
    assert new in message and str(new_max) in message
    # as the Flux models Kustomization's comment asks of a model added by hand: its health check, next to the others
    flux = yaml.safe_load((repo / "clusters/flux/gpu/llm-serving/models.yaml").read_text())
    checked = [c["name"] for c in flux["spec"]["healthChecks"]]
    assert checked.count(f"{new}-predictor") == 1
    assert checked.index(f"{new}-predictor") == checked.index(f"{model}-predictor") + 1


def test_copier_update_takes_the_release_and_refuses_a_conflict(tmp_path):
    template = tmp_path / "template"
    with render.template_snapshot() as snapshot:
        shutil.copytree(snapshot, template, symlinks=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=template, check=True)
    subprocess.run([*git, "add", "-A"], cwd=template, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "v1"], cwd=template, check=True)
    subprocess.run([*git, "tag", "v0.1.0"], cwd=template, check=True)
    namespace = template / "template/platform/admin/namespace.yaml.jinja"
    namespace.write_text(namespace.read_text().replace("audit: restricted\n", "audit: restricted\n    release: two\n"))
    subprocess.run([*git, "commit", "-q", "-am", "v2"], cwd=template, check=True)
    subprocess.run([*git, "tag", "v0.2.0"], cwd=template, check=True)

    repo = render.render(tmp_path / "repo", {"deployment_mode": "Standard"}, template=template, vcs_ref="v0.1.0")
    mine = repo / "platform/admin/namespace.yaml"
    clean = repo.parent / "clean"
    shutil.copytree(repo, clean)
    # The generated README explains copier's conflict markers in prose: that is no conflict.
    assert "<<<<<<< before updating" in (repo / "README.md").read_text()
    assert gitops_check.copier_update(clean, "v0.2.0") == "copier update v0.1.0 -> v0.2.0"
    assert "    release: two\n" in (clean / "platform/admin/namespace.yaml").read_text()
    assert "_commit: v0.2.0" in (clean / ".copier-answers.yml").read_text()

    mine.write_text(mine.read_text().replace("audit: restricted\n", "audit: restricted\n    release: mine\n"))
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    with pytest.raises(InputError, match=r"copier update left conflicts in platform/admin/namespace.yaml"):
        gitops_check.copier_update(repo, "v0.2.0")
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before  # nothing half-written


def test_entry_point_is_pointed_at_the_local_server_for_this_environment_only(tmp_path):
    repo = render.render(tmp_path / "repo", {"deployment_mode": "Standard", "gitops_engine": "both"})
    answers, envs = environments(repo)
    cpu = next(e for e in envs if e.name == "cpu")
    cpu.cluster = "cpu-cluster"
    objects = gitops_check.render_entry_point(repo / "clusters" / "argocd")
    apps = [o["metadata"]["name"] for o in objects
            if o["kind"] == "Application" and gitops_check._is_env_application(o, cpu)]
    assert sorted(apps) == ["llm-serving-cpu-models", "llm-serving-cpu-platform"]
    project = next(o for o in objects if o["kind"] == "AppProject")
    local = gitops_check._point_repo_at(project, answers["repo_url"], "http://127.0.0.1:1/llm-serving.git")
    assert local["spec"]["sourceRepos"] == ["http://127.0.0.1:1/llm-serving.git"]
    assert answers["repo_url"] not in str(local)


@pytest.mark.parametrize("flags", [["--day2"], ["--update-to", "v0.2.0"], ["--env", "gpu"]])
def test_engine_options_without_an_engine_are_refused_before_anything_starts(tmp_path, capsys, flags):
    from servingops import cli

    assert cli.main(["cluster-check", *flags, str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flags[0] in err and "--gitops argocd|flux" in err
