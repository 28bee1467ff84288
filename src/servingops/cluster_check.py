"""`servingops cluster-check PATH...`: apply each environment of a generated repo to a cluster in a box and report,
per model, whether KServe admits it, what KServe's controller makes of it and where the scheduler puts it.

Per environment (one cluster each): a fresh box (clusterbox.py) with the release's CRDs, KServe's ConfigMap and its
own runtimes, simulated nodes shaped by the environment's components, then the environment's platform and models
overlays applied for real (server-side apply, through KServe's webhooks). Nothing is faked on KServe's side: the
Deployment (Standard) or Knative Service (Knative) and the Pods are what KServe's controller and pod mutator write.
What the box stands in for is said where it happens: the secrets provider (ExternalSecret/SealedSecret -> Secret
with placeholder values), the kubelet (a bound Pod is marked Running/Ready) and, in Knative mode, Knative itself
(one Pod from the Knative Service's revision template, as Knative's first replica would be).
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import capacity, kserve_build, render, schemas
from .clusterbox import ClusterBox, load_manifests, load_yaml_documents
from .errors import InputError
from .kubeapi import ApiError
from .tools import PROJECT_ROOT
from .build import YAML_LOADER, kustomize_build

# How long a Warning event must stand, with no workload made, before it is KServe's verdict.
WARNING_GRACE = 15.0
RECONCILE_TIMEOUT = 60.0
SCHEDULE_TIMEOUT = 30.0
ISVC_LABEL = "serving.kserve.io/inferenceservice"
STORAGE_LABEL = "model-serving.io/storage"
STANDARD_MODES = {"Standard", "RawDeployment"}
KNATIVE_MODES = {"Knative", "Serverless"}
# KServe's runtime args name the model with Go templates; KServe substitutes them when it builds the pod spec.
GO_TEMPLATE = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")
# Where the platform's GPU nodes stand: the taint GPU node pools carry (GKE and the NVIDIA GPU Operator's
# convention; the gpu component tolerates nvidia.com/gpu with any value) and a typical 8-GPU node.
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
DEFAULT_GPU_PRODUCT = "NVIDIA-A100-SXM4-80GB"
GPU_NODE = {"cpu": "96", "memory": "1152Gi", "nvidia.com/gpu": "8", "pods": "110", "ephemeral-storage": "2Ti"}
CPU_NODE = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "500Gi"}
NODES_PER_POOL = 2
# What KServe's controller writes beside a Standard-mode workload, by the InferenceService's autoscalerClass
# (reconcilers/autoscaler): an HPA (hpa) or a KEDA ScaledObject (keda, reconcilers/keda), named like the workload.
# KServe watches ScaledObjects only when their CRD exists as its manager starts, so the box installs KEDA's CRD
# (from ../shared/crds or --crds) for an environment with a keda model.
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
AUTOSCALERS = {"hpa": ("autoscaling/v2", "HorizontalPodAutoscaler"), "keda": ("keda.sh/v1alpha1", "ScaledObject")}
# The trigger metadata KEDA's prometheus scaler cannot do without (pkg/scalers/prometheus_scaler.go).
PROMETHEUS_TRIGGER_KEYS = ("serverAddress", "query", "threshold")
# Kinds applied first (what the rest refers to); everything else keeps the overlay's order.
APPLY_FIRST = ("Namespace", "PriorityClass", "ServiceAccount", "Secret", "ConfigMap", "ClusterServingRuntime",
               "ServingRuntime")
PLACEHOLDER = base64.b64encode(b"servingops-cluster-check-placeholder").decode()


# --- inputs ---------------------------------------------------------------------------------------------


def shared_kserve_dir() -> Path:
    return PROJECT_ROOT.parent / "shared" / "kserve"


def release_tag(answers: dict) -> str:
    """The KServe release tag a generated repo targets: its kserve_version answer looked up in the release table
    (overlays-catalog/releases.yml). A repo from before the question (template v0.1.0) targets v0.16."""
    releases = render.catalog("releases")
    key = str(answers.get("kserve_version") or "v0.16")
    if key not in releases["kserve"]:
        raise InputError(f"kserve_version {key!r} is not in overlays-catalog/releases.yml: choose one of "
                         f"{', '.join(releases['kserve'])} (`copier update -d kserve_version=...`)")
    tag = releases["kserve"][key]["tag"]
    if tag not in kserve_build.manager_pins():
        raise InputError(f"kserve_version {key}: cluster-check runs KServe's manager of "
                         f"{', '.join(sorted(kserve_build.manager_pins()))} only, not {tag}: "
                         f"check with `copier update -d kserve_version={releases['default']}`")
    return tag


def render_overlay(folder: Path) -> list[dict]:
    return [doc for doc in yaml.load_all(kustomize_build(folder), Loader=YAML_LOADER) if isinstance(doc, dict) and doc]


@dataclass
class Environment:
    name: str
    components: list[str]
    objects: list[dict]

    @property
    def inference_services(self) -> list[dict]:
        return [o for o in self.objects if o.get("kind") == "InferenceService"]


def environments(repo: Path) -> tuple[dict, list[Environment]]:
    answers_file = repo / ".copier-answers.yml"
    if not answers_file.is_file():
        raise InputError(f"{repo} is not a generated repository (no .copier-answers.yml): pass the repo's root folder")
    answers = render.load_answers(answers_file)
    found = []
    for env in answers.get("environments") or []:
        objects: list[dict] = []
        for layer in ("platform", "models"):
            folder = repo / "environments" / env["name"] / layer
            if folder.is_dir():
                objects += render_overlay(folder)
        found.append(Environment(env["name"], list(env.get("components") or []), objects))
    if not found:
        raise InputError(f"{repo}: .copier-answers.yml names no environments")
    return answers, found


# --- the release's data ---------------------------------------------------------------------------------


@dataclass
class Release:
    tag: str
    folder: Path

    def crd_files(self, kinds: set[str] = frozenset()) -> list[Path]:
        """The release's CRD files but LLMInferenceService's (4 MB of schema for KServe's separate llmisvc
        controller, which the box does not run) unless the overlay has such objects (`kinds`)."""
        return [path for path in sorted((self.folder / "crds").glob("*.yaml"))
                if not any(d["spec"]["names"]["kind"].startswith("LLMInferenceService")
                           and d["spec"]["names"]["kind"] not in kinds for d in load_manifests(path))]

    def runtimes(self) -> list[dict]:
        """KServe's own ClusterServingRuntimes, built with the release's kustomization (which sets their images)."""
        return render_overlay(self.folder / "runtimes")

    def inferenceservice_config(self) -> dict:
        config = next(d for d in load_yaml_documents((self.folder / "inferenceservice-config.yaml").read_text())
                      if d.get("kind") == "ConfigMap")
        config = copy.deepcopy(config)
        config["metadata"] = {"name": config["metadata"]["name"], "namespace": "kserve"}
        data = config["data"]
        data.pop("_example", None)
        # No Istio in the box: KServe must not wait for a VirtualService nobody will make ready.
        ingress = json.loads(data["ingress"])
        ingress["disableIstioVirtualHost"] = True
        data["ingress"] = json.dumps(ingress)
        return config

    def default_mode(self) -> str:
        config = self.inferenceservice_config()
        return json.loads(config["data"]["deploy"]).get("defaultDeploymentMode", "Knative")


def release_data(tag: str, folder: Path | None) -> Release:
    base = folder or shared_kserve_dir()
    path = base / tag
    if not (path / "inferenceservice-config.yaml").is_file():
        raise InputError(f"KServe {tag} release data not found in {path}: pass --kserve-data DIR with <tag>/crds, "
                         "<tag>/runtimes and <tag>/inferenceservice-config.yaml (KServe's config/ at that tag)")
    return Release(tag, path)


def extra_crd_files(objects: list[dict], crd_dirs: list[Path]) -> list[Path]:
    """The CRD files (from ../shared/crds or --crds) the overlay's non-KServe custom kinds need (InferencePool,
    HTTPRoute, PodMonitor, ExternalSecret, ...), so those objects apply too."""
    wanted = {(o["apiVersion"].split("/")[0], o["kind"]) for o in objects
              if "/" in o.get("apiVersion", "") and "." in o["apiVersion"].split("/")[0]
              and not o["apiVersion"].startswith("serving.kserve.io/")}
    found = {}
    for _, path in schemas.crd_files(crd_dirs):
        for crd in load_manifests(path):
            if crd.get("kind") == "CustomResourceDefinition":
                key = (crd["spec"]["group"], crd["spec"]["names"]["kind"])
                if key in wanted:
                    found[key] = path
    return sorted(set(found.values()))


# --- the report -----------------------------------------------------------------------------------------


@dataclass
class ModelResult:
    environment: str
    name: str
    mode: str
    admitted: str = ""          # "" when admitted, else KServe's (or the API server's) words
    reconciled: str | None = None  # "" when KServe made the workload and every check holds; else why not
    workload: str = ""
    problems: list[str] = field(default_factory=list)
    scheduled: str | None = None   # "" when every pod is bound; else the scheduler's reason
    nodes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.admitted and self.reconciled == "" and not self.problems and self.scheduled == ""

    def line(self) -> str:
        head = f"{self.environment}/{self.name} ({self.mode})"
        if self.admitted:
            return f"  FAIL {head}: denied: {self.admitted}"
        parts = ["admitted"]
        if self.reconciled:
            parts.append(f"NOT reconciled: {self.reconciled}")
        elif self.reconciled == "":
            parts.append(f"reconciled ({self.workload})")
        for problem in self.problems:
            parts.append(f"wrong: {problem}")
        if self.scheduled == "":
            parts.append(f"scheduled on {', '.join(self.nodes)}")
        elif self.scheduled:
            parts.append(f"NOT scheduled: {self.scheduled}")
        return f"  {'ok  ' if self.ok else 'FAIL'} {head}: " + "; ".join(parts)


@dataclass
class ObjectDenial:
    environment: str
    ref: str
    message: str

    def line(self) -> str:
        return f"  FAIL {self.environment}: {self.ref} denied: {self.message}"


@dataclass
class EnvironmentResult:
    name: str
    tag: str
    nodes: str
    models: list[ModelResult] = field(default_factory=list)
    denials: list[ObjectDenial] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Report:
    environments: list[EnvironmentResult] = field(default_factory=list)

    @property
    def models(self) -> list[ModelResult]:
        return [m for e in self.environments for m in e.models]

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.models) and not any(e.denials for e in self.environments)

    def summary(self) -> str:
        models = self.models
        denials = sum(len(e.denials) for e in self.environments)
        return (f"{len(models)} models in {len(self.environments)} environments: "
                f"{sum(not m.admitted for m in models)} admitted, {sum(m.reconciled == '' and not m.problems for m in models)} "
                f"reconciled as intended, {sum(m.scheduled == '' for m in models)} scheduled; "
                f"{denials} other objects denied")


# --- checks on what KServe wrote -------------------------------------------------------------------------


def _expand(arg: str, isvc: dict) -> str:
    meta = isvc["metadata"]
    values = {"Name": meta["name"], "Namespace": meta.get("namespace", "")}
    return GO_TEMPLATE.sub(lambda m: values.get(m.group(1), m.group(0)), arg)


def _quantities(resources: dict | None) -> dict:
    return {part: {k: str(v) for k, v in (resources or {}).get(part, {}).items()} for part in ("requests", "limits")
            if (resources or {}).get(part)}


def _amounts(resources: dict | None) -> dict:
    """_quantities compared by amount: KServe writes "1000m" back as "1", "1024Mi" as "1Gi"."""
    return {part: {k: amount if (amount := capacity.quantity(v)) is not None else v for k, v in values.items()}
            for part, values in _quantities(resources).items()}


def check_pod_spec(isvc: dict, runtime: dict | None, pod_spec: dict, strategy: dict | None) -> list[str]:
    """What the model's pod spec must carry, compared with what KServe wrote: one sentence per difference."""
    problems = []
    predictor = isvc["spec"]["predictor"]
    model = predictor.get("model") or {}
    container = next((c for c in pod_spec.get("containers", []) if c.get("name") == "kserve-container"), None)
    if container is None:
        return ["no kserve-container in the pod spec"]
    runtime_container = next((c for c in (runtime or {}).get("spec", {}).get("containers", [])
                              if c.get("name") == "kserve-container"), None)
    if runtime_container is not None:
        if model.get("image") is None and container.get("image") != runtime_container.get("image"):
            problems.append(f"image {container.get('image')!r}, runtime has {runtime_container.get('image')!r}")
        expected_args = [_expand(a, isvc) for a in runtime_container.get("args", [])] + list(model.get("args", []))
        missing = [a for a in expected_args if a not in container.get("args", [])]
        if missing:
            problems.append(f"args miss {missing}")
    unexpanded = [a for a in container.get("args", []) + container.get("command", []) if "{{" in a]
    if unexpanded:
        problems.append(f"args keep Go templates {unexpanded}")
    if model.get("resources") and _amounts(container.get("resources")) != _amounts(model["resources"]):
        problems.append(f"resources {_quantities(container.get('resources'))}, the model asks "
                        f"{_quantities(model['resources'])}")
    for key in ("nodeSelector", "priorityClassName", "affinity", "serviceAccountName"):
        if predictor.get(key) and pod_spec.get(key) != predictor[key]:
            problems.append(f"{key} {pod_spec.get(key)!r}, the model sets {predictor[key]!r}")
    missing_tolerations = [t for t in predictor.get("tolerations", []) if t not in pod_spec.get("tolerations", [])]
    if missing_tolerations:
        problems.append(f"tolerations miss {missing_tolerations}")
    wanted_strategy = predictor.get("deploymentStrategy")
    if strategy is not None and wanted_strategy and strategy != wanted_strategy:
        problems.append(f"rollout strategy {strategy}, the model sets {wanted_strategy}")
    return problems


