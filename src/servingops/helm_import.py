"""`servingops import-helm-values VALUES.yaml -o ANSWERS.yml`: a values file of the seed Helm chart
(model-serving, keys exactly as its README documents) -> a Copier data file for this template's questions.

MAPPING is the one table of seed keys: it drives the import (known keys, their types, the chart's defaults, the
answer each becomes) and is the README's table (`--print-mapping`). A key the table does not know, a value of
the wrong type, or anything secret is refused with one line naming the key; nothing is written then.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from . import releases, render
from .errors import InputError

DEFAULT_NAMESPACE = "llm-platform"  # the seed README's `helm install --namespace`


@dataclass(frozen=True)
class SeedKey:
    key: str  # dotted path in the values file
    kind: str  # bool | int | float | str | resources | tolerations | secret
    default: Any  # the chart's default (None: the chart documents none)
    answer: str  # the Copier answer it becomes; custom_models[].<field> for a model's keys
    note: str = ""


PIN = 'the template\'s pin becomes "" (= follow the pin, which `copier update` moves); other tags are kept'
MODEL = ("true: one {} model: the catalog entry of its name when every key below agrees with it (fields the chart "
         "leaves open come from the catalog), else a `custom_models` entry")
NO_KEYS = "refused: keys never go into the repo; the Secret comes from `secrets_provider`"

MAPPING: tuple[SeedKey, ...] = (
    SeedKey("servingRuntime.enabled", "bool", True, "runtimes", "true: `vllm` is in runtimes; false: left out"),
    SeedKey("servingRuntime.name", "str", "kserve-vllm", "vllm_runtime_name"),
    SeedKey("servingRuntime.image", "str", "kserve/huggingfaceserver", "vllm_image"),
    SeedKey("servingRuntime.tag", "str", "v0.16.0-gpu", "vllm_image_tag",
            "a KServe release's own tag (v0.16.0-gpu) sets kserve_version (v0.16) and becomes \"\" (= follow that "
            "release's pin, which `copier update -d kserve_version=...` moves); other tags are kept"),
    SeedKey("servingRuntime.gpuMemoryUtilization", "float", 0.85, "vllm_gpu_memory_utilization"),
    SeedKey("servingRuntime.maxModelLen", "int", 16384, "vllm_max_model_len"),
    SeedKey("servingRuntime.enablePrefixCaching", "bool", True, "vllm_enable_prefix_caching"),
    SeedKey("inferenceService.enabled", "bool", False, "catalog_models / custom_models", MODEL.format("vllm")),
    SeedKey("inferenceService.name", "str", "qwen25-1-5b", "custom_models[].name"),
    SeedKey("inferenceService.storageUri", "str", "hf://Qwen/Qwen2.5-1.5B-Instruct", "custom_models[].storageUri"),
    SeedKey("inferenceService.gpu", "int", 1, "custom_models[].gpus"),
    SeedKey("inferenceService.tensorParallelSize", "int", 1, "custom_models[].tensorParallelSize",
            "must equal inferenceService.gpu: a mismatch is refused"),
    SeedKey("inferenceService.minReplicas", "int", 0, "custom_models[].minReplicas"),
    SeedKey("inferenceService.maxReplicas", "int", 3, "custom_models[].maxReplicas"),
    SeedKey("inferenceService.scaleMetric", "str", "concurrency", "custom_models[].scaleMetric"),
    SeedKey("inferenceService.scaleTarget", "int", 10, "custom_models[].scaleTarget"),
    SeedKey("inferenceService.huggingfaceSecret", "str", "", "custom_models[].gated + hf_secret_name",
            "set: the model is gated and gets HF_TOKEN from this Secret (component gated-hf)"),
    SeedKey("inferenceService.autoscaling.scaleDownDelay", "str", None, "custom_models[].scaleDownDelay"),
    SeedKey("llamacppRuntime.enabled", "bool", True, "runtimes", "true: `llamacpp` is in runtimes; false: left out"),
    SeedKey("llamacppRuntime.name", "str", "kserve-llamacpp", "llamacpp_runtime_name"),
    SeedKey("llamacppRuntime.image", "str", "ghcr.io/ggml-org/llama.cpp", "llamacpp_image"),
    SeedKey("llamacppRuntime.tag", "str", "server-b7850", "llamacpp_image_tag", PIN),
    SeedKey("llamacppRuntime.threads", "int", 16, "llamacpp_threads"),
    SeedKey("llamacppRuntime.contextWindow", "int", 16384, "llamacpp_context_per_slot",
            "per slot: llama.cpp's --ctx-size is contextWindow x parallelSlots"),
    SeedKey("llamacppRuntime.parallelSlots", "int", 4, "llamacpp_parallel_slots"),
    SeedKey("llamacppInferenceService.enabled", "bool", False, "catalog_models / custom_models",
            MODEL.format("llamacpp")),
    SeedKey("llamacppInferenceService.name", "str", "qwen25-7b-gguf", "custom_models[].name"),
    SeedKey("llamacppInferenceService.storageUri", "str", None, "custom_models[].storageUri",
            "the .gguf file's URI; the chart's default is a placeholder, so it must be set"),
    SeedKey("llamacppInferenceService.serviceAccountName", "str", "", "s3_service_account_name",
            "s3:// models only; must agree with s3Storage.serviceAccountName"),
    SeedKey("ollamaRuntime.enabled", "bool", True, "runtimes", "true: `ollama` is in runtimes; false: left out"),
    SeedKey("ollamaRuntime.name", "str", "kserve-ollama", "ollama_runtime_name"),
    SeedKey("ollamaRuntime.image", "str", "ollama/ollama", "ollama_image"),
    SeedKey("ollamaRuntime.tag", "str", "0.15.2", "ollama_image_tag", PIN),
    SeedKey("ollamaRuntime.numParallel", "int", 4, "ollama_num_parallel"),
    SeedKey("ollamaRuntime.contextLength", "int", 16384, "ollama_context_length"),
    SeedKey("ollamaRuntime.flashAttention", "bool", True, "ollama_flash_attention"),
    SeedKey("ollamaInferenceService.enabled", "bool", False, "catalog_models / custom_models",
            MODEL.format("ollama")),
    SeedKey("ollamaInferenceService.name", "str", "qwen3-4b-ollama", "custom_models[].name"),
    SeedKey("ollamaInferenceService.modelTag", "str", "qwen3:4b", "custom_models[].modelTag"),
    SeedKey("ollamaInferenceService.gpu", "int", 0, "custom_models[].gpus"),
    SeedKey("ollamaInferenceService.resources", "resources", None, "custom_models[].resources",
            "cpu or memory missing on one side (requests/limits) is copied from the other side"),
    SeedKey("ollamaInferenceService.tolerations", "tolerations", None, "custom_models[].tolerations",
            "the nvidia.com/gpu NoSchedule toleration is left to the gpu component, which adds it"),
    SeedKey("s3Storage.enabled", "bool", False, "s3_auth",
            "`static` (an access key pair) whenever a model loads from s3://"),
    SeedKey("s3Storage.secretName", "str", "s3-model-creds", "s3_secret_name"),
    SeedKey("s3Storage.serviceAccountName", "str", "s3-model-sa", "s3_service_account_name"),
    SeedKey("s3Storage.endpoint", "str", "s3.amazonaws.com", "s3_endpoint",
            "an http:// or https:// prefix becomes s3_use_https"),
    SeedKey("s3Storage.region", "str", "us-east-1", "s3_region"),
    SeedKey("s3Storage.accessKeyId", "secret", "", "(none)", NO_KEYS),
    SeedKey("s3Storage.secretAccessKey", "secret", "", "(none)", NO_KEYS),
    SeedKey("huggingface.secretEnabled", "bool", False, "(none)",
            "the Secret comes from `secrets_provider` (default external-secrets)"),
    SeedKey("huggingface.secretName", "str", "hf-secret", "hf_secret_name",
            "must agree with inferenceService.huggingfaceSecret"),
    SeedKey("huggingface.token", "secret", "", "(none)", NO_KEYS.replace("keys never go", "tokens never go")),
    SeedKey("inferencePool.enabled", "bool", False, "environments[].components",
            "true: inference-pool; needs a vLLM model (only vLLM models join a pool)"),
    SeedKey("inferencePool.targetPort", "int", 8080, "inference_pool_target_port"),
    SeedKey("inferencePool.eppServiceName", "str", "", "(none)",
            "one endpoint picker per pool is generated (`<model>-epp`): a picker serves exactly one pool"),
    SeedKey("inferencePool.eppServicePort", "int", 9002, "epp_service_port"),
    SeedKey("inferencePoolRoute.enabled", "bool", False, "(none)",
            "the inference-pool component always routes the gateway to its pools: false with a pool is refused"),
    SeedKey("inferencePoolRoute.gatewayName", "str", "inference-gateway", "gateway_name"),
)

KEYS = {row.key: row for row in MAPPING}
PREFIXES = {row.key.rsplit(".", n)[0] for row in MAPPING for n in range(1, row.key.count(".") + 1)}
RUNTIME_SECTIONS = {"vllm": "servingRuntime", "llamacpp": "llamacppRuntime", "ollama": "ollamaRuntime"}
MODEL_SECTIONS = {"vllm": "inferenceService", "llamacpp": "llamacppInferenceService",
                  "ollama": "ollamaInferenceService"}
MODEL_FIELD = "custom_models[]."
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# What a secret looks like: the same list copier's validators use (overlays-catalog/secret-patterns.yml),
# checked on every value before anything is written.
SECRET_PATTERNS = tuple(render.secret_patterns())
SECRETS_HOME = 'store it with your secrets provider instead (generated README, "Secrets")'


def mapping_rows() -> list[tuple[str, str, str]]:
    """(seed key, Copier answer, note) for every key the seed README documents."""
    return [(row.key, row.answer, row.note) for row in MAPPING]


def mapping_markdown() -> str:
    lines = ["| Seed chart key | Copier answer | Notes |", "|---|---|---|"]
    for key, answer, note in mapping_rows():
        shown = answer if answer.startswith("(") else re.sub(r"([^ /+]+)", r"`\1`", answer)
        lines.append(f"| `{key}` | {shown} | {note} |")
    return "\n".join(lines) + "\n"


# --- reading the values file --------------------------------------------------------------------------------


class Values:
    """A values file as {dotted key: value}: every key known, of its documented type, nothing secret."""

    def __init__(self, data: Any, source: str):
        self.source = source
        self.set: dict[str, Any] = {}
        if data is not None and not isinstance(data, dict):
            raise self.error("(top level)", "must be a mapping of the chart's values, e.g. inferenceService: {...}")
        # Every refused key at once (one line each): a user fixes them in one pass, not one run per key.
        self.problems: list[InputError] = []
        self._walk(data or {}, "")
        if self.problems:
            raise InputError("\n".join(str(problem) for problem in self.problems))

    def error(self, key: str, message: str) -> InputError:
        return InputError(f"{self.source}: {key}: {message}")

    def get(self, key: str) -> Any:
        return self.set[key] if key in self.set else KEYS[key].default

    def _walk(self, mapping: dict, prefix: str) -> None:
        for name, value in mapping.items():
            key = f"{prefix}{name}"
            try:
                if key in KEYS:
                    self._check(KEYS[key], value)
                    self.set[key] = value
                elif key in PREFIXES:
                    if value is not None and not isinstance(value, dict):
                        raise self.error(key, f"must be a mapping of keys, got {json.dumps(value, default=str)}")
                    self._walk(value or {}, key + ".")
                else:
                    close = difflib.get_close_matches(key, [*KEYS, *PREFIXES], n=1, cutoff=0.75)
                    hint = f"did you mean {close[0]}? otherwise " if close else ""
                    raise self.error(key, f"unknown key: the seed chart documents no such value: {hint}remove it "
                                          "(`servingops import-helm-values --print-mapping` lists every key)")
            except InputError as problem:
                self.problems.append(problem)

    def _check(self, row: SeedKey, value: Any) -> None:
        if row.kind == "secret":
            if value not in (None, ""):
                what = "a HuggingFace token" if row.key == "huggingface.token" else "an S3 access key"
                raise self.error(row.key, f"{what} in a values file is refused: delete the key and {SECRETS_HOME}")
            return
        accepts, expected = {
            "bool": (lambda v: isinstance(v, bool), "true or false"),
            "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
            "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
            "str": (lambda v: isinstance(v, str), "text (quote it)"),
            "resources": (_is_resources, "{requests: {cpu, memory}, limits: {cpu, memory}} (GPUs: the gpu key)"),
            "tolerations": (_is_tolerations, "a list of {key, operator, value, effect}"),
        }[row.kind]
        if not accepts(value):
            raise self.error(row.key, f"must be {expected}, got {json.dumps(value, default=str)}")
        for text in _strings(value):
            for pattern, what in SECRET_PATTERNS:
                if pattern.search(text):
                    raise self.error(row.key, f"looks like {what}: delete it and {SECRETS_HOME}")


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _is_resources(value: Any) -> bool:
    def quantities(part: Any) -> bool:  # GPUs are the model's gpu key, not a resource here
        return isinstance(part, dict) and set(part) <= {"cpu", "memory", "ephemeral-storage"} and all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in part.values())
    return isinstance(value, dict) and bool(value) and set(value) <= {"requests", "limits"} and all(
        quantities(part) for part in value.values())


def _is_tolerations(value: Any) -> bool:
    fields = {"key", "operator", "value", "effect", "tolerationSeconds"}
    return isinstance(value, list) and all(isinstance(t, dict) and set(t) <= fields for t in value)


# --- values -> answers --------------------------------------------------------------------------------------


def import_values(data: Any, *, source: str = "values", namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """The Copier answers for a parsed seed values file, in copier.yml's question order."""
    values = Values(data, source)
    answers: dict[str, Any] = {"namespace": namespace}
    runtimes = [rt for rt, section in RUNTIME_SECTIONS.items() if values.get(f"{section}.enabled")]
    if not runtimes:
        raise values.error("servingRuntime.enabled", "every runtime is disabled: enable at least one of "
                           + ", ".join(f"{section}.enabled" for section in RUNTIME_SECTIONS.values()))
    if "vllm" in runtimes and (release := releases.version_for_huggingfaceserver_tag(values.set.get("servingRuntime.tag"))):
        # The vLLM image is KServe's huggingfaceserver: a release's own tag (v0.16.0-gpu) says which KServe the
        # cluster runs; the repo targets that release and follows its pin. Unset: the template's default release.
        answers["kserve_version"] = release
    answers["runtimes"] = runtimes
    pins = releases.runtime_pins(answers.get("kserve_version"))
    for rt in runtimes:  # a disabled runtime's settings have nothing to configure
        for row in MAPPING:
            if row.key.startswith(RUNTIME_SECTIONS[rt] + ".") and row.key in values.set and row.answer != "runtimes":
                value = values.set[row.key]
                if row.answer.endswith("_image_tag") and value == pins[rt]["tag"]:
                    value = ""
                answers[row.answer] = float(value) if row.kind == "float" else value

    models = []
    for rt, section in MODEL_SECTIONS.items():
        if values.get(f"{section}.enabled"):
            if rt not in runtimes:
                raise values.error(f"{section}.enabled", f"the model runs on the {RUNTIME_SECTIONS[rt]} runtime, "
                                   f"which is disabled: set {RUNTIME_SECTIONS[rt]}.enabled: true")
            models.append(_model(values, rt))
            if [m["name"] for m in models].count(models[-1]["name"]) > 1:
                raise values.error(f"{section}.name", f"{models[-1]['name']!r} names two models: give each its "
                                   "own name (it names the InferenceService)")
    catalog = _catalog_models()
    answers["catalog_models"] = [m["name"] for m in models if _is_catalog_model(m, catalog.get(m["name"]))]
    answers["custom_models"] = [_custom(m) for m in models if m["name"] not in answers["catalog_models"]]

    components = []
    if any(m.get("storageUri", "").startswith("s3://") for m in models):
        components.append("s3")
        answers.update(_s3_answers(values))
    if any(m.get("gated") for m in models):
        components.append("gated-hf")
        answers["hf_secret_name"] = _hf_secret_name(values)
    if values.get("inferencePool.enabled") or values.get("inferencePoolRoute.enabled"):
        components.append("inference-pool")
        answers.update(_pool_answers(values, models))
    # One environment, as the chart is one release: GPU nodes when a model needs them (or, with no model, to
    # run the vLLM runtime), else CPU-only.
    gpu = any(m["gpus"] > 0 for m in models) or (not models and "vllm" in runtimes)
    answers["environments"] = [{"name": "gpu" if gpu else "cpu", "cluster": "in-cluster",
                                "components": ["gpu" if gpu else "cpu", *components]}]
    return _in_question_order(answers)


