"""Bad answers at copy time (issue 7): copier refuses them with one line that names the question and the fix,
and writes nothing.

Every case is a real `copier copy --defaults` through copier's Python API (render.render on a snapshot of the
working tree); a subset also runs through the copier CLI, the way users run it. copier formats a validator's
message as "Validation error for question '<name>': <our message>".
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from servingops import render
from servingops.tools import PROJECT_ROOT

COPIER = Path(sys.executable).with_name("copier")
QUESTIONS: dict[str, dict] = {
    name: spec for name, spec in yaml.safe_load((PROJECT_ROOT / "copier.yml").read_text()).items()
    if not name.startswith("_")
}
# Asked questions: everything but the computed answers (when: false), which users never give.
ASKED = {name: spec for name, spec in QUESTIONS.items() if spec.get("when") is not False}
# Free text: str questions without choices.
FREE_TEXT = [name for name, spec in ASKED.items() if spec.get("type") == "str" and "choices" not in spec]
# Questions without a validator, and why that is fine. Choice/multiselect questions are constrained by their
# choices (copier itself refuses anything else: "Invalid choice for ..."), bool ones by their type.
NO_VALIDATOR_NEEDED: dict[str, str] = {}

# Secret-looking values (built here so this file itself holds no token-shaped literal).
AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
HF_TOKEN = "hf_" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7"
PRIVATE_KEY = "-----BEGIN OPENSSH " + "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
# Temporary (STS) AWS keys start with ASIA; OpenAI-style keys with sk-; JWTs with eyJ; age private keys are
# AGE-SECRET-KEY-1...
AWS_TEMP_KEY_ID = "ASIA" + "Y3FDSNDKFHW7EXAM"
API_KEY = "sk-proj-" + "T3BlbkFJ" * 5
JWT = "eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiJzZXJ2aW5nIn0" + ".c2lnbmF0dXJlLXNpZ25hdHVyZQ"
AGE_KEY = "AGE-SECRET-KEY-1" + "QYWZ2R3LMNQ4X9" * 4
URL_PASSWORD = "Sup3rS3cret!"
TOKENS = {"aws": AWS_KEY_ID, "hf": HF_TOKEN, "key": PRIVATE_KEY}
TOKEN_WORDS = {"aws": "an AWS access key id", "hf": "a HuggingFace token", "key": "a private key"}

# Answers under which each question is asked (default answers ask the others).
GATED = {"catalog_models": ["llama-70b"]}  # a gated HuggingFace model: HF secret, ServiceAccount, store
S3 = {"catalog_models": ["qwen-7b-gguf"]}  # an S3 GGUF: S3 endpoint, region, credentials
FLUX = {"gitops_engine": "flux"}
KEDA = {"deployment_mode": "Standard", "catalog_models": ["qwen25-1-5b"],  # the keda component: vLLM, Standard mode
        "environments": [{"name": "gpu", "cluster": "in-cluster", "components": ["gpu", "monitoring", "keda"]}]}
ASKED_WHEN: dict[str, dict] = {
    **dict.fromkeys(["s3_bucket", "s3_endpoint", "s3_region", "s3_secret_name", "s3_service_account_name", "eso_s3_key"], S3),
    **dict.fromkeys(["hf_secret_name", "hf_service_account_name", "eso_store_name", "eso_hf_token_key"], GATED),
    "sops_age_recipients": {**GATED, "secrets_provider": "sops", **FLUX},
    **dict.fromkeys(["flux_namespace", "sync_interval", "sync_timeout", "flux_service_account"], FLUX),
    **dict.fromkeys(["keda_prometheus_url", "keda_kv_cache_target"], KEDA),
}


def vllm(name: str = "m1", **fields) -> dict:
    return {"name": name, "runtime": "vllm", "storageUri": "hf://org/model", "gpus": 1, **fields}


def llamacpp(name: str = "m1", **fields) -> dict:
    return {"name": name, "runtime": "llamacpp", "storageUri": "hf://org/model-GGUF", "file": "model-q4.gguf", **fields}


def ollama(name: str = "m1", **fields) -> dict:
    return {"name": name, "runtime": "ollama", "modelTag": "qwen3:4b", **fields}


def models(*entries: dict, **answers) -> dict:
    return {"custom_models": list(entries), **answers}


def env(name: str, *components: str, cluster: str = "in-cluster") -> dict:
    return {"name": name, "cluster": cluster, "components": list(components)}


@dataclass(frozen=True)
class Case:
    id: str
    answers: dict
    question: str
    words: tuple[str, ...]  # what is wrong and how to fix it, as the message must say it
    secret: str = ""  # a secret in the answers: the message must not repeat it


def case(id: str, answers: dict, question: str, *words: str, secret: str = "") -> Case:
    return Case(id, answers, question, words, secret)


LONG = "a" * 64
CASES: list[Case] = [
    # --- DNS-1123 names and their length limits
    case("project-name-not-dns", {"project_name": "LLM_Serving"}, "project_name", "not a DNS-1123 label",
         "llm-serving"),
    case("project-name-too-long", {"project_name": "p" * 41}, "project_name", "too long", "at most 40"),
    case("namespace-not-dns", {"namespace": "llm platform"}, "namespace", "not a DNS-1123 label", "e.g. llm-platform"),
    case("namespace-leading-dash", {"namespace": "-llm"}, "namespace", "not a DNS-1123 label", "starting and ending"),
    case("namespace-trailing-dash", {"namespace": "llm-"}, "namespace", "not a DNS-1123 label", "e.g. llm"),
    case("model-name-trailing-dash", models(vllm("m1-")), "custom_models", "models[m1-].name", "not a DNS-1123 label"),
    case("environment-name-trailing-dash", {"environments": [env("cpu-", "cpu")]}, "environments",
         "environments[0].name", "not a DNS-1123 label"),
    case("namespace-too-long", {"namespace": LONG}, "namespace", "too long", "at most 63"),
    case("namespace-reads-as-number", {"namespace": "010"}, "namespace", "reads as a number", "use another name"),
    case("namespace-reads-as-boolean", {"namespace": "yes"}, "namespace", "reads as a number, boolean", "name-yes"),
    case("vllm-runtime-name-not-dns", {"vllm_runtime_name": "vLLM"}, "vllm_runtime_name", "not a DNS-1123 label",
         "vllm"),
    case("llamacpp-runtime-name-not-dns", {"llamacpp_runtime_name": "llama.cpp"}, "llamacpp_runtime_name",
         "not a DNS-1123 label", "llama-cpp"),
    case("ollama-runtime-name-too-long", {"ollama_runtime_name": LONG}, "ollama_runtime_name", "too long",
         "at most 63"),
    case("model-name-not-dns", models(vllm("My_Model")), "custom_models", "models[My_Model].name",
         "not a DNS-1123 label", "my-model"),
    case("model-name-too-long", models(vllm("m" * 46)), "custom_models", ".name: too long", "at most 45"),
    case("model-name-reads-as-null", models(vllm("null")), "custom_models", "models[null].name", "reads as",
         "name-null"),
    case("environment-name-not-dns", {"environments": [env("Prod_EU", "cpu")]}, "environments",
         "environments[0].name", "not a DNS-1123 label", "prod-eu"),
    case("environment-name-too-long", {"environments": [env("e" * 41, "cpu")]}, "environments",
         "environments[0].name: too long", "at most 40"),
    case("environment-cluster-not-dns", {"environments": [env("cpu", "cpu", cluster="In Cluster")]}, "environments",
         "environments[cpu].cluster", "not a DNS-1123 label", "in-cluster"),
    case("ingress-namespace-not-dns", {"ingress_namespaces": ["Istio_System"]}, "ingress_namespaces",
         "not a DNS-1123 label", "istio-system"),
    case("s3-secret-name-not-dns", {**S3, "s3_secret_name": "S3 creds"}, "s3_secret_name", "not a DNS-1123 label",
         "s3-creds"),
    # --- duplicates
    case("duplicate-model-name-catalog", models(vllm("qwen25-1-5b")), "custom_models", "models[qwen25-1-5b]",
         "used twice", "must be unique"),
    case("duplicate-model-name-custom", models(vllm("m1"), llamacpp("m1")), "custom_models", "models[m1]",
         "used twice", "must be unique"),
    case("duplicate-environment-name", {"environments": [env("dev", "gpu"), env("dev", "cpu")]}, "environments",
         "environments[dev]", "used twice", "must be unique"),
    case("duplicate-component", {"environments": [env("cpu", "cpu", "cpu")]}, "environments",
         "cpu is listed twice", "list it once"),
    # --- GPUs and tensor parallelism
    case("gpus-above-8", models(vllm(gpus=9, tensorParallelSize=9)), "custom_models", "models[m1].gpus",
         "at most 8", "got 9"),
    case("gpus-negative", models(ollama(gpus=-1)), "custom_models", "models[m1].gpus", "at least 0", "got -1"),
    case("gpus-not-a-number", models(vllm(gpus="two")), "custom_models", "models[m1].gpus", "whole number"),
    case("vllm-zero-gpus", models(vllm(gpus=0)), "custom_models", "models[m1].gpus", "vLLM needs at least 1 GPU",
         "set gpus (and tensorParallelSize) to 1 or more"),
    case("tensor-parallel-not-gpus", models(vllm(gpus=2, tensorParallelSize=4)), "custom_models",
         "models[m1].tensorParallelSize", "4 does not match gpus 2", "set both to the same number"),
    case("tensor-parallel-in-args", models(vllm(args=["--tensor-parallel-size=2"])), "custom_models",
         "do not pass --tensor-parallel-size", "set tensorParallelSize"),
    case("tensor-parallel-on-llamacpp", models(llamacpp(tensorParallelSize=1)), "custom_models",
         "only vLLM uses tensor parallelism", "remove it"),
    case("gpu-memory-utilization-zero", {"vllm_gpu_memory_utilization": 0}, "vllm_gpu_memory_utilization",
         "outside (0, 1]", "such as 0.85"),
    case("gpu-memory-utilization-above-1", {"vllm_gpu_memory_utilization": 1.5}, "vllm_gpu_memory_utilization",
         "1.5 is outside (0, 1]", "such as 0.85"),
    case("gpu-memory-utilization-negative", {"vllm_gpu_memory_utilization": -0.1}, "vllm_gpu_memory_utilization",
         "-0.1 is outside (0, 1]", "such as 0.85"),
    # --- non-positive sizes
    case("vllm-max-model-len-zero", {"vllm_max_model_len": 0}, "vllm_max_model_len", "at least 1", "got 0"),
    case("llamacpp-threads-zero", {"llamacpp_threads": 0}, "llamacpp_threads", "at least 1", "got 0"),
    case("llamacpp-context-negative", {"llamacpp_context_per_slot": -1}, "llamacpp_context_per_slot", "at least 1",
         "got -1"),
    case("llamacpp-slots-zero", {"llamacpp_parallel_slots": 0}, "llamacpp_parallel_slots", "at least 1", "got 0"),
    case("ollama-parallel-zero", {"ollama_num_parallel": 0}, "ollama_num_parallel", "at least 1", "got 0"),
    case("ollama-context-zero", {"ollama_context_length": 0}, "ollama_context_length", "at least 1", "got 0"),
    # --- replicas and autoscaling
    case("min-above-max-replicas", models(vllm(minReplicas=3, maxReplicas=2)), "custom_models",
         "models[m1].minReplicas: 3 is more than maxReplicas 2", "lower minReplicas or raise maxReplicas"),
    case("negative-min-replicas", models(vllm(minReplicas=-1)), "custom_models", "models[m1].minReplicas",
         "at least 0", "got -1"),
    case("negative-max-replicas", models(vllm(maxReplicas=-2)), "custom_models", "models[m1].maxReplicas",
         "at least 1", "got -2"),
    case("zero-max-replicas", models(vllm(maxReplicas=0)), "custom_models", "models[m1].maxReplicas", "at least 1"),
    case("standard-scale-to-zero", models(vllm(minReplicas=0), deployment_mode="Standard"), "custom_models",
         "scale-to-zero", "needs Knative mode", "set minReplicas to 1 or deployment_mode to Knative"),
    case("standard-concurrency-metric", models(vllm(scaleMetric="concurrency"), deployment_mode="Standard"),
         "custom_models", "models[m1].scaleMetric", "not available in Standard mode", "use cpu or memory"),
    case("standard-rps-metric", models(vllm(scaleMetric="rps"), deployment_mode="Standard"), "custom_models",
         "\"rps\" is not available in Standard mode", "use cpu or memory"),
    case("standard-scale-down-delay", models(vllm(scaleDownDelay="10m"), deployment_mode="Standard"),
         "custom_models", "scale-down delay is a Knative feature", "remove it in Standard mode"),
    # --- storage
    case("unknown-storage-scheme", models(vllm(storageUri="gs://bucket/model")), "custom_models",
         "models[m1].storageUri", "scheme gs://", "use hf://org/repo, s3://bucket/path or pvc://claim/path"),
    case("storage-without-scheme", models(vllm(storageUri="Qwen/Qwen2.5-7B")), "custom_models", "has no scheme",
         "use hf://org/repo"),
    case("llamacpp-not-gguf", models(llamacpp(file="model.safetensors")), "custom_models", "models[m1].file",
         "not a .gguf file", "convert it, or serve safetensors with vLLM"),
    case("llamacpp-no-file", models(llamacpp(file="")), "custom_models", "models[m1].file",
         "llama.cpp loads one GGUF file", "set file"),
    case("ollama-hf-uri", models(ollama(storageUri="hf://Qwen/Qwen3-4B")), "custom_models",
         "hf:// is for vLLM and llama.cpp", "remove storageUri and set modelTag"),
    case("s3-without-bucket", models(llamacpp(storageUri="s3:///qwen.gguf", file="")), "custom_models",
         "has no valid bucket", "use s3://bucket/path/to/model"),
    case("s3-scheme-only", models(vllm(storageUri="s3://")), "custom_models", "has no valid bucket",
         "s3://bucket/path"),
    case("gated-on-s3", models(vllm(storageUri="s3://models/llama", gated=True)), "custom_models",
         "models[m1].gated", "gated models come from HuggingFace", "use an hf:// storageUri, or set gated: false"),
    case("gated-on-pvc", models(vllm(storageUri="pvc://models/llama", gated=True)), "custom_models",
         "gated models come from HuggingFace"),
    case("model-runtime-not-selected", models(ollama(), runtimes=["vllm"]), "custom_models",
         "not among the selected runtimes", "add it to runtimes"),
    case("unknown-runtime", models({"name": "m1", "runtime": "tgi"}), "custom_models", "unknown runtime \"tgi\"",
         "use one of vllm, llamacpp, ollama"),
    case("runtime-not-text", models({"name": "m1", "runtime": ["vllm"]}), "custom_models", "models[m1].runtime",
         "use one of vllm"),
    case("priority-not-text", models(vllm(priority={"tier": "critical"})), "custom_models", "models[m1].priority",
         "use critical, standard, batch"),
    case("unknown-model-field", models(vllm(replicas=2)), "custom_models", "unknown field \"replicas\"",
         "use name, runtime"),
    case("toleration-seconds-not-a-number", models(vllm(tolerations=[{"key": "a", "tolerationSeconds": "x"}])),
         "custom_models", "tolerationSeconds", "whole number of seconds"),
    # --- environments and components
    case("vllm-only-environment-deploys-nothing", {"runtimes": ["vllm"], "environments": [env("cpu")]},
         "environments", "environments[cpu]: deploys nothing", "add gpu"),
    case("inference-pool-without-gpu", {"environments": [env("gpu", "inference-pool", "monitoring")]},
         "environments", "inference-pool requires gpu", "add gpu or remove inference-pool"),
    case("cpu-component-without-cpu-runtimes", {"runtimes": ["vllm"], "environments": [env("cpu", "cpu")]},
         "environments", "cpu acts on llamacpp/ollama", "remove cpu"),
    case("gpu-and-cpu-conflict", {"environments": [env("mixed", "gpu", "cpu")]}, "environments",
         "gpu and cpu conflict", "keep one of them"),
    case("unknown-component", {"environments": [env("gpu", "gpu", "tpu")]}, "environments",
         "unknown component \"tpu\"", "use gpu, cpu, s3, gated-hf, inference-pool, monitoring, keda"),
    case("component-not-text", {"environments": [env("gpu", "gpu", ["monitoring"])]}, "environments",
         "unknown component", "use gpu, cpu"),
    case("components-missing", {"environments": [{"name": "cpu", "cluster": "in-cluster"}]}, "environments",
         "environments[cpu].components: missing", "[] for none"),
    case("s3-model-without-s3-component", {**S3, "environments": [env("cpu", "cpu", "monitoring")]},
         "environments", "load from s3://", "add the s3 component"),
    case("gated-model-without-gated-hf", {**GATED, "environments": [env("gpu", "gpu")]}, "environments",
         "gated models are deployed here", "add the gated-hf component"),
    case("no-environments", {"environments": []}, "environments", "must be a non-empty YAML list", "e.g. [{name:"),
    # --- repository URL
    case("repo-url-no-scheme", {"repo_url": "github.com/example-org/llm-serving.git"}, "repo_url",
         "is not a Git repository URL", "use https://host/org/repo.git or ssh://git@host/org/repo.git"),
    case("repo-url-ftp", {"repo_url": "ftp://example.com/llm-serving.git"}, "repo_url",
         "is not a Git repository URL", "use https://host/org/repo.git"),
    case("repo-url-no-path", {"repo_url": "https://github.com"}, "repo_url", "is not a Git repository URL"),
    case("repo-url-scp-style", {"repo_url": "git@github.com:example-org/llm-serving.git"}, "repo_url",
         "is not a Git repository URL", "ssh://git@host/org/repo.git"),
    case("repo-url-with-password", {"repo_url": "https://deploy:s3cr3tvalue@github.com/org/repo.git"}, "repo_url",
         "the URL carries credentials", "give the plain URL and configure access in Argo CD / Flux",
         secret="s3cr3tvalue"),
    case("repo-url-with-token-user", {"repo_url": f"https://{GITHUB_TOKEN}@github.com/org/repo.git"}, "repo_url",
         "looks like it contains an access token", "store it with your secrets provider", secret=GITHUB_TOKEN),
    case("repo-url-with-opaque-user", {"repo_url": "https://x0x0x0x0@github.com/org/repo.git"}, "repo_url",
         "the URL carries credentials", "configure access in Argo CD / Flux"),
    case("repo-branch-dots", {"repo_branch": "release..1"}, "repo_branch", "not a branch name", "e.g. main"),
    # --- ports
    case("epp-port-zero", {"epp_service_port": 0}, "epp_service_port", "at least 1", "got 0"),
    case("epp-port-too-high", {"epp_service_port": 65536}, "epp_service_port", "at most 65535", "got 65536"),
    case("pool-target-port-too-high", {"inference_pool_target_port": 70000}, "inference_pool_target_port",
         "at most 65535", "got 70000"),
    case("pool-target-port-negative", {"inference_pool_target_port": -8080}, "inference_pool_target_port",
         "at least 1"),
    # --- other free text
    case("kubernetes-version", {"kubernetes_version": "v1.33"}, "kubernetes_version", "not a version",
         "e.g. 1.33.0"),
    case("image-with-tag", {"vllm_image": "vllm/vllm-openai:v0.9.2"}, "vllm_image", "not an image name",
         "without a tag"),
    case("image-tag-latest", {"ollama_image_tag": "latest"}, "ollama_image_tag", "\"latest\" is not a pin",
         "use a version tag, or leave empty"),
    case("keep-alive-not-duration", {"ollama_keep_alive": "forever"}, "ollama_keep_alive", "not a duration",
         "e.g. 30s, 10m or 1h30m"),
    case("sync-interval-not-duration", {**FLUX, "sync_interval": "10 minutes"}, "sync_interval", "not a duration",
         "e.g. 30s"),
    case("s3-endpoint-with-scheme", {**S3, "s3_endpoint": "https://s3.amazonaws.com"}, "s3_endpoint",
         "give the host[:port] only", "s3_use_https"),
    case("age-private-key", {**ASKED_WHEN["sops_age_recipients"], "sops_age_recipients": "AGE-SECRET-KEY-1QQQ"},
         "sops_age_recipients", "give age public keys", "never the private AGE-SECRET-KEY"),
    case("node-selector-not-a-mapping", {"gpu_node_selector": ["nvidia.com/gpu.present"]}, "gpu_node_selector",
         "must be a YAML mapping", "{key: value}"),
    case("annotations-empty", {**S3, "s3_auth": "keyless", "s3_service_account_annotations": {}},
         "s3_service_account_annotations", "must not be empty"),
    case("annotation-key-reads-as-boolean",
         {**S3, "s3_auth": "keyless", "s3_service_account_annotations": {"true": "x"}}, "s3_service_account_annotations", 'key "true": kustomize reads it as a number, boolean', "use a prefixed key"),
    case("node-selector-key-reads-as-date", models(vllm(nodeSelector={"2024-01-01": "x"})), "custom_models",
         'models[m1].nodeSelector key "2024-01-01"', "e.g. example.com/2024-01-01"),
    case("merge-key-as-value", models(vllm(args=["<<"])), "custom_models", "models[m1].args[0]",
         "YAML syntax that kustomize writes unquoted", "use another value"),
    case("env-value-multiline", models(vllm(env={"X": "a\nb"})), "custom_models", "models[m1].env[X]",
         "must be one line"),
    case("model-name-multiline", models(vllm("a\nb")), "custom_models", "models[a\\nb].name", "must be one line"),
    # --- secrets typed into YAML answers
    case("credential-env-name", models(vllm(env={"HF_TOKEN": "x"})), "custom_models", "models[m1].env.HF_TOKEN",
         "credentials never go into the repo", "gated-hf component"),
    case("token-in-env-value", models(vllm(env={"HUB": HF_TOKEN})), "custom_models", "models[m1].env[HUB]",
         "looks like it contains a HuggingFace token", "secrets provider", secret=HF_TOKEN),
    case("key-id-in-args", models(vllm(args=[f"--aws-key={AWS_KEY_ID}"])), "custom_models", "models[m1].args[0]",
         "looks like it contains an AWS access key id", secret=AWS_KEY_ID),
    case("private-key-in-node-selector", {"gpu_node_selector": {"pem": PRIVATE_KEY}}, "gpu_node_selector",
         "looks like it contains a private key", "secrets never go into the repo", secret=PRIVATE_KEY),
    case("token-in-storage-uri", models(vllm(storageUri=f"s3://bucket/{AWS_KEY_ID}")), "custom_models",
         "models[m1].storageUri", "an AWS access key id", secret=AWS_KEY_ID),
    case("password-in-annotation", {**S3, "s3_auth": "keyless",
                                    "s3_service_account_annotations": {"password": "password=hunter2hunter2"}},
         "s3_service_account_annotations", "a password or secret key", secret="hunter2hunter2"),
    case("token-in-cluster", {"environments": [env("cpu", "cpu", cluster=HF_TOKEN)]}, "environments",
         "environments[cpu].cluster", "a HuggingFace token", secret=HF_TOKEN),
    case("token-in-toleration", models(vllm(tolerations=[{"key": "k", "value": GITHUB_TOKEN}])), "custom_models",
         "tolerations[0].value", "an access token", secret=GITHUB_TOKEN),
    # --- secret shapes (issue 15): temporary AWS keys, sk- keys, JWTs, age keys, credentials in URLs
    case("temporary-aws-key-in-args", models(vllm(args=[f"--key={AWS_TEMP_KEY_ID}"])), "custom_models",
         "models[m1].args[0]", "an AWS access key id", secret=AWS_TEMP_KEY_ID),
    case("api-key-in-args", models(vllm(args=[f"--api-key={API_KEY}"])), "custom_models", "models[m1].args[0]",
         "an API key (sk-...)", secret=API_KEY),
    case("jwt-in-env-value", models(vllm(env={"AUTH_HEADER_VALUE": JWT})), "custom_models", "models[m1].env",
         "a JSON Web Token", secret=JWT),
    case("age-key-as-store-key", {**GATED, "eso_hf_token_key": AGE_KEY}, "eso_hf_token_key",
         "a private age key", secret=AGE_KEY),
    case("credentials-in-s3-endpoint", {**S3, "s3_endpoint": f"admin:{URL_PASSWORD}@minio.minio.svc:9000"},
         "s3_endpoint", "credentials in a URL", secret=URL_PASSWORD),
    case("credentials-in-uri-arg", models(vllm(args=[f"--db=postgres://llm:{URL_PASSWORD}@db:5432/x"])),
         "custom_models", "credentials in a URL", secret=URL_PASSWORD),
    # --- environment variables whose names say they hold a credential never get a literal value
    *[case(f"credential-named-env-{name.lower()}", models(vllm(env={name: "p@ss:w0rd!long"})), "custom_models",
           f"models[m1].env.{name}", "holds a credential", "valueFrom.secretKeyRef", secret="p@ss:w0rd!long")
      for name in ("DB_PASSWORD", "OPENAI_API_KEY", "GITHUB_TOKEN", "CLIENT_SECRET", "api_key")],
    # --- egress
    case("egress-cidr-not-a-cidr", {"egress_cidrs": ["proxy.corp:3128"]}, "egress_cidrs", "egress_cidrs[0]",
         "not an IPv4 CIDR"),
    case("egress-cidr-covers-metadata", {"egress_cidrs": ["10.0.0.0/8", "169.254.0.0/16"]}, "egress_cidrs",
         "egress_cidrs[1]", "metadata endpoint 169.254.169.254"),
    case("egress-cidr-everything", {"egress_cidrs": ["0.0.0.0/0"]}, "egress_cidrs", "metadata endpoint"),
]
# A token or key typed into any free-text question, cycling through the kinds of secret.
CASES += [
    case(f"token-in-{name}", {**ASKED_WHEN.get(name, {}), name: TOKENS[kind]}, name, f"{name}: looks like it contains",
         TOKEN_WORDS[kind], "store it with your secrets provider", secret=TOKENS[kind])
    for name, kind in zip(FREE_TEXT, list(TOKENS) * len(FREE_TEXT))
]
BY_ID = {c.id: c for c in CASES}

# Run through the copier CLI as well (what users type); the token case among them.
CLI_CASES = [
    "namespace-not-dns", "model-name-too-long", "duplicate-environment-name", "vllm-zero-gpus",
    "tensor-parallel-not-gpus", "gpu-memory-utilization-above-1", "standard-scale-to-zero", "llamacpp-not-gguf",
    "ollama-hf-uri", "gpu-and-cpu-conflict", "repo-url-with-password", "epp-port-too-high",
    "token-in-env-value", "token-in-project_name",
]
# Copied over an existing, committed generated repo: it must stay byte for byte as it was.
OVER_EXISTING_CASES = ["namespace-not-dns", "gpu-and-cpu-conflict", "token-in-env-value"]


@pytest.fixture(scope="module")
def template():
    """The working tree's template as a plain folder (no git clone per copy)."""
    with render.template_snapshot() as snapshot:
        yield snapshot


