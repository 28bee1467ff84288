"""The parts of `cluster-check --gitops` that need no cluster: the local Git server (real git over smart HTTP), the
engines' build pins, and the day-2 edit (real kustomize build of the edited repo)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from servingops import engines, gitops_check, render
from servingops.build import YAML_LOADER, kustomize_build
from servingops.cluster_check import environments
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
    repo = render.render(tmp_path / "repo", {"deployment_mode": "Standard"})
    _, envs = environments(repo)
    gpu = next(e for e in envs if e.name == "gpu")
    model, new, message, new_max = gitops_check.day2_change(repo, gpu)
    built = {d["metadata"]["name"]: d for d in yaml.load_all(kustomize_build(repo / "environments/gpu/models"),
                                                              Loader=YAML_LOADER)
             if d and d["kind"] == "InferenceService"}
    assert built[model]["spec"]["predictor"]["maxReplicas"] == new_max
    assert built[new]["spec"]["predictor"]["model"] == built[model]["spec"]["predictor"]["model"]
    assert new in message and str(new_max) in message


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
