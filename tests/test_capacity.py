"""The capacity model: copier (jinja/capacity.jinja) and lint (servingops.capacity, rule `capacity`) agree.

- The arithmetic: every catalog model x a grid of settings (contexts, caches, parallelism, every GPU product in
  overlays-catalog/capacity.yml, utilisations) gives the same numbers in Jinja and in Python.
- At the boundary, on real renders: a limit of exactly what a model needs is accepted by copier and its built
  output lints clean; one MiB less is refused by copier with the number, and lint reports the same number on the
  built output carrying that limit. (The slow matrix additionally lints every accepted cell with this rule.)
- Today's defects: qwen3-4b's former 12Gi limit and a llama.cpp runtime without --cache-ram are refused / flagged.
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import SandboxedEnvironment

from conftest import built_docs, copy_repo
from servingops import capacity, lint, render
from servingops.tools import PROJECT_ROOT

MODELS = render.catalog("models")["models"]
COEFFICIENTS = render.catalog("capacity")


def jinja_need(figures: dict, settings: capacity.Settings) -> dict:
    env = SandboxedEnvironment(loader=jinja2.FileSystemLoader(str(PROJECT_ROOT)),
                               extensions=["jinja2_ansible_filters.AnsibleCoreFiltersExtension"])
    template = env.from_string(
        "{% from 'jinja/capacity.jinja' import capacity_need with context %}{{ capacity_need(f, s) }}")
    return json.loads(template.render(f=figures, s=settings.__dict__))


def grid(model: dict) -> list[capacity.Settings]:
    runtime, gpus = model["runtime"], model.get("gpus", 0)
    if runtime == "llamacpp":
        return [capacity.Settings("llamacpp", 0, 1, 8192, 0, ctx, cache_ram=cache)
                for ctx, cache in itertools.product([1, 4096, 65536, 131072], [0, 2048, 8192])]
    products = [0, *COEFFICIENTS["gpu_memory_mib"].values()]
    if runtime == "ollama":
        return [capacity.Settings("ollama", g, 1, 12288, gpu, ctx, parallel=par)
                for g, gpu, ctx, par in itertools.product([gpus, max(gpus, 1) * 2], products, [2048, 16384], [1, 4])]
    return [capacity.Settings("vllm", gpus, tp, 0, gpu, ctx, utilization=util)
            for tp, gpu, ctx, util in itertools.product([gpus, gpus * 2], products, [4096, 16384], [0.85, 0.9, 1.0])]


@pytest.mark.parametrize("model", MODELS, ids=[m["name"] for m in MODELS])
def test_jinja_and_python_give_the_same_numbers(model):
    for settings in grid(model):
        assert jinja_need(model["capacity"], settings) == capacity.need(model["capacity"], settings), settings


def test_quantities_and_ephemeral_storage_agree():
    env = SandboxedEnvironment(loader=jinja2.FileSystemLoader(str(PROJECT_ROOT)),
                               extensions=["jinja2_ansible_filters.AnsibleCoreFiltersExtension"])
    quantity = env.from_string("{% from 'jinja/capacity.jinja' import quantity_mib %}{{ quantity_mib(q) }}")
    for q in ["8Gi", "12Gi", "16384Mi", "1.5Gi", "17179869184", "20G", "500M", "2Ti", "nonsense", "8 Gi"]:
        assert int(quantity.render(q=q)) == capacity.quantity_mib(q), q
    ephemeral = env.from_string("{% from 'jinja/capacity.jinja' import ephemeral_request %}{{ ephemeral_request(m) }}")
    for m in MODELS:
        storage = "pvc" if str(m.get("storageUri", "")).startswith("pvc://") else "x"
        assert ephemeral.render(m={**m, "storage": storage}) == f"{capacity.ephemeral_gi(m['capacity'])}Gi"


# --- real renders at the boundary ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_repo(template, tmp_path_factory) -> Path:
    """The llama.cpp defaults (qwen25-0-5b-gguf from HuggingFace)."""
    return copy_repo(template, tmp_path_factory.mktemp("gguf") / "repo", {"runtimes": ["llamacpp"]})


def lint_docs(docs: list[dict]) -> list[lint.Finding]:
    report = lint.lint_built({"built": docs})
    return [f for f in report.findings if f.rule == "capacity"]


def custom(model: dict, memory_mib: int) -> dict:
    out = {k: copy.deepcopy(v) for k, v in model.items() if k not in ("title", "sample")}
    out["name"] = f"{model['name'][:30]}-edge"
    out["resources"]["limits"]["memory"] = f"{memory_mib}Mi"
    out["resources"]["requests"]["memory"] = f"{min(memory_mib, 4096)}Mi"
    return out


CPU_MODELS = [m for m in MODELS if m["runtime"] in ("llamacpp", "ollama") and not m.get("gpus")]


@pytest.mark.parametrize("model", CPU_MODELS, ids=[m["name"] for m in CPU_MODELS])
def test_copier_and_lint_draw_the_line_at_the_same_mib(model, template, tmp_path):
    answers = {"runtimes": [model["runtime"]], "catalog_models": []}
    settings = {"llamacpp": capacity.Settings("llamacpp", 0, 1, 0, 0, 16384 * 4, cache_ram=2048),
                "ollama": capacity.Settings("ollama", 0, 1, 0, 0, 16384, parallel=4)}[model["runtime"]]
    needed = capacity.need(model["capacity"], settings)["need"]
    if model["storageUri"].startswith("s3://") if "storageUri" in model else False:
        answers["s3_auth"] = "keyless"
    repo = copy_repo(template, tmp_path / "fits", {**answers, "custom_models": [custom(model, needed)]})
    docs = built_docs(repo)
    assert lint_docs(docs) == []
    with pytest.raises(ValueError, match=rf"needs {needed} MiB .* \({needed - 1} MiB\)"):
        copy_repo(template, tmp_path / "short", {**answers, "custom_models": [custom(model, needed - 1)]})
    # The same output one MiB short: lint finds what copier refused, with the same number.
    for doc in docs:
        if doc.get("kind") == "InferenceService":
            doc["spec"]["predictor"]["model"]["resources"]["limits"]["memory"] = f"{needed - 1}Mi"
    findings = lint_docs(docs)
    assert len(findings) == 1 and f"needs {needed} MiB" in findings[0].message, findings


def test_gpu_product_too_small_is_refused_by_copier_and_flagged_by_lint(template, tmp_path):
    model = next(m for m in MODELS if m["name"] == "llama-70b")
    settings = capacity.Settings("vllm", 4, 4, 0, COEFFICIENTS["gpu_memory_mib"]["NVIDIA-A100-SXM4-40GB"], 16384,
                                 utilization=0.85)
    result = capacity.need(model["capacity"], settings)
    assert result["need"] > result["have"]
    answers = {"runtimes": ["vllm"], "catalog_models": ["llama-70b"]}
    with pytest.raises(ValueError, match=rf"gpu_product.*models\[llama-70b\]\.gpus: needs {result['need']} MiB per GPU"):
        copy_repo(template, tmp_path / "a100-40", {**answers, "gpu_product": "NVIDIA-A100-SXM4-40GB"})
    repo = copy_repo(template, tmp_path / "h100", {**answers, "gpu_product": "NVIDIA-H100-80GB-HBM3"})
    docs = built_docs(repo)
    assert lint_docs(docs) == []
    for doc in docs:
        if doc.get("kind") == "InferenceService":
            doc["spec"]["predictor"]["nodeSelector"]["nvidia.com/gpu.product"] = "NVIDIA-A100-SXM4-40GB"
    findings = lint_docs(docs)
    assert len(findings) == 1 and f"needs {result['need']} MiB per GPU" in findings[0].message, findings


def test_todays_defaults_are_refused(template, gguf_repo, tmp_path):
    """(d) qwen3-4b under its former 12Gi limit; the llama.cpp runtime without --cache-ram."""
    qwen3 = next(m for m in MODELS if m["name"] == "qwen3-4b")
    former = custom(qwen3, 12288)
    with pytest.raises(ValueError, match=r"needs 12619 MiB .*memory limit is 12288Mi"):
        copy_repo(template, tmp_path / "qwen3", {"runtimes": ["ollama"], "catalog_models": [], "custom_models": [former]})
    docs = built_docs(gguf_repo)
    assert lint_docs(docs) == []
    for doc in docs:  # the runtime as generated before: no --cache-ram, so llama.cpp's 8192 MiB default applies
        if doc.get("kind") == "ClusterServingRuntime":
            args = doc["spec"]["containers"][0]["args"]
            i = args.index("--cache-ram")
            del args[i:i + 2]
    findings = lint_docs(docs)
    assert [f.resource for f in findings] == ["InferenceService llm-platform/qwen25-0-5b-gguf"], findings
    assert "8192 MiB --cache-ram" in findings[0].message


def test_hf_gguf_fetches_one_file_and_requests_disk(gguf_repo):
    isvc = next(d for d in built_docs(gguf_repo) if d.get("kind") == "InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    # KServe's hf:// storage initializer downloads the whole repo (every quantisation): llama-server fetches one file.
    assert "storageUri" not in model
    file = "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    assert model["args"][:4] == ["--hf-repo", "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "--hf-file", file] or (
        model["args"][0] == "--model-url" and model["args"][1].startswith(
            "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/") and model["args"][1].endswith("/" + file))
    assert {"name": "LLAMA_CACHE", "value": "/mnt/llama-cache"} in model["env"]
    assert model["resources"]["requests"]["ephemeral-storage"] == "1Gi"
    assert isvc["spec"]["predictor"]["volumes"][0]["emptyDir"]["sizeLimit"] == "1Gi"


@pytest.mark.parametrize("figures", [{"parameters": "7B"}, "big", {**MODELS[0]["capacity"], "layers": True},
                                     {**MODELS[0]["capacity"], "headDim": -1}])
def test_custom_figures_must_be_the_six_numbers(figures, template, tmp_path):
    model = {"name": "mine", "runtime": "llamacpp", "storageUri": "s3://models/mine.gguf", "capacity": figures}
    with pytest.raises(ValueError, match=r"models\[mine\]\.capacity: give the numbers parameters, layers"):
        copy_repo(template, tmp_path / "repo", {"runtimes": ["llamacpp"], "catalog_models": [],
                                                "custom_models": [model], "s3_auth": "keyless"})


def test_pinned_hf_gguf_fetches_that_commits_file(template, tmp_path):
    """A revision (hf://org/repo:rev) cannot go through --hf-repo (it takes a quant tag): the file's resolve URL."""
    model = {"name": "pinned", "runtime": "llamacpp", "storageUri": "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF:9217f5d",
             "file": "qwen2.5-0.5b-instruct-q4_k_m.gguf", "capacity": MODELS[3]["capacity"]}
    assert MODELS[3]["name"] == "qwen25-0-5b-gguf"
    repo = copy_repo(template, tmp_path / "repo", {"runtimes": ["llamacpp"], "catalog_models": [],
                                                   "custom_models": [model]})
    isvc = next(d for d in built_docs(repo) if d.get("kind") == "InferenceService")
    assert isvc["spec"]["predictor"]["model"]["args"][:2] == [
        "--model-url", "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/9217f5d/qwen2.5-0.5b-instruct-q4_k_m.gguf"]
    assert lint_docs(built_docs(repo)) == []


@pytest.mark.parametrize("a, b", [("1000m", "1"), ("1Gi", "1024Mi"), ("1e3", "1k"), ("0.5", "500m"), (2, "2"),
                                  ("1.5Gi", "1536Mi"), ("1E", "1000P"), ("100n", "0.1u"), ("0.1n", "1n")])
def test_equal_kubernetes_quantities_are_equal_amounts(a, b):
    assert capacity.quantity(a) == capacity.quantity(b) is not None


@pytest.mark.parametrize("value", ["1GB", "1 Gi", "Gi", "1.2.3", "", None, True, "1e", "-", "1e1000000"])
def test_what_is_not_a_kubernetes_quantity(value):
    assert capacity.quantity(value) is None


def test_cluster_check_compares_resources_by_amount_not_spelling():
    from servingops.cluster_check import check_pod_spec

    asked = {"requests": {"cpu": "1000m", "memory": "8192Mi"}, "limits": {"cpu": "2", "memory": "8Gi"}}
    isvc = {"metadata": {"name": "m", "namespace": "ns"}, "spec": {"predictor": {"model": {"resources": asked}}}}

    def pod(resources):  # as KServe writes it: canonical quantities
        return {"containers": [{"name": "kserve-container", "args": [], "resources": resources}]}

    canonical = {"requests": {"cpu": "1", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}}
    assert check_pod_spec(isvc, None, pod(canonical), None) == []
    smaller = {"requests": {"cpu": "1", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    assert [p for p in check_pod_spec(isvc, None, pod(smaller), None) if p.startswith("resources")]
