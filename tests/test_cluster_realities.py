"""Issue 11 (e, f, j, k, tokens): what the generated repo does on a real cluster, read from its built output.

(e) Standard-mode GPU models replace pods (Recreate) instead of surging onto a second set of GPUs.
(f) 4+ GPU models do not scale to zero; Flux waits at least as long as the longest progress deadline.
(j) The PodMonitor carries the label kube-prometheus-stack's Prometheus selects.
(k) Ollama is Ready only once its model is pulled and loaded (the runtime's own script, run against a fake ollama).
Model pods mount no ServiceAccount token (they never call the API).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import built_docs, copy_repo


def of_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


@pytest.fixture(scope="module")
def standard(template, tmp_path_factory) -> list[dict]:
    """Standard mode, every runtime's sample models plus the Ollama GPU model."""
    return built_docs(copy_repo(template, tmp_path_factory.mktemp("standard") / "repo", {
        "deployment_mode": "Standard", "catalog_models": ["qwen25-1-5b", "qwen3-4b", "llama-8b-gpu", "qwen25-0-5b-gguf"],
    }))


@pytest.fixture(scope="module")
def knative(template, tmp_path_factory) -> Path:
    """Knative mode with the 4-GPU 70B (gated) and an s3:// model, synced by Flux; no inference-pool (which
    keeps its pooled models at one replica whatever they say)."""
    return copy_repo(template, tmp_path_factory.mktemp("knative") / "repo", {
        "catalog_models": ["llama-70b", "qwen25-1-5b", "qwen-7b-gguf"], "gitops_engine": "flux",
        "environments": [{"name": "gpu", "cluster": "in-cluster", "components": ["gpu", "gated-hf", "s3"]},
                         {"name": "cpu", "cluster": "cpu-cluster", "components": ["cpu", "s3"]}],
    })


def test_standard_gpu_models_roll_out_with_recreate(standard):
    isvcs = of_kind(standard, "InferenceService")
    for name in ("qwen25-1-5b", "llama-8b-gpu"):
        assert isvcs[name]["spec"]["predictor"]["deploymentStrategy"] == {"type": "Recreate"}, name
    for name in ("qwen3-4b", "qwen25-0-5b-gguf"):  # CPU models keep KServe's rolling update
        assert "deploymentStrategy" not in isvcs[name]["spec"]["predictor"], name


def test_large_gpu_models_do_not_scale_to_zero(knative):
    isvcs = of_kind(built_docs(knative), "InferenceService")
    assert isvcs["llama-70b"]["spec"]["predictor"]["minReplicas"] == 1
    assert isvcs["qwen25-1-5b"]["spec"]["predictor"]["minReplicas"] == 0


def test_flux_waits_for_the_longest_progress_deadline(knative, template, tmp_path):
    models = yaml.safe_load((knative / "clusters/flux/gpu/llm-serving/models.yaml").read_text())
    deadline = of_kind(built_docs(knative), "InferenceService")["llama-70b"]["metadata"]["annotations"][
        "serving.knative.dev/progress-deadline"]
    assert (deadline, models["spec"]["timeout"]) == ("60m", "60m")
    with pytest.raises(ValueError, match=r"sync_timeout: 30m is shorter than models\[llama-70b\].progressDeadline 60m"):
        copy_repo(template, tmp_path / "short", {"catalog_models": ["llama-70b"], "gitops_engine": "flux",
                                                  "sync_timeout": "30m"})


def test_podmonitor_carries_the_kube_prometheus_stack_label(standard):
    monitor = of_kind(standard, "PodMonitor")["model-servers"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_model_pods_mount_no_service_account_token(knative, standard):
    docs = built_docs(knative) + standard
    accounts = of_kind(docs, "ServiceAccount")
    used = {d["spec"]["predictor"].get("serviceAccountName") for d in docs if d.get("kind") == "InferenceService"}
    assert used - {None} == {"hf-model-sa", "s3-model-sa"}
    # The models' accounts mount no token; the endpoint picker's (it watches pods) keeps its own.
    assert all(accounts[name]["automountServiceAccountToken"] is False for name in used - {None})
    assert all(d["spec"]["predictor"]["automountServiceAccountToken"] is False
               for d in docs if d.get("kind") == "InferenceService")


# --- (k) Ollama readiness, run for real against a stand-in ollama -------------------------------------

FAKE_OLLAMA = """#!/bin/sh
# A stand-in for the ollama CLI: records calls; `run` (the load) waits until the test releases it.
echo "$*" >> "$STATE/calls"
case "$1" in
  serve) touch "$STATE/serving"; exec sleep 60 ;;
  list) test -f "$STATE/serving" ;;
  pull) touch "$STATE/pulled" ;;
  show) test -f "$STATE/pulled" ;;
  run) while [ ! -f "$STATE/release" ]; do sleep 0.1; done; touch "$STATE/loaded" ;;
esac
"""


def test_ollama_is_ready_only_once_its_model_is_loaded(standard, tmp_path):
    runtime = of_kind(standard, "ClusterServingRuntime")["kserve-ollama"]
    container = runtime["spec"]["containers"][0]
    script = container["args"][0]
    probe = container["readinessProbe"]["exec"]["command"]
    assert container["command"] == ["/bin/sh", "-c"] and probe[:2] == ["/bin/sh", "-c"]
    marker = tmp_path / "model-loaded"  # the container's /tmp/model-loaded, moved out of the shared /tmp
    script, check = script.replace("/tmp/model-loaded", str(marker)), probe[2].replace("/tmp/model-loaded", str(marker))
    assert script != container["args"][0] and check != probe[2]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ollama").write_text(FAKE_OLLAMA)
    (bin_dir / "ollama").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(tmp_path), "OLLAMA_MODEL": "qwen3:4b"}

    def ready() -> bool:
        return subprocess.run(["/bin/sh", "-c", check], env=env).returncode == 0

    server = subprocess.Popen(["/bin/sh", "-c", script], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "calls").exists() or "run qwen3:4b" not in (tmp_path / "calls").read_text():
            assert time.monotonic() < deadline, "the script never started loading the model"
            time.sleep(0.1)
        assert (tmp_path / "pulled").exists() and not ready(), "Ready before the model was loaded"
        (tmp_path / "release").touch()
        while not ready():
            assert time.monotonic() < deadline, "never Ready after the model loaded"
            time.sleep(0.1)
        calls = (tmp_path / "calls").read_text().splitlines()
        assert [c.split()[0] for c in calls if c.split()[0] != "list"][:4] == ["serve", "pull", "show", "run"]
    finally:
        server.terminate()
        server.wait(timeout=10)