def check_storage_initializer(isvc: dict, pod: dict, service_account: dict | None, secrets: dict[str, dict]) -> list[str]:
    """KServe's pod mutator must have added the storage-initializer with the model's storageUri and the
    credentials its ServiceAccount's Secrets carry."""
    model = isvc["spec"]["predictor"].get("model") or {}
    uri = model.get("storageUri") or isvc["spec"]["predictor"].get("storageUri")
    init = next((c for c in pod["spec"].get("initContainers", []) if c.get("name") == "storage-initializer"), None)
    if not uri:
        return []
    if uri.startswith("pvc://"):
        return []  # KServe mounts the claim; nothing to download
    if init is None:
        return [f"no storage-initializer for storageUri {uri}"]
    problems = []
    if not init.get("args") or init["args"][0] != uri:
        problems.append(f"storage-initializer args {init.get('args')}, want {uri} first")
    env_names = {e["name"] for e in init.get("env", [])}
    # A gated model (the template's storage label) downloads only with HF_TOKEN.
    storage = (isvc["metadata"].get("labels") or {}).get(STORAGE_LABEL)
    if storage == "hf-gated" and "HF_TOKEN" not in env_names:
        problems.append("storage-initializer has no HF_TOKEN for a gated model")
    # S3 with static keys: the ServiceAccount lists the Secret, and KServe must have turned it into the keys.
    if storage == "s3" and (service_account or {}).get("secrets") and "AWS_ACCESS_KEY_ID" not in env_names:
        problems.append(f"storage-initializer has no AWS_ACCESS_KEY_ID from ServiceAccount {service_account['metadata']['name']}")
    for ref in (service_account or {}).get("secrets", []):
        data = (secrets.get(ref["name"]) or {}).get("data", {})
        wanted = [k for k in ("HF_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if k in data]
        if wanted and not set(wanted) & env_names:
            problems.append(f"storage-initializer lacks {', '.join(wanted)} from Secret {ref['name']}")
    return problems


# --- one environment ---------------------------------------------------------------------------------------


def _apply_order(obj: dict) -> int:
    kind = obj.get("kind", "")
    if kind == "InferenceService":
        return len(APPLY_FIRST) + 1
    return APPLY_FIRST.index(kind) if kind in APPLY_FIRST else len(APPLY_FIRST)


def _ref(obj: dict) -> str:
    meta = obj.get("metadata", {})
    where = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta.get("name")
    return f"{obj.get('kind')} {where}"


def stand_in_secrets(obj: dict) -> list[dict]:
    """The Secret a secrets provider would write from an ExternalSecret or SealedSecret: same name, keys and
    template metadata, placeholder values (the repo never holds the real ones)."""
    spec = obj.get("spec") or {}
    meta = obj["metadata"]
    if obj["kind"] == "ExternalSecret":
        target = spec.get("target") or {}
        template_meta = (target.get("template") or {}).get("metadata") or {}
        keys = [d["secretKey"] for d in spec.get("data", []) if "secretKey" in d]
        keys += list(((target.get("template") or {}).get("data") or {}).keys())
        name = target.get("name") or meta["name"]
    elif obj["kind"] == "SealedSecret":
        template_meta = (spec.get("template") or {}).get("metadata") or {}
        keys = list((spec.get("encryptedData") or {}).keys())
        name = meta["name"]
    else:
        return []
    secret_meta = {"name": name, "namespace": meta.get("namespace", "default")}
    for part in ("labels", "annotations"):
        if template_meta.get(part):
            secret_meta[part] = template_meta[part]
    return [{"apiVersion": "v1", "kind": "Secret", "metadata": secret_meta, "type": "Opaque",
             "data": {k: PLACEHOLDER for k in dict.fromkeys(keys)}}]


def node_pools(env: Environment, answers: dict) -> list[tuple[str, dict, dict, list[dict]]]:
    """(name prefix, labels, capacity, taints) per simulated node pool, shaped by the environment's components."""
    pools = []
    cpu_labels = {str(k): str(v) for k, v in (answers.get("cpu_node_selector") or {}).items()}
    if "gpu" in env.components:
        labels = {str(k): str(v) for k, v in (answers.get("gpu_node_selector") or {}).items()}
        labels.update({"nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": GPU_NODE["nvidia.com/gpu"],
                       "nvidia.com/gpu.product": str(answers.get("gpu_product") or DEFAULT_GPU_PRODUCT)})
        pools.append(("gpu-node", labels, GPU_NODE, [GPU_TAINT]))
    pools.append(("cpu-node", cpu_labels, CPU_NODE, []))
    return pools


def _describe_pools(pools) -> str:
    parts = []
    for _, labels, node, _ in pools:
        if "nvidia.com/gpu" in node:
            parts.append(f"{NODES_PER_POOL} GPU nodes ({node['nvidia.com/gpu']}x {labels['nvidia.com/gpu.product']}, "
                         f"{node['cpu']} cpu, {node['memory']}, taint {GPU_TAINT['key']}={GPU_TAINT['value']}:"
                         f"{GPU_TAINT['effect']})")
        else:
            parts.append(f"{NODES_PER_POOL} CPU nodes ({node['cpu']} cpu, {node['memory']})")
    return ", ".join(parts)


def _mode(isvc: dict, default: str) -> str:
    mode = (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/deploymentMode", default)
    return "Standard" if mode in STANDARD_MODES else "Knative"


def _autoscaler_class(isvc: dict) -> str:
    return (isvc["metadata"].get("annotations") or {}).get(AUTOSCALER_CLASS, "hpa")


def check_autoscaler(box: ClusterBox, isvc: dict, namespace: str, workload_name: str, model: ModelResult) -> None:
    """Standard mode: the autoscaler KServe writes for the model's class, and no other (an HPA beside a ScaledObject
    would fight it over the replicas). A ScaledObject exists only once the API server admitted it against KEDA's
    CRD; its prometheus triggers must carry what KEDA's scaler needs."""
    wanted = _autoscaler_class(isvc)
    if wanted not in AUTOSCALERS:
        return
    api_version, kind = AUTOSCALERS[wanted]
    if not box.client.serves(api_version, kind):
        model.problems.append(f"autoscalerClass {wanted} needs the {kind} CRD ({api_version}), which is not installed: "
                              f"install it (KEDA), or pass its folder with --crds")
        return
    made = _wait_for(lambda: box.client.get(api_version, kind, workload_name, namespace), RECONCILE_TIMEOUT, box)
    if not made:
        why = _warning_events(box.client, "InferenceService", isvc["metadata"]["name"], namespace)
        model.problems.append(f"KServe made no {kind} {workload_name}" + (f": {why}" if why else ""))
        return
    model.details["autoscaler"] = {"kind": kind, "spec": made["spec"]}
    for other, (other_api, other_kind) in AUTOSCALERS.items():
        if other != wanted and box.client.serves(other_api, other_kind) and \
                box.client.get(other_api, other_kind, workload_name, namespace):
            model.problems.append(f"{other_kind} {workload_name} beside the {kind}: both would scale the Deployment")
    if kind == "ScaledObject":
        if made["spec"].get("scaleTargetRef", {}).get("name") != workload_name:
            model.problems.append(f"ScaledObject {workload_name} scales {made['spec'].get('scaleTargetRef')}, not the Deployment")
        triggers = made["spec"].get("triggers") or []
        if not triggers:
            model.problems.append(f"ScaledObject {workload_name} has no triggers")
        for trigger in triggers:
            lacking = [k for k in PROMETHEUS_TRIGGER_KEYS if not (trigger.get("metadata") or {}).get(k)]
            if trigger.get("type") == "prometheus" and lacking:
                model.problems.append(f"ScaledObject {workload_name}: a prometheus trigger without {', '.join(lacking)}")


def _isvc_condition_message(isvc: dict | None) -> str:
    for condition in (isvc or {}).get("status", {}).get("conditions", []):
        if condition.get("status") == "False" and condition.get("message"):
            return f"{condition['type']}: {condition['message']}"
    return ""


def _wait_for(predicate, timeout: float, box: ClusterBox, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        box.check_alive()
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def check_environment(env: Environment, answers: dict, release: Release, kserve: kserve_build.KServeBuild,
                      crd_dirs: list[Path], log=print) -> EnvironmentResult:
    started = time.monotonic()
    default_mode = release.default_mode()
    modes = {isvc["metadata"]["name"]: _mode(isvc, default_mode) for isvc in env.inference_services}
    pools = node_pools(env, answers)
    result = EnvironmentResult(env.name, release.tag, _describe_pools(pools))
    log(f"== environment {env.name}: KServe {release.tag}; {result.nodes}")
    made_by_kserve = [{"apiVersion": api_version, "kind": kind} for api_version, kind in
                      {AUTOSCALERS["keda"] for isvc in env.inference_services if _autoscaler_class(isvc) == "keda"}]
    crd_paths = release.crd_files({o.get("kind") for o in env.objects}) + \
        extra_crd_files(env.objects + made_by_kserve, crd_dirs)
    with ClusterBox(kserve=kserve, inferenceservice_config=release.inferenceservice_config(),
                    runtimes=release.runtimes(), crd_paths=crd_paths, knative="Knative" in modes.values(), log=log) as box:
        client = box.client
        for prefix, labels, capacity, taints in pools:
            for number in range(1, NODES_PER_POOL + 1):
                box.add_node(f"{prefix}-{number}", labels, capacity, taints)

        # 1. admission: every object, through KServe's webhooks (InferenceServices last)
        denied: dict[str, str] = {}
        for obj in sorted(env.objects, key=_apply_order):
            if obj.get("kind") == "InferenceService":
                _wait_default_service_account(box, obj["metadata"].get("namespace", "default"))
            try:
                client.apply(obj)
            except ApiError as exc:
                denied[_ref(obj)] = str(exc)
                continue
            for secret in stand_in_secrets(obj):
                client.apply(secret)
        for obj in env.objects:
            if _ref(obj) in denied and obj.get("kind") != "InferenceService":
                result.denials.append(ObjectDenial(env.name, _ref(obj), denied[_ref(obj)]))

        runtimes = {r["metadata"]["name"]: r for r in env.objects if r.get("kind") == "ClusterServingRuntime"}
        runtimes = {**{r["metadata"]["name"]: r for r in release.runtimes()}, **runtimes}
        for isvc in env.inference_services:
            name, namespace = isvc["metadata"]["name"], isvc["metadata"].get("namespace", "default")
            model = ModelResult(env.name, name, modes[name])
            result.models.append(model)
            if _ref(isvc) in denied:
                model.admitted = denied[_ref(isvc)]
                continue
            _reconcile_and_schedule(box, isvc, namespace, model, runtimes)
    result.seconds = time.monotonic() - started
    return result


def _wait_default_service_account(box: ClusterBox, namespace: str) -> None:
    if box.client.get("v1", "Namespace", namespace) is None:
        return
    _wait_for(lambda: box.client.get("v1", "ServiceAccount", "default", namespace), 30, box)


def _reconcile_and_schedule(box: ClusterBox, isvc: dict, namespace: str, model: ModelResult, runtimes: dict) -> None:
    client = box.client
    name = isvc["metadata"]["name"]
    stored = client.get("serving.kserve.io/v1beta1", "InferenceService", name, namespace) or isvc
    runtime_name = (stored["spec"]["predictor"].get("model") or {}).get("runtime") or \
        (stored.get("status", {}).get("modelStatus") or {}).get("runtime")  # noqa: E501
    runtime = runtimes.get(runtime_name)
    workload_name = f"{name}-predictor"
    # 2. reconciled: KServe's controller writes the Deployment or the Knative Service
    if model.mode == "Standard":
        kind, api_version = "Deployment", "apps/v1"
    else:
        kind, api_version = "Knative Service", "serving.knative.dev/v1"

    first_warning: list[float] = []

    def made_or_refused():
        found = client.get(api_version, kind.split()[-1], workload_name, namespace)
        if found:
            return found
        # A refusal counts once it outlasts KServe's retries: its informer may not have seen a runtime applied
        # a moment earlier ("No ServingRuntimes ... with the name"), and it requeues until it has.
        warning = _warning_events(client, "InferenceService", name, namespace)
        if warning and not first_warning:
            first_warning.append(time.monotonic())
        return warning if warning and time.monotonic() - first_warning[0] >= WARNING_GRACE else None

    outcome = _wait_for(made_or_refused, RECONCILE_TIMEOUT, box)
    workload = outcome if isinstance(outcome, dict) else None
    if not workload:
        current = client.get("serving.kserve.io/v1beta1", "InferenceService", name, namespace)
        why = outcome or _isvc_condition_message(current)
        model.reconciled = f"KServe made no {kind} {workload_name}" + (f": {why}" if why else f" in {RECONCILE_TIMEOUT:g} s")
        return
    model.reconciled = ""
    model.workload = f"{kind} {workload_name}"
    template = workload["spec"]["template"]
    strategy = workload["spec"].get("strategy") if model.mode == "Standard" else None
    model.problems += check_pod_spec(stored, runtime, template["spec"], strategy)
    if strategy:
        model.details["strategy"] = strategy
    if model.mode == "Standard":
        check_autoscaler(box, stored, namespace, workload_name, model)

    # 3. pods: the ReplicaSet's (Standard) or the first revision pod Knative would run (Knative)
    if model.mode == "Knative":
        error = _create_revision_pod(box, workload, namespace)
        if error:
            model.scheduled = f"no pod: {error}"
            return
    selector = f"{ISVC_LABEL}={name}"
    pods = _wait_for(lambda: client.list("v1", "Pod", namespace, selector), RECONCILE_TIMEOUT, box)
    if not pods:
        model.scheduled = f"no pod: {_replicaset_failure(box, namespace, selector) or 'none created in time'}"
        return
    pod = pods[0]
    service_account = client.get("v1", "ServiceAccount", pod["spec"].get("serviceAccountName", "default"), namespace)
    secrets = {ref["name"]: client.get("v1", "Secret", ref["name"], namespace) or {}
               for ref in (service_account or {}).get("secrets", [])}
    model.problems += check_storage_initializer(stored, pod, service_account, secrets)

    # 4. scheduled: bound to a node, or the scheduler's reason
    def settled() -> list[dict] | None:
        current = client.list("v1", "Pod", namespace, selector)
        if all(p["spec"].get("nodeName") or _unschedulable(p) for p in current):
            return current
        return None

    settled_pods = _wait_for(settled, SCHEDULE_TIMEOUT, box) or client.list("v1", "Pod", namespace, selector)
    nodes = client.list("v1", "Node")
    reasons = [(_unschedulable(p) or "not scheduled in time") + _untolerated(p, nodes)
               for p in settled_pods if not p["spec"].get("nodeName")]
    model.nodes = sorted({p["spec"]["nodeName"] for p in settled_pods if p["spec"].get("nodeName")})
    model.scheduled = reasons[0] if reasons else ""
    for p in settled_pods:
        if p["spec"].get("nodeName"):
            box.mark_running(p)


def _warning_events(client, kind: str, name: str, namespace: str) -> str:
    """KServe's controller reports a failed reconcile as a Warning event on the InferenceService."""
    events = client.list("v1", "Event", namespace, field_selector=f"involvedObject.kind={kind},involvedObject.name={name}")
    return "; ".join(dict.fromkeys(f"{e.get('reason')}: {e.get('message')}" for e in events if e.get("type") == "Warning"))


def _unschedulable(pod: dict) -> str:
    for condition in pod.get("status", {}).get("conditions", []):
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return condition.get("message") or condition.get("reason", "unschedulable")
    return ""


def tolerates(toleration: dict, taint: dict) -> bool:
    """Kubernetes' toleration matching (k8s.io/api/core/v1 Toleration.ToleratesTaint)."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True
    return bool(toleration.get("key")) and toleration.get("value", "") == taint.get("value", "")


def _untolerated(pod: dict, nodes: list[dict]) -> str:
    """The scheduler says only "had untolerated taint(s)": name them, with the nodes that carry them."""
    tolerations = pod["spec"].get("tolerations") or []
    found: dict[str, list[str]] = {}
    for node in nodes:
        for taint in node["spec"].get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(tolerates(t, taint) for t in tolerations):
                text = f"{taint['key']}{'=' + taint['value'] if taint.get('value') else ''}:{taint['effect']}"
                found.setdefault(text, []).append(node["metadata"]["name"])
    return "".join(f" [no toleration for taint {taint} of {', '.join(names)}]" for taint, names in found.items())


def _replicaset_failure(box: ClusterBox, namespace: str, selector: str) -> str:
    for rs in box.client.list("apps/v1", "ReplicaSet", namespace, selector):
        for condition in rs.get("status", {}).get("conditions", []):
            if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
                return condition.get("message", "")
    return ""


REVISION_ONLY_FIELDS = ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds")


def _create_revision_pod(box: ClusterBox, ksvc: dict, namespace: str) -> str:
    """Knative is not in the box: create the Pod its first revision would run from the Knative Service's template
    (KServe's labels and annotations included, so KServe's pod mutator treats it as on a real cluster)."""
    template = copy.deepcopy(ksvc["spec"]["template"])
    meta = template.get("metadata") or {}
    spec = {k: v for k, v in template["spec"].items() if k not in REVISION_ONLY_FIELDS}
    for container in spec.get("containers", []):
        container.setdefault("name", "user-container")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"{ksvc['metadata']['name']}-00001-deployment-sim", "namespace": namespace,
                        "labels": {**(meta.get("labels") or {}),
                                   "serving.knative.dev/service": ksvc["metadata"]["name"]},
                        "annotations": meta.get("annotations") or {}},
           "spec": spec}
    try:
        box.client.create(pod)
    except ApiError as exc:
        return str(exc)
    return ""


# --- the verb ---------------------------------------------------------------------------------------------


def cluster_check(repos: list[Path], *, kserve_data: Path | None = None, crd_dirs: list[Path] | None = None,
                  log=print) -> Report:
    report = Report()
    crd_dirs = crd_dirs if crd_dirs is not None else schemas.default_crd_dirs()
    for repo in repos:
        answers, envs = environments(repo)
        tag = release_tag(answers)
        release = release_data(tag, kserve_data)
        kserve = kserve_build.ensure(tag, log=log)
        for env in envs:
            result = check_environment(env, answers, release, kserve, crd_dirs, log=log)
            for denial in result.denials:
                log(denial.line())
            for model in result.models:
                log(model.line())
            report.environments.append(result)
    return report


def cmd_cluster_check(args: argparse.Namespace) -> int:
    started = time.monotonic()
    engine_only = [flag for flag, given in (("--env", args.env), ("--day2", args.day2), ("--update-to", args.update_to))
                   if given]
    if engine_only and not args.gitops:
        verb = "needs" if len(engine_only) == 1 else "need"
        raise InputError(f"cluster-check: {' and '.join(engine_only)} {verb} an engine to sync through: add "
                         "--gitops argocd|flux, or drop them to apply every environment directly")
    if args.gitops:
        from . import gitops_check
        return gitops_check.cmd_gitops_check(args)
    report = cluster_check(args.paths, kserve_data=args.kserve_data, crd_dirs=args.crds)
    print(f"{report.summary()} ({time.monotonic() - started:.0f} s)")
    if args.output == "json":
        json.dump([m.__dict__ for m in report.models], sys.stdout, indent=2, default=str)
        print()
    return 0 if report.ok else 1


def add_parser(verbs: argparse._SubParsersAction) -> None:
    check = verbs.add_parser(
        "cluster-check",
        help="apply each environment to a real API server with KServe's own webhooks and controller, "
             "kube-controller-manager, kube-scheduler and simulated nodes; one line per model",
        description="For each environment of each generated repo: start a cluster in a box (kube-apiserver, KServe's "
        "manager of the repo's KServe release, kube-controller-manager, kube-scheduler, simulated GPU/CPU nodes), "
        "apply the environment's overlays for real and report per model: admitted by KServe's webhooks, reconciled "
        "into the Deployment / Knative Service it should be, scheduled on a node. Exit 1 unless all hold.",
    )
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="a generated repository's root folder")
    check.add_argument("--kserve-data", type=Path, metavar="DIR",
                       help="folder with <tag>/{crds,runtimes,inferenceservice-config.yaml} (default: ../shared/kserve)")
    check.add_argument("--crds", type=Path, action="append", metavar="DIR",
                       help="CRDs for the overlays' other kinds (default: $SERVINGOPS_CRDS, else ../shared/crds)")
    check.add_argument("--output", choices=["text", "json"], default="text", help="report format (default: %(default)s)")
    check.add_argument("--gitops", choices=["argocd", "flux"],
                       help="let the real engine sync the repo instead: its controllers (built from their pinned "
                            "release modules) bootstrap the entry point from a local Git server; waits until every "
                            "Application/Kustomization and InferenceService is healthy (see gitops_check.py)")
    check.add_argument("--env", action="append", metavar="NAME", help="with --gitops: only these environments")
    check.add_argument("--day2", action="store_true",
                       help="with --gitops: then commit a change (a model's maxReplicas, a new model folder) "
                            "and wait until the engine has applied it")
    check.add_argument("--update-to", metavar="REF",
                       help="with --gitops: then take a template release as a user does (`copier update --defaults "
                            "--vcs-ref REF` in a throwaway clone), commit it, wait until the engine has applied it "
                            "and check nothing drifted (Argo CD: no resource OutOfSync after a hard refresh; Flux: "
                            "every Kustomization Ready at the new revision)")
    check.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                       help="with --gitops: how long to wait for each convergence (default: %(default)s)")
    check.set_defaults(func=cmd_cluster_check)
