"""The seed chart's deployments (examples/*.yml): each renders with copier (Python API, vcs_ref HEAD), validates
strictly offline, and its built manifests follow KServe's rules: llama.cpp ctx-size arithmetic, vLLM tensor
parallelism = GPUs, GPU limits and tolerations, HF_TOKEN wiring, S3 annotations and ServiceAccount, the
InferencePool, and no secret value anywhere."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from servingops import lint, releases, render
from servingops.tools import PROJECT_ROOT
from servingops.validate import INVALID, VALID, kustomize_build, validate

EXAMPLES = PROJECT_ROOT / "examples"
# What the seed README says each deployment runs: {model: (runtime, GPUs)}.
SEED_MODELS = {
    "quickstart": {"qwen25-7b": ("vllm", 1)},
    "llama-70b": {"llama-70b": ("vllm", 4)},
    "llamacpp-s3": {"qwen-7b-gguf": ("llamacpp", 0)},
    "ollama-cpu": {"qwen3-4b": ("ollama", 0)},
    "ollama-gpu": {"llama-8b-gpu": ("ollama", 1)},
    "inference-pool": {"qwen25-7b": ("vllm", 1)},
}
NAMES = sorted(SEED_MODELS)
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# Shapes of secret values; none may appear in a generated repository.
SECRET_VALUES = re.compile(r"(AKIA|ASIA)[A-Z0-9]{16}|hf_[A-Za-z0-9]{20,}|PRIVATE KEY|aws_secret_access_key\s*[:=]",
                           re.IGNORECASE)


class Rendered:
    """One rendered example: its answers, and the kustomize builds of its environment overlays (built once)."""

    def __init__(self, path: Path):
        self.path = path
        self.answers = yaml.safe_load((path / ".copier-answers.yml").read_text())
        self.envs = [env["name"] for env in self.answers["environments"]]
        self._builds: dict[tuple[str, str], list[dict]] = {}

    def build(self, env: str, layer: str) -> list[dict]:
        if (env, layer) not in self._builds:
            text = kustomize_build(self.path / "environments" / env / layer)
            self._builds[env, layer] = [doc for doc in yaml.safe_load_all(text) if doc]
        return self._builds[env, layer]

    def kind(self, kind: str, env: str, layer: str = "models") -> dict[str, dict]:
        return {d["metadata"]["name"]: d for d in self.build(env, layer) if d["kind"] == kind}

    def components(self, env: str) -> list[str]:
        return next(e["components"] for e in self.answers["environments"] if e["name"] == env)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """example(name) -> Rendered; each example is rendered once for the whole module."""
    cache: dict[str, Rendered] = {}

    def get(name: str, kserve_version: str | None = None) -> Rendered:
        """The example as its data file says (the default KServe release), or at `kserve_version`
        (`copier copy --data-file examples/<name>.yml -d kserve_version=...`)."""
        key = f"{name}@{kserve_version}" if kserve_version else name
        if key not in cache:
            data = yaml.safe_load((EXAMPLES / f"{name}.yml").read_text())
            data.update({"kserve_version": kserve_version} if kserve_version else {})
            cache[key] = Rendered(render.render(tmp_path_factory.mktemp(key) / "repo", data))
        return cache[key]

    return get


def container(isvc: dict) -> dict:
    return isvc["spec"]["predictor"]["model"]


def gpu_toleration_count(isvc: dict) -> int:
    return sum(t == GPU_TOLERATION for t in isvc["spec"]["predictor"].get("tolerations", []))


def test_every_example_is_listed_with_its_command():
    readme = (EXAMPLES / "README.md").read_text()
    assert sorted(p.stem for p in EXAMPLES.glob("*.yml")) == NAMES
    for name in NAMES:
        command = f'copier copy --defaults --data-file examples/{name}.yml "$PWD" ../my-llm-repo'
        row = next(line for line in readme.splitlines() if line.startswith("|") and f"`{name}.yml`" in line)
        assert command in row
        assert command in (EXAMPLES / f"{name}.yml").read_text()
    for values in (EXAMPLES / "helm-values").glob("*.yaml"):
        assert f"`helm-values/{values.name}`" in readme
        assert (EXAMPLES / f"{values.stem}.yml").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_example_renders_and_validates(example, name):
    rendered = example(name)
    report = validate([rendered.path])
    assert report.ok, report.failures()
    assert report.errors == 0 and report.count(INVALID) == 0
    assert all(r.status == VALID for r in report.resources) and report.count(VALID) > 0
    overlays = {Path(t.target).resolve() for t in report.targets}
    for env in rendered.envs:
        for layer in ("platform", "models"):
            assert (rendered.path / "environments" / env / layer).resolve() in overlays


@pytest.mark.slow
@pytest.mark.parametrize("kserve_version", [v for v in releases.versions() if v != releases.default_version()])
@pytest.mark.parametrize("name", NAMES)
def test_example_at_every_kserve_release_validates_against_that_releases_crds(example, name, kserve_version):
    """`copier copy --data-file examples/<name>.yml -d kserve_version=<r>`: clean against r's own CRDs (the
    default release is test_example_renders_and_validates), and the vLLM image is r's huggingfaceserver."""
    rendered = example(name, kserve_version)
    assert rendered.answers["kserve_version"] == kserve_version
    report = validate([rendered.path])  # the release recorded in the answers picks the CRD set
    assert report.ok, report.failures()
    assert all(r.status == VALID for r in report.resources) and report.count(VALID) > 0
    tag = releases.release(kserve_version)["huggingfaceserver_tag"]
    for env in rendered.envs:
        for runtime in rendered.kind("ClusterServingRuntime", env, "platform").values():
            image = runtime["spec"]["containers"][0]["image"]
            if image.startswith("kserve/huggingfaceserver"):
                assert image == f"kserve/huggingfaceserver:{tag}"