def _model(values: Values, runtime: str) -> dict[str, Any]:
    """A seed model section as model fields (as models.yml names them); `_set`: the fields the file sets."""
    section = MODEL_SECTIONS[runtime]
    model: dict[str, Any] = {"runtime": runtime, "gpus": 0, "_set": set()}
    for row in MAPPING:
        if row.key.startswith(section + ".") and row.answer.startswith(MODEL_FIELD):
            field = row.answer.removeprefix(MODEL_FIELD).split()[0]
            if row.key in values.set or row.default is not None:
                model[field] = values.get(row.key)
            if row.key in values.set:
                model["_set"].add(field)

    def refuse(key: str, message: str) -> InputError:
        return values.error(f"{section}.{key}", message)

    if not DNS_LABEL.match(model["name"]) or len(model["name"]) > 45:
        raise refuse("name", f"{model['name']!r} is not a model name: use at most 45 lowercase letters, digits, '-'")
    uri = model.get("storageUri")
    if runtime != "ollama":
        if uri is None:
            raise refuse("storageUri", "the chart's default is a placeholder: set the URI of the .gguf file, "
                         "e.g. s3://models/qwen2.5-7b-instruct-q4_k_m.gguf")
        if not re.match(r"^(hf|s3|pvc)://.", uri):
            raise refuse("storageUri", f"{uri!r} is not a model URI: use hf://org/repo, s3://bucket/path or "
                         "pvc://claim/path")
    if runtime == "vllm":
        model["gated"] = bool(model["gated"])  # huggingfaceSecret names the Secret of a gated model
        if not 1 <= model["gpus"] <= 8:
            raise refuse("gpu", f"vLLM runs on 1 to 8 GPUs, got {model['gpus']}")
        if model["tensorParallelSize"] != model["gpus"]:
            default = "" if "tensorParallelSize" in model["_set"] else " (the chart's default)"
            raise refuse("tensorParallelSize", f"{model['tensorParallelSize']}{default} does not match "
                         f"{section}.gpu {model['gpus']}: vLLM shards the model over exactly tensorParallelSize "
                         f"GPUs: set both to {model['gpus']}")
        if model["scaleMetric"] not in ("concurrency", "rps"):
            raise refuse("scaleMetric", f"{model['scaleMetric']!r} is not a Knative metric: use concurrency or rps")
    if runtime == "llamacpp":
        if not uri.endswith(".gguf"):
            raise refuse("storageUri", f"{uri!r} is not a .gguf file: llama.cpp loads one GGUF file: point "
                         "storageUri at it")
        if values.get(f"{section}.serviceAccountName") and not uri.startswith("s3://"):
            raise refuse("serviceAccountName", "only s3:// models run as a ServiceAccount here: remove it")
    if runtime == "ollama":
        if not 0 <= model["gpus"] <= 8:
            raise refuse("gpu", f"use 0 (CPU) to 8 GPUs, got {model['gpus']}")
        if model["gpus"] and "tolerations" in model:
            # The gpu component adds this one to every GPU model: kept, it would be listed twice.
            model["tolerations"] = [t for t in model["tolerations"] if t != GPU_TOLERATION]
        if "resources" in model:
            model["_given_resources"] = model["resources"]
            model["resources"] = _both_sides(model["resources"], runtime)
    return model


