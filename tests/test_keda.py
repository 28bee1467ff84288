"""The keda component: vLLM models in Standard mode scale on their LLM load (waiting requests, KV-cache use) read
from Prometheus, through KServe's autoscalerClass keda (KServe's controller writes the ScaledObject), not on CPU."""

from __future__ import annotations

import re

import pytest

from servingops import render
from servingops.validate import kustomize_build, split_documents, validate

KEDA_ENV = {"name": "gpu", "cluster": "in-cluster", "components": ["gpu", "monitoring", "keda"]}


def test_vllm_models_scale_on_queue_and_kv_cache(tmp_path):
    repo = render.render(tmp_path / "repo", {
        "deployment_mode": "Standard", "catalog_models": ["qwen25-1-5b", "qwen25-0-5b-gguf"],
        "environments": [KEDA_ENV, {"name": "cpu", "cluster": "cpu", "components": ["cpu"]}],
        "keda_queue_target": 3,
    })
    docs = [d for d, _ in split_documents(kustomize_build(repo / "environments" / "gpu" / "models"))]
    isvcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "InferenceService"}
    isvc = isvcs["qwen25-1-5b"]
    # llama.cpp's model in the same environment keeps its HPA: the endpoint's metrics are vLLM's.
    assert isvcs["qwen25-0-5b-gguf"]["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    predictor = isvc["spec"]["predictor"]
    assert "scaleMetric" not in predictor and "scaleTarget" not in predictor  # no HPA on CPU beside KEDA
    metrics = predictor["autoScaling"]["metrics"]
    assert [m["type"] for m in metrics] == ["External", "External"]
    queries = {m["external"]["metric"]["query"]: m["external"]["target"] for m in metrics}
    assert queries == {
        'sum(vllm:num_requests_waiting{namespace="llm-platform",serving_kserve_io_inferenceservice="qwen25-1-5b"})': {"type": "Value", "value": "3"},
        'sum(vllm:kv_cache_usage_perc{namespace="llm-platform",serving_kserve_io_inferenceservice="qwen25-1-5b"})': {"type": "Value", "value": "0.8"},
    }
    assert {m["external"]["metric"]["serverAddress"] for m in metrics} == {"http://prometheus-operated.monitoring.svc:9090"}
    assert all(m["external"]["metric"]["backend"] == "prometheus" for m in metrics)
    # The queries select the model by the label the monitoring component's PodMonitor copies from the pod (Prometheus
    # Operator's podTargetLabels, sanitised to a Prometheus label name), not vLLM's model_name: KServe's
    # huggingfaceserver leaves vLLM's served model name at the model path (/mnt/models), the same for every model.
    [monitor] = [d for d in docs if d["kind"] == "PodMonitor"]
    assert "serving.kserve.io/inferenceservice" in monitor["spec"]["podTargetLabels"]
    selectors = {re.search(r"\{(.*)\}", query).group(1) for query in queries}
    assert selectors == {'namespace="llm-platform",'
                         f'{re.sub("[^A-Za-z0-9_]", "_", "serving.kserve.io/inferenceservice")}="qwen25-1-5b"'}
    # The environment without keda keeps its HPA; everything validates (KServe's CRD schema) and lints clean.
    cpu = [d for d, _ in split_documents(kustomize_build(repo / "environments" / "cpu" / "models"))]
    assert all(d["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
               for d in cpu if d["kind"] == "InferenceService")
    report = validate([repo])
    assert report.ok, report.failures()


@pytest.mark.parametrize("answers, message", [
    ({"environments": [KEDA_ENV]}, "keda works in deployment_mode Standard only"),  # Knative, the default
    ({"deployment_mode": "Standard", "environments": [{**KEDA_ENV, "components": ["gpu", "keda"]}]},
     "keda requires monitoring"),
    ({"deployment_mode": "Standard", "environments": [KEDA_ENV], "keda_kv_cache_target": "80"},
     "keda_kv_cache_target"),
])
def test_keda_is_refused_where_it_cannot_work(tmp_path, answers, message):
    with pytest.raises(Exception) as failure:
        render.render(tmp_path / "repo", {"catalog_models": ["qwen25-1-5b"], **answers})
    assert message in str(failure.value)