@pytest.mark.parametrize("name", NAMES)
def test_example_deploys_the_seed_models(example, name):
    rendered = example(name)
    deployed = {}
    for env in rendered.envs:
        for isvc in rendered.kind("InferenceService", env).values():
            deployed[isvc["metadata"]["name"]] = isvc
    assert sorted(deployed) == sorted(SEED_MODELS[name])
    runtimes = {r["metadata"]["labels"]["model-serving.io/runtime"]: r["metadata"]["name"]
                for env in rendered.envs for r in rendered.kind("ClusterServingRuntime", env, "platform").values()}
    for model, (runtime, _) in SEED_MODELS[name].items():
        assert container(deployed[model])["runtime"] == runtimes[runtime]


@pytest.mark.parametrize("name", NAMES)
def test_llamacpp_ctx_size_is_per_slot_window_times_slots(example, name):
    rendered = example(name)
    per_slot = rendered.answers["llamacpp_context_per_slot"]
    slots = rendered.answers["llamacpp_parallel_slots"]
    runtime = next(r for env in rendered.envs for r in rendered.kind("ClusterServingRuntime", env, "platform").values()
                   if r["metadata"]["labels"]["model-serving.io/runtime"] == "llamacpp")
    args = runtime["spec"]["containers"][0]["args"]
    flags = dict(zip(args[::2], args[1::2]))
    assert flags["--parallel"] == str(slots)
    assert flags["--ctx-size"] == str(per_slot * slots)
    assert flags["--port"] == "8080" and flags["--host"] == "0.0.0.0"
    # The explanation sits right above the flag in the file the user reads.
    lines = (rendered.path / "platform/runtimes/llamacpp/servingruntime-llamacpp.yaml").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == "- --ctx-size")
    comment = []
    for line in reversed(lines[:at]):
        if not line.strip().startswith("#"):
            break
        comment.insert(0, line.strip())
    text = " ".join(comment)
    assert "TOTAL" in text and "--parallel" in text and f"{per_slot} x {slots} = {per_slot * slots}" in text