def _both_sides(resources: dict, runtime: str) -> dict:
    """cpu and memory on both sides (the template sets them explicitly): missing ones from the other side,
    else from the runtime's default sizing."""
    default = render.catalog("models")["default_resources"][runtime]
    out = {}
    for part, other in (("requests", "limits"), ("limits", "requests")):
        given, mirror = resources.get(part) or {}, resources.get(other) or {}
        out[part] = {k: str(v) for k, v in given.items()}
        for key in ("cpu", "memory"):
            out[part].setdefault(key, str(mirror.get(key, default[part][key])))
    return out


def _catalog_models() -> dict[str, dict]:
    """The catalog's models with every field filled in as the template fills it (Knative mode, the seed's)."""
    data = render.catalog("models")
    out = {}
    for entry in data["models"]:
        m = {field: entry.get(field, spec["default"]) for field, spec in data["fields"].items()}
        if m["runtime"] == "vllm" and m["tensorParallelSize"] is None:
            m["tensorParallelSize"] = m["gpus"]
        m["minReplicas"] = 0 if m["minReplicas"] is None else m["minReplicas"]
        m["scaleMetric"] = m["scaleMetric"] or "concurrency"
        m["scaleTarget"] = m["scaleTarget"] or 10
        m["resources"] = m["resources"] or data["default_resources"][m["runtime"]]
        out[m["name"]] = m
    return out


