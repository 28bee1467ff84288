"""`servingops cluster-check` against the real thing: kube-apiserver, KServe's own manager (webhooks + controller) at the
repo's release, kube-controller-manager, kube-scheduler and simulated GPU/CPU nodes. The repos are rendered by copier;
the faults are the edits a user could make in the files the repo gives them (values/*.yaml, the runtime)."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import child_pids, terminal_sigint
from servingops import cluster_check, kserve_build, render
from servingops.clusterbox import ClusterBox
from servingops.tools import PROJECT_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]
EXAMPLES = PROJECT_ROOT / "examples"


def check(repo: Path) -> tuple[cluster_check.Report, dict[str, cluster_check.ModelResult]]:
    lines: list[str] = []
    report = cluster_check.cluster_check([repo], log=lines.append)
    print("\n".join(lines))
    return report, {f"{m.environment}/{m.name}": m for m in report.models}


def append_yaml(path: Path, doc: dict) -> None:
    """Merge `doc` into the YAML file at `path` (a user's edit of a file the repo hands them)."""
    current = yaml.safe_load(path.read_text()) or {}

    def merge(into: dict, extra: dict) -> None:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(current, doc)
    path.write_text(yaml.safe_dump(current, sort_keys=False))


def test_default_repo_standard_mode_is_admitted_reconciled_and_scheduled(tmp_path):
    repo = render.render(tmp_path / "repo", {"deployment_mode": "Standard"})
    report, models = check(repo)
    assert report.ok, report.summary()
    gpu_model = models["gpu/qwen25-1-5b"]
    assert gpu_model.mode == "Standard" and gpu_model.workload == "Deployment qwen25-1-5b-predictor"
    assert gpu_model.nodes and all(n.startswith("gpu-node-") for n in gpu_model.nodes)
    # a GPU model rolls out by Recreate (no surge pod waiting for a GPU that is not there): KServe keeps it
    assert gpu_model.details["strategy"] == {"type": "Recreate"}
    assert all(n.startswith("cpu-node-") for n in models["cpu/qwen3-4b"].nodes)
    assert models["gpu/qwen25-0-5b-gguf"].nodes and not models["gpu/qwen25-0-5b-gguf"].problems


def test_denial_unschedulable_and_missing_toleration_are_reported(tmp_path):
    """One GPU environment, three faults: the vLLM runtime takes the priority of KServe's
    kserve-huggingfaceserver-multinode (denied by KServe's webhook), one model asks for 16 GPUs (more than any node
    has), another loses the gpu component's toleration (the GPU nodes' taint keeps it off)."""
    repo = render.render(tmp_path / "repo", {
        "deployment_mode": "Standard",
        "catalog_models": ["qwen25-1-5b", "llama-8b-gpu"],
        "custom_models": [{"name": "ollama-no-toleration", "runtime": "ollama", "modelTag": "qwen3:4b", "gpus": 1}],
        "environments": [{"name": "gpu", "cluster": "in-cluster", "components": ["gpu"]}],
    })
    multinode = yaml.safe_load(
        (PROJECT_ROOT.parent / "shared/kserve/v0.20.0/runtimes/kserve-huggingfaceserver-multinode.yaml").read_text())
    priority = next(f["priority"] for f in multinode["spec"]["supportedModelFormats"] if f["name"] == "huggingface")
    runtime_file = repo / "platform/runtimes/vllm/servingruntime-vllm.yaml"
    runtime = yaml.safe_load(runtime_file.read_text())
    for fmt in runtime["spec"]["supportedModelFormats"]:
        if fmt["name"] == "huggingface":
            fmt.update(autoSelect=True, priority=priority)
    runtime_file.write_text(yaml.safe_dump(runtime, sort_keys=False))
    values = repo / "environments/gpu/models/values"
    append_yaml(values / "llama-8b-gpu.yaml", {"spec": {"predictor": {"model": {"resources": {
        "limits": {"nvidia.com/gpu": "16"}, "requests": {"nvidia.com/gpu": "16"}}}}}})
    append_yaml(values / "ollama-no-toleration.yaml", {"spec": {"predictor": {"tolerations": []}}})

    report, models = check(repo)
    assert not report.ok
    env = report.environments[0]
    denial = next(d for d in env.denials if d.ref == "ClusterServingRuntime kserve-vllm")
    assert "kserve-huggingfaceserver-multinode" in denial.message and "priority" in denial.message

    # its runtime was refused, so KServe's controller has nothing to build the model with, and says so
    orphan = models["gpu/qwen25-1-5b"]
    assert not orphan.admitted and "No ServingRuntimes or ClusterServingRuntimes with the name: kserve-vllm" in orphan.reconciled

    big = models["gpu/llama-8b-gpu"]
    assert not big.admitted and big.reconciled == "" and not big.nodes
    assert "Insufficient nvidia.com/gpu" in big.scheduled

    untolerated = models["gpu/ollama-no-toleration"]
    assert not untolerated.admitted and untolerated.reconciled == ""
    assert "untolerated taint" in untolerated.scheduled
    assert "no toleration for taint nvidia.com/gpu=present:NoSchedule of gpu-node-1, gpu-node-2" in untolerated.scheduled


def test_previous_kserve_release_runs_its_own_manager(tmp_path):
    """kserve_version v0.19: that release's manager, CRDs, ConfigMap and runtimes."""
    repo = render.render(tmp_path / "repo", {"deployment_mode": "Standard", "kserve_version": "v0.19"})
    report, models = check(repo)
    assert report.ok, report.summary()
    assert {e.tag for e in report.environments} == {"v0.19.0"}
    assert models["gpu/qwen25-1-5b"].nodes


def test_keda_models_get_the_scaled_object_kserve_writes(tmp_path):
    """The keda component: KServe's own controller (reconcilers/keda, the same file at v0.16, v0.19 and v0.20) turns
    the vLLM model's autoScaling metrics into a ScaledObject, which the API server admits against KEDA's CRD
    (../shared/crds); no HPA beside it. llama.cpp's model in the same environment keeps KServe's HPA."""
    repo = render.render(tmp_path / "repo", {
        "deployment_mode": "Standard", "catalog_models": ["qwen25-1-5b", "qwen25-0-5b-gguf"],
        "environments": [{"name": "gpu", "cluster": "in-cluster", "components": ["gpu", "monitoring", "keda"]}],
    })
    report, models = check(repo)
    assert report.ok, report.summary()
    scaled = models["gpu/qwen25-1-5b"].details["autoscaler"]
    assert scaled["kind"] == "ScaledObject"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "qwen25-1-5b-predictor"
    triggers = {t["metadata"]["query"]: t for t in scaled["spec"]["triggers"]}
    waiting = triggers['sum(vllm:num_requests_waiting{namespace="llm-platform",'
                       'serving_kserve_io_inferenceservice="qwen25-1-5b"})']
    assert waiting["type"] == "prometheus" and waiting["metadata"]["threshold"] == "5"
    assert waiting["metadata"]["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    assert len(triggers) == 2
    assert models["gpu/qwen25-0-5b-gguf"].details["autoscaler"]["kind"] == "HorizontalPodAutoscaler"


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.yml")))
def test_examples_hold_on_the_cluster(tmp_path, name):
    repo = render.render(tmp_path / "repo", yaml.safe_load((EXAMPLES / f"{name}.yml").read_text()))
    report, _ = check(repo)
    assert report.ok, report.summary()


def test_default_repo_knative_mode(tmp_path):
    repo = render.render(tmp_path / "repo")
    report, models = check(repo)
    assert report.ok, report.summary()
    assert models["gpu/qwen25-1-5b"].workload == "Knative Service qwen25-1-5b-predictor"


def test_box_is_up_only_once_kserves_webhook_sees_its_runtimes():
    """KServe's runtime webhook judges against its manager's informer cache, which lags the API server. The box
    waits until a dry-run copy of each shipped runtime that competes on priority is denied; the probe must tell a
    runtime the webhook has seen from one it has not (or a user's runtime applied at once could slip through)."""
    tag = cluster_check.release_tag({"kserve_version": "v0.20"})
    release = cluster_check.release_data(tag, None)
    runtimes = release.runtimes()
    with ClusterBox(kserve=kserve_build.ensure(tag), inferenceservice_config=release.inferenceservice_config(),
                    runtimes=runtimes, crd_paths=release.crd_files({"ClusterServingRuntime"}), knative=False,
                    log=lambda line: None) as box:
        assert box._webhook_sees_runtimes()
        unseen = copy.deepcopy(next(r for r in runtimes if r["metadata"]["name"] == "kserve-huggingfaceserver"))
        unseen["metadata"] = {"name": "never-installed"}
        unseen["spec"]["supportedModelFormats"][0]["priority"] = 7
        box.runtimes = [*runtimes, unseen]
        assert not box._webhook_sees_runtimes()


def test_ctrl_c_stops_every_process(tmp_path):
    """Ctrl-C (SIGINT to the foreground process group) while the box runs: every process it started is gone."""
    repo = render.render(tmp_path / "repo", {"deployment_mode": "Standard", "catalog_models": ["qwen3-4b"],
                                             "environments": [{"name": "cpu", "cluster": "in-cluster", "components": ["cpu"]}]})
    proc = subprocess.Popen([sys.executable, "-m", "servingops", "cluster-check", str(repo)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=terminal_sigint)
    started: set[int] = set()
    try:
        for line in proc.stdout:
            if "cluster up" in line:
                started = child_pids(proc.pid)
                break
        assert len(started) >= 4, "kube-apiserver, KServe's manager, kube-controller-manager, kube-scheduler"
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert [pid for pid in started if Path(f"/proc/{pid}").exists()] == []