def refusal(template: Path, dst: Path, answers: dict) -> str:
    with pytest.raises(ValueError) as info:
        render.render(dst, answers, template=template, vcs_ref=None)
    return str(info.value)


def check_message(message: str, c: Case) -> None:
    prefix = f"Validation error for question '{c.question}': "
    assert message.startswith(prefix), message
    assert "\n" not in message, f"not one line: {message!r}"
    for word in c.words:
        assert word in message, f"{word!r} missing from: {message}"
    if c.secret:
        assert c.secret not in message, "the message repeats the secret"


def tree(folder: Path) -> dict[str, str]:
    """Every file below folder (the .git folder aside: git may refresh its index) -> sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file() and ".git" not in p.relative_to(folder).parts
    }


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout


# ------------------------------------------------------------------------------------------------- tests


def test_every_asked_question_has_a_validator():
    kinds = {name: spec.get("type") for name, spec in ASKED.items()}
    assert set(kinds.values()) <= {"str", "int", "float", "bool", "yaml"}, kinds
    missing = [
        name for name, spec in ASKED.items()
        if spec.get("type") in ("str", "int", "float", "yaml") and "choices" not in spec and "validator" not in spec
    ]
    assert missing == list(NO_VALIDATOR_NEEDED), f"questions without a validator: {missing}"
    # Sanity: the parse found the questionnaire (and its computed answers are left out).
    assert {"project_name", "custom_models", "environments", "flux_service_account"} <= set(ASKED)
    assert not {"models", "env_plans", "components_used", "catalog"} & set(ASKED)


def test_every_free_text_question_is_asked_under_its_token_answers():
    """The token cases reach every free-text question (each refusal names it, so a question that was not asked
    would show as a failed case); this keeps the list of those questions honest."""
    assert FREE_TEXT and all(f"token-in-{name}" in BY_ID for name in FREE_TEXT)
    assert set(ASKED_WHEN) <= set(FREE_TEXT)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_answer_is_refused_and_nothing_is_written(template, tmp_path, c):
    dst = tmp_path / "repo"
    check_message(refusal(template, dst, c.answers), c)
    assert not dst.exists(), f"copier left {sorted(p.name for p in dst.iterdir())} behind"


@pytest.mark.parametrize("case_id", OVER_EXISTING_CASES)
def test_refused_copy_over_a_generated_repo_leaves_it_untouched(template, tmp_path, case_id):
    dst = render.render(tmp_path / "repo", {}, template=template, vcs_ref=None)
    git(dst, "init", "-q", "-b", "main")
    git(dst, "add", "-A")
    git(dst, "commit", "-q", "-m", "Generated")
    before = tree(dst)
    assert ".copier-answers.yml" in before and len(before) > 20

    check_message(refusal(template, dst, BY_ID[case_id].answers), BY_ID[case_id])

    assert tree(dst) == before
    assert git(dst, "status", "--porcelain", "--untracked-files=all", "--ignored") == ""


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_copier_cli_refuses_with_the_question_and_the_fix(template, tmp_path, case_id):
    c = BY_ID[case_id]
    answers, dst = tmp_path / "answers.yml", tmp_path / "repo"
    answers.write_text(yaml.safe_dump(c.answers))
    result = subprocess.run(
        [str(COPIER), "copy", "--defaults", "--data-file", str(answers), str(template), str(dst)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0, result.stdout
    last = result.stderr.strip().splitlines()[-1]
    check_message(last.removeprefix("ValueError: "), c)
    assert not dst.exists()


def test_choices_refuse_anything_else(template, tmp_path):
    """Questions without a validator of their own: copier checks the answer against the choices."""
    message = refusal(template, tmp_path / "repo", {"deployment_mode": "Serverless"})
    assert message == "Invalid choice for 'deployment_mode': 'Serverless' is not in ['Knative', 'Standard']"
    message = refusal(template, tmp_path / "repo", {"catalog_models": ["gpt-5"]})
    assert message.startswith("Invalid choice for 'catalog_models': 'gpt-5' is not in [")
    assert not (tmp_path / "repo").exists()


# --- what looks wrong but is accepted on purpose -----------------------------------------------------------


def test_vllm_models_are_left_out_of_an_environment_without_gpu(template, tmp_path):
    """A GPU model in an environment without the gpu component is not an error: that environment runs what it
    can and says what it leaves out (an environment left with nothing to deploy is refused, above)."""
    environments = [env("gpu", "gpu"), {**env("cpu", "cpu", "monitoring"), "cluster": "cpu-cluster"}]
    repo = render.render(tmp_path / "repo", {"environments": environments}, template=template, vcs_ref=None)
    kustomization = (repo / "environments/cpu/models/kustomization.yaml").read_text()
    resources = yaml.safe_load(kustomization)["resources"]
    assert not any("qwen25-1-5b" in r for r in resources)
    assert any("qwen25-0-5b-gguf" in r for r in resources)
    assert "qwen25-1-5b (vllm, 1 GPU) is left out: it needs the gpu component" in kustomization


def test_a_model_no_environment_deploys_is_refused(template, tmp_path):
    with pytest.raises(ValueError) as refused:
        render.render(tmp_path / "repo", {"environments": [env("cpu", "cpu", "monitoring")]},
                      template=template, vcs_ref=None)
    assert "question 'environments': models[qwen25-1-5b]: no environment deploys it" in str(refused.value)
    assert "add gpu to an environment's components" in str(refused.value) and not (tmp_path / "repo").exists()


def test_two_environments_on_one_cluster_are_refused(template, tmp_path):
    with pytest.raises(ValueError) as refused:
        render.render(tmp_path / "repo", {"environments": [env("gpu", "gpu"), env("cpu", "cpu")]},
                      template=template, vcs_ref=None)
    assert "environments[cpu].cluster" in str(refused.value) and "give each environment its own cluster" in str(refused.value)


def test_ssh_repo_url_with_a_user_is_accepted(template, tmp_path):
    repo = render.render(tmp_path / "repo", {"repo_url": "ssh://git@github.com/example-org/llm-serving.git"},
                         template=template, vcs_ref=None)
    apps = list(yaml.safe_load_all((repo / "clusters/argocd/gpu.yaml").read_text()))
    assert [a["spec"]["source"]["repoURL"] for a in apps] == ["ssh://git@github.com/example-org/llm-serving.git"] * 2