def _is_catalog_model(model: dict, entry: dict | None) -> bool:
    """Is the seed model this catalog entry? Every field the seed decides must agree (the rest is the catalog's)."""
    if entry is None:
        return False
    for field, value in model.items():
        if field == "resources":  # only the quantities the file gives
            given = model["_given_resources"]
            if any(str(entry["resources"].get(part, {}).get(k)) != str(v)
                   for part, amounts in given.items() for k, v in amounts.items()):
                return False
        elif not field.startswith("_") and entry.get(field) != value:
            return False
    return True


def _custom(model: dict) -> dict:
    """A custom_models entry: what identifies the model, plus every other field the values file sets."""
    identity = {"vllm": ["storageUri", "gpus", "tensorParallelSize"], "llamacpp": ["storageUri"],
                "ollama": ["modelTag", "gpus"]}[model["runtime"]]
    out = {field: model[field] for field in ["name", "runtime", *identity]}
    out.update({field: model[field] for field in sorted(model["_set"]) if field not in out})
    return out


def _s3_answers(values: Values) -> dict[str, Any]:
    out: dict[str, Any] = {"s3_auth": "static"}  # the chart only knows an access key pair
    if "s3Storage.endpoint" in values.set:
        endpoint = values.set["s3Storage.endpoint"]
        scheme, found, host = endpoint.partition("://")
        if found and scheme not in ("http", "https"):
            raise values.error("s3Storage.endpoint", f"{endpoint!r}: use host[:port], optionally after https://")
        if found:
            out["s3_use_https"] = scheme == "https"
        out["s3_endpoint"] = host.rstrip("/") if found else endpoint
    for key in ("s3Storage.region", "s3Storage.secretName"):
        if key in values.set:
            out[KEYS[key].answer] = values.set[key]
    model_sa = values.get("llamacppInferenceService.serviceAccountName") if values.get(
        "llamacppInferenceService.enabled") else ""
    chart_sa = values.set.get("s3Storage.serviceAccountName")
    if model_sa and chart_sa and model_sa != chart_sa:
        raise values.error("llamacppInferenceService.serviceAccountName", f"{model_sa!r} differs from "
                           f"s3Storage.serviceAccountName {chart_sa!r}: s3:// models run as one S3 ServiceAccount "
                           "here: give both the same name")
    if model_sa or chart_sa:
        out["s3_service_account_name"] = model_sa or chart_sa
    return out