@pytest.mark.parametrize("name", [n for n in NAMES if any(rt == "vllm" for rt, _ in SEED_MODELS[n].values())])
def test_vllm_tensor_parallel_size_equals_gpu_limit(example, name):
    rendered = example(name)
    for env in rendered.envs:
        for model_name, isvc in rendered.kind("InferenceService", env).items():
            model = container(isvc)
            tp = [a.split("=", 1)[1] for a in model["args"] if a.startswith("--tensor-parallel-size=")]
            gpus = SEED_MODELS[name][model_name][1]
            assert tp == [str(gpus)]
            assert model["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
            assert model["resources"]["requests"]["nvidia.com/gpu"] == str(gpus)


@pytest.mark.parametrize("name", NAMES)
def test_gpu_models_get_gpus_and_the_toleration_cpu_models_neither(example, name):
    rendered = example(name)
    for env in rendered.envs:
        for model_name, isvc in rendered.kind("InferenceService", env).items():
            gpus = SEED_MODELS[name][model_name][1]
            resources = container(isvc)["resources"]
            if gpus:
                assert "gpu" in rendered.components(env)
                assert resources["limits"]["nvidia.com/gpu"] == str(gpus)
                assert gpu_toleration_count(isvc) == 1  # the gpu component's, once (the seed listed it by hand)
            else:
                assert "nvidia.com/gpu" not in resources["limits"] and "nvidia.com/gpu" not in resources["requests"]
                tolerations = isvc["spec"]["predictor"].get("tolerations", [])
                assert not any(t.get("key") == "nvidia.com/gpu" for t in tolerations)
            assert {"cpu", "memory"} <= set(resources["limits"]) and {"cpu", "memory"} <= set(resources["requests"])
        if "cpu" in rendered.components(env):  # a CPU-only cluster runs no GPU runtime and no GPU model
            runtimes = rendered.kind("ClusterServingRuntime", env, "platform")
            assert rendered.answers["vllm_runtime_name"] not in runtimes
            for isvc in rendered.kind("InferenceService", env).values():
                terms = isvc["spec"]["predictor"]["affinity"]["nodeAffinity"][
                    "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                assert {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"} in terms[0]["matchExpressions"]


def test_ollama_cpu_keeps_the_seed_requests(example):
    isvc = example("ollama-cpu").kind("InferenceService", "cpu")["qwen3-4b"]
    # The seed's requests, plus the disk its pull needs; the limit fits the KV cache (overlays-catalog/capacity.yml).
    assert container(isvc)["resources"]["requests"] == {"cpu": "8", "memory": "8Gi", "ephemeral-storage": "3Gi"}
    assert container(isvc)["resources"]["limits"]["memory"] == "16Gi"
    assert {"name": "OLLAMA_MODEL", "value": "qwen3:4b"} in container(isvc)["env"]


def test_gated_model_reads_hf_token_from_the_secret(example):
    rendered = example("llama-70b")
    secret = rendered.answers["hf_secret_name"]
    assert secret == "hf-secret"
    isvc = rendered.kind("InferenceService", "gpu")["llama-70b"]
    hf_env = [e for e in container(isvc)["env"] if e["name"] == "HF_TOKEN"]
    assert hf_env == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "HF_TOKEN"}}}]
    account = rendered.kind("ServiceAccount", "gpu")[isvc["spec"]["predictor"]["serviceAccountName"]]
    assert {"name": secret} in account["secrets"]
    external = rendered.kind("ExternalSecret", "gpu")[secret]
    assert external["spec"]["target"]["name"] == secret
    assert [d["secretKey"] for d in external["spec"]["data"]] == ["HF_TOKEN"]
    assert isvc["metadata"]["annotations"]["autoscaling.knative.dev/scale-down-delay"] == "10m"


@pytest.mark.parametrize("name", [n for n in NAMES if n != "llama-70b"])
def test_public_models_get_no_token(example, name):
    rendered = example(name)
    for env in rendered.envs:
        for isvc in rendered.kind("InferenceService", env).values():
            assert not any(e["name"] == "HF_TOKEN" for e in container(isvc).get("env", []))
        assert "hf-secret" not in rendered.kind("ExternalSecret", env)
        assert "gated-hf" not in rendered.components(env)


