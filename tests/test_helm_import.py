"""`servingops import-helm-values`: the seed chart's values files become Copier data files.

Every seed example round-trips (values file -> the answers of examples/<name>.yml, which copier renders and
kubeconform validates), every documented key reaches the manifests, and bad input (unknown keys, wrong types,
secrets, tensorParallelSize != gpu) is refused with one line naming the key, writing nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servingops import helm_import, releases, render
from servingops.errors import InputError
from servingops.tools import PROJECT_ROOT
from servingops.validate import kustomize_build, validate

EXAMPLES = PROJECT_ROOT / "examples"
HELM_VALUES = EXAMPLES / "helm-values"
SEED_README = PROJECT_ROOT.parent / "shared" / "seed" / "model-serving-helm-chart-README.md"
SEED_EXAMPLES = sorted(p.stem for p in HELM_VALUES.glob("*.yaml"))
SEED_TYPES = {"bool": "bool", "int": "int", "float": "float", "string": "str"}
FAKE_HF_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz012345"
FAKE_ACCESS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "servingops", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def seed_readme() -> str:
    return SEED_README.read_text()  # a missing seed README is an error, not a skip


def seed_tables() -> dict[str, tuple[str, str]]:
    """{key: (type, default)} from the seed README's Values tables."""
    rows = re.findall(r"^\| `([A-Za-z0-9.]+)` \| (\w+) \| `(.*?)` \|", seed_readme(), re.MULTILINE)
    return {key: (kind, default) for key, kind, default in rows}


def seed_yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", seed_readme(), re.DOTALL)