def _hf_secret_name(values: Values) -> str:
    name = values.get("inferenceService.huggingfaceSecret")
    chart = values.set.get("huggingface.secretName", name)
    if values.get("huggingface.secretEnabled") and chart != name:
        raise values.error("huggingface.secretName", f"{chart!r} differs from inferenceService.huggingfaceSecret "
                           f"{name!r}: the gated model reads HF_TOKEN from one Secret: give both the same name")
    return name


def _pool_answers(values: Values, models: list[dict]) -> dict[str, Any]:
    if not values.get("inferencePool.enabled"):
        raise values.error("inferencePoolRoute.enabled", "the route's backend is the InferencePool: set "
                           "inferencePool.enabled: true as well")
    if values.set.get("inferencePoolRoute.enabled") is False:
        raise values.error("inferencePoolRoute.enabled", "false is not supported: the inference-pool component "
                           "always routes the gateway to its pools: remove the key or set it to true")
    if not any(m["runtime"] == "vllm" for m in models):
        raise values.error("inferencePool.enabled", "the pool routes to vLLM model pods and no vLLM model is "
                           "enabled: set inferenceService.enabled: true, or remove inferencePool")
    out: dict[str, Any] = {}
    for key in ("inferencePool.targetPort", "inferencePool.eppServicePort",
                "inferencePoolRoute.gatewayName"):
        if key in values.set:
            out[KEYS[key].answer] = values.set[key]
    return out