def test_s3_model_runs_as_the_s3_service_account_with_annotated_secret(example):
    rendered = example("llamacpp-s3")
    secret, account_name = rendered.answers["s3_secret_name"], rendered.answers["s3_service_account_name"]
    assert (secret, account_name) == ("s3-model-creds", "s3-model-sa")
    isvc = rendered.kind("InferenceService", "cpu")["qwen-7b-gguf"]
    assert isvc["spec"]["predictor"]["serviceAccountName"] == account_name
    assert container(isvc)["storageUri"] == "s3://models/qwen2.5-7b-instruct-q4_k_m.gguf"
    assert container(isvc)["args"] == ["--model", "/mnt/models/qwen2.5-7b-instruct-q4_k_m.gguf"]
    assert {"name": secret} in rendered.kind("ServiceAccount", "cpu")[account_name]["secrets"]
    external = rendered.kind("ExternalSecret", "cpu")[secret]
    target = external["spec"]["target"]
    assert target["name"] == secret
    annotations = target["template"]["metadata"]["annotations"]
    assert annotations["serving.kserve.io/s3-endpoint"] == "s3.us-east-1.amazonaws.com"
    assert annotations["serving.kserve.io/s3-region"] == "us-east-1"
    assert annotations["serving.kserve.io/s3-usehttps"] == "1"
    assert {d["secretKey"] for d in external["spec"]["data"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all(set(d) == {"secretKey", "remoteRef"} for d in external["spec"]["data"])


@pytest.mark.parametrize("kserve_version", releases.versions())
def test_inference_pool_selects_the_vllm_model_and_the_route_targets_it(example, kserve_version):
    rendered = example("inference-pool", kserve_version)
    # The InferencePool API of the release's Gateway API Inference Extension: x-k8s.io v1alpha2 for v0.16,
    # k8s.io v1 since.
    api_version = releases.release(kserve_version)["inference_pool_api"]
    assert api_version == ("inference.networking.x-k8s.io/v1alpha2" if kserve_version == "v0.16"
                           else "inference.networking.k8s.io/v1")
    epp = "qwen25-7b-epp"  # each pool's own endpoint picker
    pools = rendered.kind("InferencePool", "gpu")
    isvcs = rendered.kind("InferenceService", "gpu")
    vllm = [n for n, isvc in isvcs.items() if isvc["metadata"]["labels"]["model-serving.io/runtime"] == "vllm"]
    assert sorted(pools) == sorted(vllm)  # only vLLM models join a pool
    pool = pools["qwen25-7b"]
    assert pool["apiVersion"] == api_version
    spec = pool["spec"]
    if api_version.endswith("/v1"):
        assert spec["selector"] == {"matchLabels": {"serving.kserve.io/inferenceservice": "qwen25-7b"}}
        assert spec["targetPorts"] == [{"number": 8080}]
        assert spec["endpointPickerRef"]["name"] == epp and spec["endpointPickerRef"]["port"] == {"number": 9002}
    else:
        assert spec["selector"] == {"serving.kserve.io/inferenceservice": "qwen25-7b"}
        assert spec["targetPortNumber"] == 8080
        assert spec["extensionRef"]["name"] == epp and spec["extensionRef"]["portNumber"] == 9002
    route = rendered.kind("HTTPRoute", "gpu")["qwen25-7b"]
    assert [(p["kind"], p["name"]) for p in route["spec"]["parentRefs"]] == [("Gateway", "inference-gateway")]
    backends = [b for rule in route["spec"]["rules"] for b in rule["backendRefs"]]
    assert backends == [{"group": api_version.split("/")[0], "kind": "InferencePool", "name": "qwen25-7b"}] * 2
    # An OpenAI client's /v1/... reaches huggingfaceserver's OpenAI routes (/openai/v1/...), given time to generate.
    assert lint._forwarded_path("/v1/chat/completions", route["spec"]["rules"]) == "/openai/v1/chat/completions"
    assert lint._forwarded_path("/openai/v1/models", route["spec"]["rules"]) == "/openai/v1/models"
    assert {rule["timeouts"]["request"] for rule in route["spec"]["rules"]} == {"20m"}
    # A pool only sends requests to ready pods: its model stays warm.
    assert isvcs["qwen25-7b"]["spec"]["predictor"]["minReplicas"] == 1
    # Its own endpoint picker, deployed with it: the Service leads to a Deployment watching this pool only.
    service = rendered.kind("Service", "gpu")[epp]
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]][0] == (9002, "grpc")
    picker = rendered.kind("Deployment", "gpu")[epp]
    assert picker["spec"]["template"]["metadata"]["labels"].items() >= service["spec"]["selector"].items()
    pod = picker["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = container["args"]
    legacy = not api_version.endswith("/v1")
    assert args[args.index("-poolName" if legacy else "--pool-name") + 1] == "qwen25-7b"
    assert args[args.index("-poolNamespace" if legacy else "--pool-namespace") + 1] == "llm-platform"
    assert container["image"].startswith("ghcr.io/llm-d/") and container["readinessProbe"]["grpc"]["port"] == 9003
    assert pod["serviceAccountName"] == epp and epp in rendered.kind("ServiceAccount", "gpu")
    # Its rules: the admin-owned ClusterRole of the platform layer (synced before the models), bound in its namespace.
    assert not rendered.kind("Role", "gpu")
    binding = rendered.kind("RoleBinding", "gpu")[epp]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": epp, "namespace": "llm-platform"}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "llm-serving-endpoint-picker"}
    role = rendered.kind("ClusterRole", "gpu", "platform")[binding["roleRef"]["name"]]
    assert role["metadata"]["labels"]["model-serving.io/layer"] == "admin"
    assert {v for r in role["rules"] for v in r["verbs"]} == {"get", "list", "watch"}  # read-only
    assert {"pods", "inferencepools"} <= {res for r in role["rules"] for res in r["resources"]}
    assert {g for r in role["rules"] for g in r["apiGroups"]} >= {api_version.split("/")[0]}
    assert ("--config-file" in args) == (kserve_version == "v0.20")  # llm-d-router v0.10.0: the chart's plugins
    if "--config-file" in args:
        config = rendered.kind("ConfigMap", "gpu")[epp]["data"]["default-plugins.yaml"]
        assert args[args.index("--config-file") + 1] == "/config/default-plugins.yaml" and "queue-scorer" in config


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("inference-pool")])
def test_no_pool_without_the_component(example, name):
    rendered = example(name)
    assert all(not rendered.kind(kind, env) for env in rendered.envs for kind in ("InferencePool", "HTTPRoute"))