def flatten(mapping: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and f"{prefix}{key}" not in helm_import.KEYS:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load(path: Path):
    return yaml.safe_load(path.read_text())


# --- the mapping table --------------------------------------------------------------------------------------


def test_mapping_knows_every_documented_seed_key_with_its_type_and_default():
    tables = seed_tables()
    assert len(tables) == 47  # every row of the README's ten Values tables
    for key, (kind, default) in tables.items():
        row = helm_import.KEYS[key]
        assert row.kind == SEED_TYPES[kind] or (row.kind == "secret" and kind == "string"), key
        if "..." in default:  # a placeholder, not a default
            assert row.default is None, key
        else:
            assert row.default == yaml.safe_load(default), key
    in_examples = {k for block in seed_yaml_blocks() for k in flatten(yaml.safe_load(block))}
    assert in_examples <= set(helm_import.KEYS)
    # Nothing invented: the one key in neither is documented in a comment of the InferencePool example.
    assert set(helm_import.KEYS) - set(tables) - in_examples == {"inferencePool.eppServiceName"}
    assert "# eppServiceName:" in seed_readme()


def test_mapping_answers_are_copier_questions():
    questions = {q for q in load(PROJECT_ROOT / "copier.yml") if not q.startswith("_")}
    fields = set(render.catalog("models")["fields"])
    for key, answer, _ in helm_import.mapping_rows():
        for part in re.split(r" / | \+ ", answer):
            if part.startswith("custom_models[]."):
                assert part.removeprefix("custom_models[].") in fields, key
            elif part == "environments[].components":
                assert "environments" in questions
            elif part != "(none)":
                assert part in questions, key


def test_a_key_left_unset_means_what_the_templates_default_means():
    # The import writes only the keys a values file sets: the chart's default and the question's must agree.
    questions = load(PROJECT_ROOT / "copier.yml")
    different = {  # each translated on purpose (see MAPPING's notes)
        "servingRuntime.tag", "llamacppRuntime.tag", "ollamaRuntime.tag",  # "" = follow the pin
        "s3Storage.enabled",  # -> s3_auth
        "llamacppInferenceService.serviceAccountName",  # the model's; the chart's own is s3Storage's
    }
    compared = 0
    for key, row in helm_import.KEYS.items():
        default = questions.get(row.answer, {}).get("default") if isinstance(questions.get(row.answer), dict) else None
        if default is None or "{" in str(default) or key in different:
            continue
        assert row.default == default, key
        compared += 1
    assert compared >= 17  # numbers, flags and names of every runtime, S3, HF and the pool


def test_print_mapping_prints_the_table():
    result = cli("import-helm-values", "--print-mapping")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| `")]
    assert [re.match(r"\| `([^`]+)`", r).group(1) for r in rows] == [row.key for row in helm_import.MAPPING]
    assert "| `inferenceService.tensorParallelSize` | `custom_models[].tensorParallelSize` |" in result.stdout


# --- the seed examples --------------------------------------------------------------------------------------


# Each YAML example of the seed README, found by a line only it has.
SEED_BLOCKS = {"llama-70b": "name: llama-70b", "llamacpp-s3": "name: qwen-7b-gguf", "ollama-cpu": "name: qwen3-4b",
               "ollama-gpu": "name: llama-8b-gpu", "inference-pool": "inferencePool:"}


def seed_block(name: str) -> dict:
    (block,) = [b for b in seed_yaml_blocks() if SEED_BLOCKS[name] in b]
    return yaml.safe_load(block)


def test_helm_values_files_are_the_seed_readme_examples():
    quickstart: dict = {}
    for key, value in re.findall(r"--set (\S+)=(\S+)", seed_readme()):  # Helm's --set types its values
        section, leaf = key.split(".")
        quickstart.setdefault(section, {})[leaf] = yaml.safe_load(value)
    assert load(HELM_VALUES / "quickstart.yaml") == quickstart
    for name in ("llama-70b", "ollama-cpu", "ollama-gpu"):
        assert load(HELM_VALUES / f"{name}.yaml") == seed_block(name), name
    # Ours leaves out the S3 keys (refused), and gives the pool the Quick Start model to route to.
    seed_s3 = seed_block("llamacpp-s3")
    del seed_s3["s3Storage"]["accessKeyId"], seed_s3["s3Storage"]["secretAccessKey"]
    assert load(HELM_VALUES / "llamacpp-s3.yaml") == seed_s3
    assert load(HELM_VALUES / "inference-pool.yaml") == {**seed_block("inference-pool"), **quickstart}
    assert sorted(SEED_BLOCKS) + ["quickstart"] == sorted(SEED_EXAMPLES)


@pytest.mark.parametrize("name, outcome", [
    ("llama-70b", ["llama-70b"]), ("ollama-cpu", ["qwen3-4b"]), ("ollama-gpu", ["llama-8b-gpu"]),
    # As written, the S3 example carries keys and the InferencePool example has no model to route to.
    ("llamacpp-s3", "seed: s3Storage.accessKeyId: an S3 access key in a values file is refused"),
    ("inference-pool", "seed: inferencePool.enabled: the pool routes to vLLM model pods"),
])
def test_seed_readme_examples_as_written(name, outcome):
    if isinstance(outcome, list):
        assert helm_import.import_values(seed_block(name), source="seed")["catalog_models"] == outcome
    else:
        with pytest.raises(InputError) as refused:
            helm_import.import_values(seed_block(name), source="seed")
        assert str(refused.value).startswith(outcome)
        assert "AKIA" not in str(refused.value)


@pytest.mark.parametrize("name", SEED_EXAMPLES)
def test_seed_example_round_trips_to_its_data_file(tmp_path, name):
    out = tmp_path / "answers.yml"
    answers = helm_import.import_file(HELM_VALUES / f"{name}.yaml", out)
    assert load(out) == answers == load(EXAMPLES / f"{name}.yml")
    assert list(tmp_path.iterdir()) == [out]


@pytest.fixture(scope="module")
def imported_repo(tmp_path_factory):
    """imported_repo(name) -> (answers file, repo): the CLI import, then `copier copy --data-file` (once each)."""
    cache: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in cache:
            work = tmp_path_factory.mktemp(f"import-{name}")
            result = cli("import-helm-values", str(HELM_VALUES / f"{name}.yaml"), "-o", str(work / "answers.yml"))
            assert result.returncode == 0, result.stderr
            copy_ = subprocess.run(
                [sys.executable, "-m", "copier", "copy", "--defaults", "--quiet", "--vcs-ref", "HEAD",
                 "--data-file", str(work / "answers.yml"), str(PROJECT_ROOT), str(work / "repo")],
                capture_output=True, text=True, timeout=300)
            assert copy_.returncode == 0, copy_.stderr
            cache[name] = (work / "answers.yml", work / "repo")
        return cache[name]

    return get


@pytest.mark.renders
@pytest.mark.parametrize("name", SEED_EXAMPLES)
def test_imported_data_file_renders_with_copier_and_validates(imported_repo, name):
    answers_file, repo = imported_repo(name)
    answers = load(answers_file)
    recorded = load(repo / ".copier-answers.yml")
    assert {key: recorded[key] for key in answers} == answers  # copier took every imported answer
    report = validate([repo])
    assert report.ok, report.failures()
    assert report.errors == 0 and report.resources
    for env in answers["environments"]:
        assert (repo / "environments" / env["name"] / "models" / "kustomization.yaml").is_file()


# --- every key reaches the manifests ------------------------------------------------------------------------

FULL_VALUES = """\
servingRuntime: {enabled: true, name: vllm-rt, image: registry.example.com/kserve/huggingfaceserver,
                 tag: v0.16.0-gpu, gpuMemoryUtilization: 0.9, maxModelLen: 8192, enablePrefixCaching: false}
inferenceService:
  enabled: true
  name: mistral-7b
  storageUri: hf://mistralai/Mistral-7B-Instruct-v0.3
  gpu: 2
  tensorParallelSize: 2
  minReplicas: 1
  maxReplicas: 5
  scaleMetric: rps
  scaleTarget: 20
  huggingfaceSecret: my-hf-token
  autoscaling: {scaleDownDelay: 5m}
llamacppRuntime: {enabled: true, name: llamacpp-rt, image: ghcr.io/ggml-org/llama.cpp, tag: server-b9999,
                  threads: 8, contextWindow: 8192, parallelSlots: 2}
llamacppInferenceService: {enabled: true, name: phi-gguf, storageUri: s3://bucket-a/phi/phi-q4.gguf,
                           serviceAccountName: models-sa}
ollamaRuntime: {enabled: true, name: ollama-rt, image: ollama/ollama, tag: "0.15.2", numParallel: 2,
                contextLength: 8192, flashAttention: false}
ollamaInferenceService:
  enabled: true
  name: gemma-gpu
  modelTag: gemma3:12b
  gpu: 1
  resources: {requests: {cpu: 2, memory: 12Gi}, limits: {memory: 16Gi}}
  tolerations:
    - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
    - {key: dedicated, operator: Equal, value: llm, effect: NoSchedule}
s3Storage: {enabled: true, secretName: minio-creds, serviceAccountName: models-sa,
            endpoint: "http://minio.minio.svc:9000", region: eu-west-1, accessKeyId: "", secretAccessKey: ""}
huggingface: {secretEnabled: true, secretName: my-hf-token, token: ""}
inferencePool: {enabled: true, targetPort: 8000, eppServiceName: my-epp, eppServicePort: 9003}
inferencePoolRoute: {enabled: true, gatewayName: my-gateway}
"""


def test_full_values_file_sets_every_key(tmp_path):
    flat = flatten(yaml.safe_load(FULL_VALUES))
    assert set(flat) == set(helm_import.KEYS)
    for key, value in flat.items():  # each one differs from the chart's default, so each one shows
        if helm_import.KEYS[key].kind != "secret" and not key.endswith((".image", ".enabled", "Runtime.tag")):
            assert value != helm_import.KEYS[key].default, key


@pytest.fixture(scope="module")
def full_answers(tmp_path_factory):
    values = tmp_path_factory.mktemp("full") / "values.yaml"
    values.write_text(FULL_VALUES)
    return values, helm_import.import_file(values, values.with_name("answers.yml"), namespace="models")


@pytest.fixture(scope="module")
def full(full_answers):
    values, answers = full_answers
    repo = render.render(values.with_name("repo"), answers)
    docs = [d for layer in ("platform", "models") for d in
            yaml.safe_load_all(kustomize_build(repo / "environments" / "gpu" / layer)) if d]
    return answers, repo, {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_full_values_answers(full_answers):
    _, answers = full_answers
    pins = releases.runtime_pins("v0.16")
    assert answers["runtimes"] == ["vllm", "llamacpp", "ollama"]
    # The chart's vLLM tag is KServe v0.16's huggingfaceserver: the repo targets v0.16 and follows its pin.
    assert answers["kserve_version"] == "v0.16"
    assert pins["vllm"]["tag"] == "v0.16.0-gpu" and answers["vllm_image_tag"] == ""  # the pin: followed
    assert pins["ollama"]["tag"] != "0.15.2" and answers["ollama_image_tag"] == "0.15.2"  # not the pin: kept
    assert answers["llamacpp_image_tag"] == "server-b9999"  # not the pin: kept
    assert answers["catalog_models"] == []
    # Types as the questions take them: the float a float, the flag a flag (not 0.0).
    assert answers["vllm_gpu_memory_utilization"] == 0.9 and answers["vllm_enable_prefix_caching"] is False
    assert answers["custom_models"] == [
        {"name": "mistral-7b", "runtime": "vllm", "storageUri": "hf://mistralai/Mistral-7B-Instruct-v0.3",
         "gpus": 2, "tensorParallelSize": 2, "gated": True, "maxReplicas": 5, "minReplicas": 1,
         "scaleDownDelay": "5m", "scaleMetric": "rps", "scaleTarget": 20},
        {"name": "phi-gguf", "runtime": "llamacpp", "storageUri": "s3://bucket-a/phi/phi-q4.gguf"},
        {"name": "gemma-gpu", "runtime": "ollama", "modelTag": "gemma3:12b", "gpus": 1,
         "resources": {"requests": {"cpu": "2", "memory": "12Gi"}, "limits": {"memory": "16Gi", "cpu": "2"}},
         "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}]},
    ]
    assert answers["environments"] == [
        {"name": "gpu", "cluster": "in-cluster", "components": ["gpu", "s3", "gated-hf", "inference-pool"]}]
    assert (answers["s3_endpoint"], answers["s3_use_https"]) == ("minio.minio.svc:9000", False)
    assert (answers["s3_region"], answers["s3_secret_name"]) == ("eu-west-1", "minio-creds")


@pytest.mark.renders
def test_full_values_render_validate_and_reach_the_manifests(full):
    _, repo, docs = full
    report = validate([repo])
    assert report.ok, report.failures()
    vllm, llamacpp, ollama = (docs["ClusterServingRuntime", n]["spec"]["containers"][0]
                              for n in ("vllm-rt", "llamacpp-rt", "ollama-rt"))
    assert vllm["image"] == "registry.example.com/kserve/huggingfaceserver:v0.16.0-gpu"
    assert {"--gpu-memory-utilization=0.9", "--max-model-len=8192"} <= set(vllm["args"])
    assert "--enable-prefix-caching" not in vllm["args"]
    assert llamacpp["image"] == "ghcr.io/ggml-org/llama.cpp:server-b9999"
    flags = dict(zip(llamacpp["args"][::2], llamacpp["args"][1::2]))
    assert (flags["--threads"], flags["--parallel"], flags["--ctx-size"]) == ("8", "2", str(8192 * 2))
    assert ollama["image"] == "ollama/ollama:0.15.2"
    env = {e["name"]: e.get("value") for e in ollama["env"]}
    assert [env[k] for k in ("OLLAMA_NUM_PARALLEL", "OLLAMA_CONTEXT_LENGTH", "OLLAMA_FLASH_ATTENTION")] == [
        "2", "8192", "false"]

    mistral = docs["InferenceService", "mistral-7b"]
    predictor, model = mistral["spec"]["predictor"], mistral["spec"]["predictor"]["model"]
    assert mistral["metadata"]["namespace"] == "models"
    assert model["runtime"] == "vllm-rt" and "--tensor-parallel-size=2" in model["args"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert [predictor[k] for k in ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget")] == [1, 5, "rps", 20]
    assert mistral["metadata"]["annotations"]["autoscaling.knative.dev/scale-down-delay"] == "5m"
    token = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "my-hf-token", "key": "HF_TOKEN"}}}
    assert token in model["env"]
    assert {"name": "my-hf-token"} in docs["ServiceAccount", predictor["serviceAccountName"]]["secrets"]

    phi = docs["InferenceService", "phi-gguf"]
    assert phi["spec"]["predictor"]["serviceAccountName"] == "models-sa"
    assert {"name": "minio-creds"} in docs["ServiceAccount", "models-sa"]["secrets"]
    annotations = docs["ExternalSecret", "minio-creds"]["spec"]["target"]["template"]["metadata"]["annotations"]
    assert annotations["serving.kserve.io/s3-endpoint"] == "minio.minio.svc:9000"
    assert annotations["serving.kserve.io/s3-region"] == "eu-west-1"
    assert annotations["serving.kserve.io/s3-usehttps"] == "0"

    gemma = docs["InferenceService", "gemma-gpu"]
    assert gemma["spec"]["predictor"]["model"]["runtime"] == "ollama-rt"
    assert gemma["spec"]["predictor"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]  # once: the gpu component's
    assert gemma["spec"]["predictor"]["model"]["resources"] == {
        "requests": {"cpu": "2", "memory": "12Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "2", "memory": "16Gi", "nvidia.com/gpu": "1"}}

    # servingRuntime.tag v0.16.0-gpu: KServe v0.16, whose Inference Extension serves x-k8s.io v1alpha2 pools.
    assert docs["InferencePool", "mistral-7b"]["apiVersion"] == "inference.networking.x-k8s.io/v1alpha2"
    pool = docs["InferencePool", "mistral-7b"]["spec"]
    assert pool["targetPortNumber"] == 8000
    # eppServiceName names nothing any more: each pool gets its own generated picker (<model>-epp).
    assert pool["extensionRef"]["name"] == "mistral-7b-epp" and pool["extensionRef"]["portNumber"] == 9003
    assert docs["Service", "mistral-7b-epp"]["spec"]["ports"][0]["port"] == 9003
    assert docs["HTTPRoute", "mistral-7b"]["spec"]["parentRefs"][0]["name"] == "my-gateway"
    assert ("InferencePool", "phi-gguf") not in docs and ("InferencePool", "gemma-gpu") not in docs


# --- smaller translations ------------------------------------------------------------------------------------


def test_a_seed_model_that_differs_from_its_catalog_entry_is_a_custom_model():
    values = load(HELM_VALUES / "llama-70b.yaml")
    values["inferenceService"]["maxReplicas"] = 6
    answers = helm_import.import_values(values)
    assert answers["catalog_models"] == []
    assert answers["custom_models"] == [
        {"name": "llama-70b", "runtime": "vllm", "storageUri": "hf://meta-llama/Llama-3.3-70B-Instruct", "gpus": 4,
         "tensorParallelSize": 4, "gated": True, "maxReplicas": 6, "scaleDownDelay": "10m"}]


@pytest.mark.parametrize("memory, catalog", [("8Gi", True), ("9Gi", False), ("7Gi", False)])
def test_resources_other_than_the_catalogs_make_a_custom_model(memory, catalog):
    values = load(HELM_VALUES / "ollama-cpu.yaml")  # the catalog's qwen3-4b requests 8Gi
    values["ollamaInferenceService"]["resources"]["requests"]["memory"] = memory
    answers = helm_import.import_values(values)
    assert (answers["catalog_models"] == ["qwen3-4b"]) is catalog
    assert [m["name"] for m in answers["custom_models"]] == ([] if catalog else ["qwen3-4b"])


def test_disabled_runtimes_are_dropped_and_tags_follow_the_pin():
    pins = releases.runtime_pins()
    answers = helm_import.import_values({
        "servingRuntime": {"tag": pins["vllm"]["tag"]},
        "llamacppRuntime": {"tag": "server-b1"},
        "ollamaRuntime": {"enabled": False, "tag": "0.1.0", "numParallel": 2},
    })
    assert answers["runtimes"] == ["vllm", "llamacpp"]
    assert answers["vllm_image_tag"] == "" and answers["llamacpp_image_tag"] == "server-b1"
    assert answers["kserve_version"] == releases.default_version()  # the default release's own tag


def test_a_kserve_release_tag_sets_the_release_and_another_tag_is_kept():
    for version in releases.versions():
        tag = releases.release(version)["huggingfaceserver_tag"]
        answers = helm_import.import_values({"servingRuntime": {"tag": tag}})
        assert (answers["kserve_version"], answers["vllm_image_tag"]) == (version, "")
    answers = helm_import.import_values({"servingRuntime": {"tag": "v0.16.0-custom"}})
    assert "kserve_version" not in answers and answers["vllm_image_tag"] == "v0.16.0-custom"
    assert not [key for key in answers if key.startswith("ollama_")]
    # No model: the runtimes alone, in a GPU cluster so that vLLM runs.
    assert answers["environments"] == [{"name": "gpu", "cluster": "in-cluster", "components": ["gpu"]}]


def test_an_empty_values_file_is_the_charts_defaults():
    answers = helm_import.import_values(None)
    assert answers["runtimes"] == ["vllm", "llamacpp", "ollama"]
    assert "kserve_version" not in answers  # no tag given: the template's default release
    assert answers["catalog_models"] == [] and answers["custom_models"] == []


# --- refusals ----------------------------------------------------------------------------------------------

CLI_REFUSALS = {
    "unknown key": ({"inferenceService": {"enabled": True, "gpus": 2}},
                    "inferenceService.gpus: unknown key", "did you mean inferenceService.gpu?"),
    "wrong type": ({"inferenceService": {"enabled": True, "gpu": "four"}},
                   "inferenceService.gpu: must be a whole number", '"four"'),
    "huggingface token": ({"inferenceService": {"enabled": True, "huggingfaceSecret": "hf-secret"},
                           "huggingface": {"secretEnabled": True, "token": FAKE_HF_TOKEN}},
                          "huggingface.token: a HuggingFace token in a values file is refused", "secrets provider"),
    "S3 access key": ({"llamacppInferenceService": {"enabled": True, "name": "qwen-7b-gguf",
                                                    "storageUri": "s3://models/qwen2.5-7b-instruct-q4_k_m.gguf"},
                       "s3Storage": {"enabled": True, "accessKeyId": FAKE_ACCESS_KEY}},
                      "s3Storage.accessKeyId: an S3 access key in a values file is refused", "secrets provider"),
    # Issue 15: the credentials would otherwise reach the answers file as s3_endpoint.
    "credentials in the S3 endpoint": ({"llamacppInferenceService": {"enabled": True, "name": "qwen-7b-gguf",
                                                                     "storageUri": "s3://models/a.gguf"},
                                        "s3Storage": {"enabled": True,
                                                      "endpoint": "admin:Sup3rS3cret!@minio.minio.svc:9000"}},
                                       "s3Storage.endpoint: looks like credentials in a URL", "secrets provider"),
    "temporary AWS key": ({"s3Storage": {"region": "ASIA" + "Y3FDSNDKFHW7EXAM"}},
                          "s3Storage.region: looks like an AWS access key id", "secrets provider"),
    "tensor parallel mismatch": ({"inferenceService": {"enabled": True, "gpu": 4, "tensorParallelSize": 1}},
                                 "inferenceService.tensorParallelSize: 1 does not match inferenceService.gpu 4",
                                 "set both to 4"),
}


@pytest.mark.parametrize("case", sorted(CLI_REFUSALS))
def test_cli_refuses_with_one_line_and_writes_nothing(tmp_path, case):
    values, problem, fix = CLI_REFUSALS[case]
    source = tmp_path / "values.yaml"
    source.write_text(yaml.safe_dump(values))
    out = tmp_path / "answers.yml"
    result = cli("import-helm-values", str(source), "-o", str(out))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"servingops: error: {source}: {problem}"), result.stderr
    assert fix in result.stderr
    assert FAKE_HF_TOKEN not in result.stderr and FAKE_ACCESS_KEY not in result.stderr
    assert "Sup3rS3cret" not in result.stderr
    assert sorted(tmp_path.iterdir()) == [source]  # no answers file, no temporary file


def test_a_refused_import_leaves_an_existing_answers_file_alone(tmp_path):
    source = tmp_path / "values.yaml"
    source.write_text(yaml.safe_dump({"huggingface": {"token": FAKE_HF_TOKEN}}))
    out = tmp_path / "answers.yml"
    out.write_text("runtimes: [vllm]\n")
    with pytest.raises(InputError, match="huggingface.token"):
        helm_import.import_file(source, out)
    assert out.read_text() == "runtimes: [vllm]\n"
    assert sorted(tmp_path.iterdir()) == [out, source]


REFUSALS = {
    "token-shaped value": ({"inferenceService": {"enabled": True, "storageUri": f"hf://org/m?t={FAKE_HF_TOKEN}"}},
                           "inferenceService.storageUri: looks like a HuggingFace token"),
    "access key in a name": ({"s3Storage": {"secretName": FAKE_ACCESS_KEY}}, "s3Storage.secretName: looks like an AWS"),
    "S3 secret key": ({"s3Storage": {"secretAccessKey": "wJalrXUtnFEMI/K7MDENG"}}, "s3Storage.secretAccessKey: an S3"),
    "top level": (["inferenceService"], "(top level): must be a mapping"),
    "section type": ({"inferenceService": 3}, "inferenceService: must be a mapping of keys, got 3"),
    "bool as text": ({"servingRuntime": {"enabled": "true"}}, "servingRuntime.enabled: must be true or false"),
    "resources": ({"ollamaInferenceService": {"resources": {"limits": {"nvidia.com/gpu": 1}}}},
                  "ollamaInferenceService.resources: must be {requests"),
    "tolerations": ({"ollamaInferenceService": {"tolerations": {"key": "x"}}},
                    "ollamaInferenceService.tolerations: must be a list"),
    "unknown section": ({"ingress": {"enabled": True}}, "ingress: unknown key"),
    "default tensor parallel size": ({"inferenceService": {"enabled": True, "gpu": 2}},
                                     "inferenceService.tensorParallelSize: 1 (the chart's default) does not match "
                                     "inferenceService.gpu 2"),
    "vLLM without GPU": ({"inferenceService": {"enabled": True, "gpu": 0, "tensorParallelSize": 0}},
                         "inferenceService.gpu: vLLM runs on 1 to 8 GPUs"),
    "model name": ({"inferenceService": {"enabled": True, "name": "Llama_70B"}}, "inferenceService.name: 'Llama_70B'"),
    "two models, one name, after another": ({"inferenceService": {"enabled": True, "name": "first"},
                                             "llamacppInferenceService": {"enabled": True, "name": "twin",
                                                                          "storageUri": "s3://m/a.gguf"},
                                             "ollamaInferenceService": {"enabled": True, "name": "twin"}},
                                            "ollamaInferenceService.name: 'twin' names two models"),
    "vLLM model URI": ({"inferenceService": {"enabled": True, "storageUri": "gs://bucket/model"}},
                       "inferenceService.storageUri: 'gs://bucket/model' is not a model URI"),
    "two models, one name": ({"inferenceService": {"enabled": True, "name": "twin"},
                              "llamacppInferenceService": {"enabled": True, "name": "other",
                                                           "storageUri": "s3://m/a.gguf"},
                              "ollamaInferenceService": {"enabled": True, "name": "twin"}},
                             "ollamaInferenceService.name: 'twin' names two models"),
    "Ollama on 9 GPUs": ({"ollamaInferenceService": {"enabled": True, "gpu": 9}},
                         "ollamaInferenceService.gpu: use 0 (CPU) to 8 GPUs, got 9"),
    "a flag as a quantity": ({"ollamaInferenceService": {"resources": {"requests": {"cpu": True}}}},
                             "ollamaInferenceService.resources: must be {requests"),
    "model name of 46 characters": ({"inferenceService": {"enabled": True, "name": "m" * 46}},
                                    f"inferenceService.name: '{'m' * 46}' is not a model name: use at most 45"),
    "model name with a trailing dash": ({"inferenceService": {"enabled": True, "name": "llama-"}},
                                        "inferenceService.name: 'llama-' is not a model name"),
    "no runtime": ({"servingRuntime": {"enabled": False}, "llamacppRuntime": {"enabled": False},
                    "ollamaRuntime": {"enabled": False}}, "servingRuntime.enabled: every runtime is disabled"),
    "model on a disabled runtime": ({"ollamaRuntime": {"enabled": False}, "ollamaInferenceService": {"enabled": True}},
                                    "ollamaInferenceService.enabled: the model runs on the ollamaRuntime runtime"),
    "GGUF placeholder": ({"llamacppInferenceService": {"enabled": True}},
                         "llamacppInferenceService.storageUri: the chart's default is a placeholder"),
    "not a GGUF file": ({"llamacppInferenceService": {"enabled": True, "storageUri": "hf://Qwen/Qwen2.5-7B-Instruct"}},
                        "llamacppInferenceService.storageUri: 'hf://Qwen/Qwen2.5-7B-Instruct' is not a .gguf file"),
    "ServiceAccount mismatch": ({"llamacppInferenceService": {"enabled": True, "storageUri": "s3://m/a.gguf",
                                                              "serviceAccountName": "a"},
                                 "s3Storage": {"serviceAccountName": "b"}},
                                "llamacppInferenceService.serviceAccountName: 'a' differs from s3Storage"),
    "HF Secret mismatch": ({"inferenceService": {"enabled": True, "huggingfaceSecret": "a"},
                            "huggingface": {"secretEnabled": True, "secretName": "b"}},
                           "huggingface.secretName: 'b' differs from inferenceService.huggingfaceSecret 'a'"),
    "pool without vLLM model": ({"inferencePool": {"enabled": True}}, "inferencePool.enabled: the pool routes"),
    "route without pool": ({"inferencePoolRoute": {"enabled": True}}, "inferencePoolRoute.enabled: the route's"),
    "pool without route": ({"inferenceService": {"enabled": True}, "inferencePool": {"enabled": True},
                            "inferencePoolRoute": {"enabled": False}}, "inferencePoolRoute.enabled: false is not"),
    "Standard-mode metric": ({"inferenceService": {"enabled": True, "scaleMetric": "cpu"}},
                             "inferenceService.scaleMetric: 'cpu' is not a Knative metric"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_name_the_key(case):
    values, message = REFUSALS[case]
    with pytest.raises(InputError) as refused:
        helm_import.import_values(values, source="values.yaml")
    text = str(refused.value)
    assert text.startswith(f"values.yaml: {message}"), text
    assert "\n" not in text
    assert FAKE_HF_TOKEN not in text and FAKE_ACCESS_KEY not in text


def test_the_largest_values_allowed_are_taken():
    answers = helm_import.import_values({"inferenceService": {"enabled": True, "name": "m" * 45}}, source="v.yaml")
    assert [m["name"] for m in answers["custom_models"]] == ["m" * 45]
    answers = helm_import.import_values({"ollamaInferenceService": {"enabled": True, "gpu": 8}}, source="v.yaml")
    assert [m["gpus"] for m in answers["custom_models"]] == [8]


def test_cli_needs_values_and_output(tmp_path):
    result = cli("import-helm-values", str(HELM_VALUES / "quickstart.yaml"))
    assert result.returncode == 1
    assert result.stderr == (
        "servingops: error: import-helm-values: give VALUES.yaml and -o ANSWERS.yml (or --print-mapping)\n")
    missing = cli("import-helm-values", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "a.yml"))
    assert missing.returncode == 1 and "nope.yaml: cannot read it" in missing.stderr
    assert list(tmp_path.iterdir()) == []


def test_readme_carries_the_seed_mapping_table():
    readme = (PROJECT_ROOT / "README.md").read_text()
    table = readme.split("<!-- seed-mapping:start -->")[1].split("<!-- seed-mapping:end -->")[0]
    assert helm_import.mapping_markdown().strip() in table


# --- a newcomer's first import (issue 13) -------------------------------------------------------------------


def test_every_refused_key_is_reported_at_once(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "s3Storage": {"enabled": True, "accessKeyId": FAKE_ACCESS_KEY, "secretAccessKey": "wJalr" + "XUtnFEMI/K7MDENG"},
        "huggingface": {"token": FAKE_HF_TOKEN}, "inferenceServic": {"enabled": True},
    }, sort_keys=False))
    result = cli("import-helm-values", str(values), "-o", str(tmp_path / "answers.yml"))
    assert result.returncode == 1
    lines = result.stderr.removeprefix("servingops: error: ").splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "s3Storage.accessKeyId", "s3Storage.secretAccessKey", "huggingface.token", "inferenceServic"], lines
    assert FAKE_ACCESS_KEY not in result.stderr and FAKE_HF_TOKEN not in result.stderr
    assert not (tmp_path / "answers.yml").exists()


@pytest.mark.parametrize("provider, filled", [
    ("external-secrets", {"repo_url", "eso_store_name", "eso_hf_token_key"}),  # llama-70b is gated
    ("sealed-secrets", {"repo_url"}),
    ("sops", {"repo_url"}),
])
def test_placeholders_follow_the_secrets_provider(tmp_path, provider, filled):
    answers = helm_import.import_file(HELM_VALUES / "llama-70b.yaml", tmp_path / "answers.yml")
    assert set(helm_import.placeholders_filled({**answers, "secrets_provider": provider})) == filled


@pytest.mark.parametrize("s3_auth, filled", [
    ("static", {"repo_url", "s3_bucket", "eso_store_name", "eso_s3_key"}),  # the key pair comes from the store
    ("keyless", {"repo_url", "s3_bucket"}),  # IRSA / workload identity: no keys, no store
])
def test_placeholders_follow_the_s3_auth(tmp_path, s3_auth, filled):
    answers = helm_import.import_file(HELM_VALUES / "llamacpp-s3.yaml", tmp_path / "answers.yml")
    answers = {**answers, "secrets_provider": "external-secrets", "s3_auth": s3_auth}
    assert set(helm_import.placeholders_filled(answers)) == filled


def test_the_catalog_fills_tensor_parallel_size_for_vllm_only():
    for name, model in helm_import._catalog_models().items():
        assert model["tensorParallelSize"] == (model["gpus"] if model["runtime"] == "vllm" else None), name


def test_a_values_file_that_is_not_yaml_is_refused(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text("inferenceService: {enabled: [\n")
    with pytest.raises(InputError, match="values.yaml: not valid YAML: "):
        helm_import.import_file(values, tmp_path / "answers.yml")
    assert not (tmp_path / "answers.yml").exists()


@pytest.mark.parametrize("value, ok", [
    ([{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule", "tolerationSeconds": 60}],
     True),  # every field a toleration has
    ([{"key": "dedicated", "operator": "Exists"}], True),
    ([{"key": "dedicated", "tolerance": "Exists"}], False),  # a field tolerations do not have
    ([], True),
    ({"key": "dedicated"}, False),
])
def test_tolerations_are_a_list_of_toleration_fields(value, ok):
    assert helm_import._is_tolerations(value) is ok


@pytest.mark.renders
def test_the_summary_names_the_placeholders_the_next_step_fills(tmp_path):
    result = cli("import-helm-values", str(HELM_VALUES / "llama-70b.yaml"), "-o", str(tmp_path / "answers.yml"))
    assert result.returncode == 0, result.stderr
    filled = dict(line.strip().split(": ", 1) for line in result.stdout.splitlines() if line.startswith("    "))
    assert filled == {"repo_url": "https://github.com/example-org/llm-serving.git",
                      "eso_store_name": "platform-secrets", "eso_hf_token_key": "llm-serving/huggingface"}
    assert "placeholders" in result.stdout and "--data KEY=VALUE" in result.stdout
    # What the summary lists is what copier records with --defaults.
    repo = render.render(tmp_path / "repo", load(tmp_path / "answers.yml"))
    recorded = yaml.safe_load((repo / ".copier-answers.yml").read_text())
    assert all(recorded[key] == value for key, value in filled.items())


def test_dash_writes_the_answers_to_stdout(tmp_path):
    result = cli("import-helm-values", str(HELM_VALUES / "quickstart.yaml"), "-o", "-", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == load(EXAMPLES / "quickstart.yml")
    assert "next: copier copy --defaults --data-file answers.yml " in result.stderr  # not "-"
    assert list(tmp_path.iterdir()) == []


def test_a_secret_in_a_command_line_option_is_refused_before_writing(tmp_path):
    """--namespace / --release-name are no values-file entries: the check of the whole answers file catches them
    (issue 15: nothing is written before every answer is checked)."""
    source = tmp_path / "values.yaml"
    source.write_text("{}\n")
    out = tmp_path / "answers.yml"
    with pytest.raises(InputError, match="the answers would contain an AWS access key id: nothing written"):
        helm_import.import_file(source, out, namespace="ASIA" + "Y3FDSNDKFHW7EXAM")
    assert sorted(tmp_path.iterdir()) == [source]


def test_the_summary_says_when_no_model_was_imported(tmp_path):
    """A values file that enables no model (runtimes only): the summary says so (a mutant that dropped
    '(none)' survived every other test)."""
    values = tmp_path / "values.yaml"
    values.write_text("{}\n")
    result = cli("import-helm-values", str(values), "-o", str(tmp_path / "answers.yml"))
    assert result.returncode == 0, result.stderr
    assert "models (none);" in result.stdout + result.stderr