def _in_question_order(answers: dict[str, Any]) -> dict[str, Any]:
    questions = [q for q in yaml.safe_load((render.TEMPLATE_ROOT / "copier.yml").read_text()) if q[0] != "_"]
    unknown = set(answers) - set(questions)
    if unknown:  # a bug in MAPPING, never the user's
        raise RuntimeError(f"answers copier.yml does not ask: {sorted(unknown)}")
    return {q: answers[q] for q in questions if q in answers}


# --- files and CLI ------------------------------------------------------------------------------------------


def import_file(values_path: Path, out: Path | None, *, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """Read VALUES and write the data file OUT (atomically, once everything checked out); returns the answers."""
    try:
        data = yaml.safe_load(values_path.read_text())
    except OSError as exc:
        raise InputError(f"{values_path}: cannot read it: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{values_path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    answers = import_values(data, source=str(values_path), namespace=namespace)
    if out is None:  # -o -: standard output
        sys.stdout.write(yaml.safe_dump(answers, sort_keys=False, allow_unicode=True))
        return answers
    if not out.parent.is_dir():
        raise InputError(f"{out}: the folder {out.parent} does not exist: create it or choose another -o")
    text = (f"# Copier answers for the seed chart values in {values_path.name}, written by\n"
            f"# `servingops import-helm-values`. Use: copier copy --data-file {out.name} TEMPLATE DESTINATION\n"
            + yaml.safe_dump(answers, sort_keys=False, allow_unicode=True))
    # Every value was checked as it was read; the answers as a whole are checked again before any byte is written.
    for pattern, what in SECRET_PATTERNS:
        if pattern.search(text):
            raise InputError(f"{values_path}: the answers would contain {what}: nothing written; {SECRETS_HOME}")
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return answers


def cmd_import(args: argparse.Namespace) -> int:
    if args.print_mapping:
        print(mapping_markdown(), end="")
        return 0
    if args.values is None or args.out is None:
        raise InputError("import-helm-values: give VALUES.yaml and -o ANSWERS.yml (or --print-mapping)")
    to_stdout = str(args.out) == "-"
    answers = import_file(args.values, None if to_stdout else args.out, namespace=args.namespace)
    # With -o - the data file is the output; the summary goes to stderr.
    report = sys.stderr if to_stdout else sys.stdout
    models = answers["catalog_models"] + [m["name"] for m in answers["custom_models"]]
    envs = "; ".join(f"{e['name']} ({', '.join(e['components'])})" for e in answers["environments"])
    print(f"{'answers' if to_stdout else f'wrote {args.out}'}: runtimes {', '.join(answers['runtimes'])}; "
          f"models {', '.join(models) or '(none)'}; environment {envs}", file=report)
    data_file = "answers.yml" if to_stdout else args.out
    print(f"next: copier copy --defaults --data-file {data_file} {render.TEMPLATE_ROOT} DESTINATION", file=report)
    filled = placeholders_filled(answers)
    if filled:
        print("  --defaults fills these with placeholders the chart has no value for; give yours with "
              "--data KEY=VALUE (or drop --defaults to be asked):", file=report)
        for key, value in filled.items():
            print(f"    {key}: {value}", file=report)
    return 0


def placeholders_filled(answers: dict[str, Any]) -> dict[str, str]:
    """The answers `copier copy --defaults --data-file` fills with a placeholder (a default that only stands in for
    something the chart does not know: the Git URL, the secret store, the catalog's S3 bucket)."""
    questions = yaml.safe_load((render.TEMPLATE_ROOT / "copier.yml").read_text())
    components = {c for env in answers["environments"] for c in env["components"]}
    gated, s3 = "gated-hf" in components, "s3" in components and answers.get("s3_auth", "static") == "static"
    eso = answers.get("secrets_provider", questions["secrets_provider"]["default"]) == "external-secrets"
    s3_catalog = any(m["name"] in answers["catalog_models"] and str(m.get("storageUri", "")).startswith("s3://")
                     for m in render.catalog("models")["models"])
    asked = {"repo_url": True, "s3_bucket": s3_catalog, "eso_store_name": eso and (gated or s3),
             "eso_hf_token_key": eso and gated, "eso_s3_key": eso and s3}
    context = {"project_name": answers.get("project_name", questions["project_name"]["default"])}
    return {key: jinja2.Environment().from_string(str(questions[key]["default"])).render(context)
            for key, when in asked.items() if when and key not in answers}


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """Register this module's CLI verb (wired from cli.py)."""
    parser = verbs.add_parser(
        "import-helm-values", help="turn a values file of the seed model-serving Helm chart into a Copier data file",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("values", nargs="?", type=Path, metavar="VALUES.yaml", help="values file of the seed chart")
    parser.add_argument("-o", "--out", type=Path, metavar="ANSWERS.yml",
                        help="the Copier data file to write (- for standard output)")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="the chart's namespace (default: %(default)s)")
    parser.add_argument("--print-mapping", action="store_true", help="print the seed key -> answer table (Markdown)")
    parser.set_defaults(func=cmd_import)
