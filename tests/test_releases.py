"""overlays-catalog/releases.yml, the compatibility table: equal to the KServe releases' own files
(../shared/kserve/<tag>/), complete for every release, and what a generated repository follows."""

from __future__ import annotations

import re

import pytest
import yaml

from servingops import releases, render
from servingops.tools import PROJECT_ROOT

SHARED_KSERVE = PROJECT_ROOT.parent / "shared" / "kserve"
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def upstream_runtimes(tag: str) -> dict[str, list[dict]]:
    """The ClusterServingRuntimes of config/runtimes at a KServe tag: name -> supportedModelFormats."""
    folder = SHARED_KSERVE / tag / "runtimes"
    assert folder.is_dir(), f"{folder} is missing: the table is checked against it"
    found = {}
    for path in sorted(folder.glob("kserve-*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "ClusterServingRuntime":
                found[doc["metadata"]["name"]] = [
                    {"name": f["name"], **({"version": str(f["version"])} if "version" in f else {}),
                     "autoSelect": bool(f.get("autoSelect", False)),
                     **({"priority": f["priority"]} if "priority" in f else {})}
                    for f in doc["spec"]["supportedModelFormats"]
                ]
    return found


@pytest.mark.parametrize("version", releases.versions())
def test_shipped_runtimes_are_the_releases_own(version):
    row = releases.release(version)
    assert releases.shipped_runtimes(version) == upstream_runtimes(row["tag"])


@pytest.mark.parametrize("version", releases.versions())
def test_every_release_row_is_complete_and_sourced(version):
    row = releases.release(version)
    assert version == ".".join(row["tag"].split(".")[:2])
    assert row["huggingfaceserver_tag"] == f"{row['tag']}-gpu"
    assert DATE.match(row["released"]) and row["support"] in ("supported", "end-of-life")
    # The table's release dates and commits are SOURCES.md's.
    sources = (SHARED_KSERVE / "SOURCES.md").read_text()
    assert f"| {row['tag']} | {row['commit']} | {row['released']} |" in sources
    group, _, api = row["inference_pool_api"].partition("/")
    assert group in ("inference.networking.k8s.io", "inference.networking.x-k8s.io") and api
    picker = row["endpoint_picker"]
    assert picker["image"].startswith("ghcr.io/llm-d/") and picker["tag"].startswith("v")
    assert DATE.match(picker["date"]) and picker["upstream"] and picker["confirmed"]
    assert row["crds"]["kserve"] == row["tag"]
    for path in row["crds"]["without"]:
        assert (PROJECT_ROOT.parent / "shared" / "crds" / path).is_file(), path


def test_release_independent_pins_are_sourced():
    pins = releases.table()["pins"]
    for name in ("llamacpp", "ollama"):
        assert pins[name]["tag"] and DATE.match(pins[name]["date"]) and pins[name]["confirmed"]
    for name in ("argocd", "flux"):
        assert pins[name]["upstream"] and DATE.match(pins[name]["date"])
    assert releases.default_version() in releases.versions()
    # Supported upstream: the latest two minor releases; the default is the newest.
    supported = [v for v in releases.versions() if releases.release(v)["support"] == "supported"]
    assert supported[0] == releases.default_version() and len(supported) == 2


def test_the_vllm_image_follows_the_release(tmp_path):
    tags = set()
    for version in releases.versions():
        repo = render.render(tmp_path / version, {"kserve_version": version, "runtimes": ["vllm"],
                                                  "catalog_models": []})
        answers = yaml.safe_load((repo / ".copier-answers.yml").read_text())
        assert answers["kserve_version"] == version
        kustomization = yaml.safe_load((repo / "platform" / "runtimes" / "vllm" / "kustomization.yaml").read_text())
        [image] = kustomization["images"]
        assert image["newTag"] == releases.release(version)["huggingfaceserver_tag"]
        tags.add(image["newTag"])
    assert len(tags) == len(releases.versions())


def test_an_unknown_release_is_refused_with_the_choices(tmp_path):
    import copier

    with pytest.raises((ValueError, copier.errors.CopierError)) as info:
        render.render(tmp_path / "repo", {"kserve_version": "v0.15"})
    assert "v0.15" in str(info.value)
    with pytest.raises(Exception, match="kserve_version: unknown KServe release 'v0.15': use one of v0.20"):
        releases.release("v0.15")


def test_a_copy_from_the_git_template_targets_the_default_release(tmp_path):
    # render.render copies from this checkout's git HEAD (copier then knows a _commit), as users copy a release.
    repo = render.render(tmp_path / "repo", {"runtimes": ["vllm"], "catalog_models": []})
    answers = yaml.safe_load((repo / ".copier-answers.yml").read_text())
    assert answers["kserve_version"] == releases.default_version()
    kustomization = yaml.safe_load((repo / "platform" / "runtimes" / "vllm" / "kustomization.yaml").read_text())
    assert kustomization["images"][0]["newTag"] == releases.release()["huggingfaceserver_tag"]