@pytest.mark.parametrize("name", NAMES)
def test_no_secret_value_anywhere_in_the_output(example, name):
    rendered = example(name)
    for path in rendered.path.rglob("*"):
        if path.is_file():
            assert not SECRET_VALUES.search(path.read_text()), path
    for env in rendered.envs:
        for layer in ("platform", "models"):
            for doc in rendered.build(env, layer):
                assert doc["kind"] != "Secret", doc["metadata"]["name"]
                if doc["kind"] == "ExternalSecret":  # only references into the store
                    assert all(set(d) == {"secretKey", "remoteRef"} for d in doc["spec"]["data"])
                    assert "data" not in doc["spec"]["target"].get("template", {})
                if doc["kind"] == "InferenceService":
                    for entry in container(doc).get("env", []):
                        if entry["name"] in ("HF_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                            assert "value" not in entry


def test_an_examples_command_run_in_a_checkout_makes_an_updatable_repo_beside_it(tmp_path):
    """The README's command, run as written in a git checkout of the template: the new repo lands beside the
    checkout (never inside it) and records where the template is, so `copier update` works there."""
    import shutil
    import subprocess

    checkout = tmp_path / "model-serving-gitops"
    with render.template_snapshot() as snapshot:
        shutil.copytree(snapshot, checkout, symlinks=True)
    shutil.copytree(EXAMPLES, checkout / "examples")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "template"], ["tag", "v0.1.0"]):
        subprocess.run([*git, *args], cwd=checkout, check=True, capture_output=True)
    command = next(line.split("`")[-2] for line in (EXAMPLES / "README.md").read_text().splitlines()
                   if line.startswith("|") and "`quickstart.yml`" in line)
    copier_bin = Path(sys.executable).with_name("copier")
    result = subprocess.run(["bash", "-c", command.replace("copier ", f"{copier_bin} ", 1)], cwd=checkout,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=all"], cwd=checkout,
                            capture_output=True, text=True, check=True).stdout
    assert status == "", f"the command wrote into the template checkout: {status}"
    answers = yaml.safe_load((tmp_path / "my-llm-repo" / ".copier-answers.yml").read_text())
    assert answers["_src_path"] == str(checkout) and answers["_commit"] == "v0.1.0"
