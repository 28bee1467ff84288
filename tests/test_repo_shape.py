"""The generated GitOps repo (issue 4): overlays, Argo CD and Flux entry points, catalog agreement, clean
Kustomize, idempotent re-copies and the repo's own `make validate`.

Every answer set is rendered once per session (copier's Python API) and every fact is read from parsed YAML:
the output of real `kustomize build` runs, validated by real kubeconform against the pinned CRDs, offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from functools import cache
from pathlib import Path

import copier
import pytest
import yaml

from servingops import render, schemas
from servingops.tools import PROJECT_ROOT, tool_path
from servingops.validate import VALID, find_targets, kustomize_build, split_documents, validate

# Models that need credentials: a gated HuggingFace model (vLLM, GPU) and an S3 GGUF (llama.cpp, CPU).
GATED_AND_S3 = {"catalog_models": ["llama-70b", "qwen-7b-gguf"]}
ALL_COMPONENTS_ENVIRONMENTS = [
    {"name": "gpu", "cluster": "in-cluster", "components": ["gpu", "s3", "gated-hf", "inference-pool", "monitoring"]},
    {"name": "cpu", "cluster": "cpu-cluster", "components": ["cpu", "s3", "monitoring"]},
]
# A public age recipient (never a private key): .sops.yaml encrypts for it.
AGE_RECIPIENT = "age1" + "q" * 58

ANSWER_SETS: dict[str, dict] = {
    "argocd": {},  # the defaults: Argo CD, three runtimes, one sample model each
    "flux": {"gitops_engine": "flux"},
    "both": {"gitops_engine": "both"},
    "argocd-external-secrets": {**GATED_AND_S3, "secrets_provider": "external-secrets"},
    "both-sealed-secrets": {**GATED_AND_S3, "secrets_provider": "sealed-secrets", "gitops_engine": "both"},
    "flux-sops": {**GATED_AND_S3, "secrets_provider": "sops", "gitops_engine": "flux",
                  "sops_age_recipients": AGE_RECIPIENT},
    "argocd-manual": {**GATED_AND_S3, "secrets_provider": "manual"},
    # Standard mode, the vLLM models scaled by KEDA (the keda component works in Standard mode only).
    "both-standard": {"deployment_mode": "Standard", "gitops_engine": "both", "environments": [
        {"name": "gpu", "cluster": "in-cluster", "components": ["gpu", "inference-pool", "monitoring", "keda"]},
        {"name": "cpu", "cluster": "cpu-cluster", "components": ["cpu", "monitoring"]}]},
    # KServe v0.16: its InferencePool API (x-k8s.io v1alpha2) and huggingfaceserver image.
    "argocd-kserve-v0.16": {"kserve_version": "v0.16"},
    "flux-multitenant": {**GATED_AND_S3, "secrets_provider": "sealed-secrets", "gitops_engine": "flux",
                         "flux_service_account": "llm-reconciler"},
    # Every catalog model, every component (the catalog agreement test relies on this one).
    "both-all-models": {
        "catalog_models": [m["name"] for m in render.catalog("models")["models"]],
        "environments": ALL_COMPONENTS_ENVIRONMENTS,
        "gitops_engine": "both",
    },
}

# The seed examples (examples/*.yml, when present), each with both engines' entry points; SOPS needs Flux.
for _example in sorted((PROJECT_ROOT / "examples").glob("*.yml")):
    _data = yaml.safe_load(_example.read_text()) or {}
    _engine = "flux" if _data.get("secrets_provider") == "sops" else "both"
    ANSWER_SETS[f"example-{_example.stem}"] = {**_data, "gitops_engine": _engine}


def engine(name: str) -> str:
    return ANSWER_SETS[name].get("gitops_engine", "argocd")


ARGO_SETS = [n for n in ANSWER_SETS if engine(n) in ("argocd", "both")]
FLUX_SETS = [n for n in ANSWER_SETS if engine(n) in ("flux", "both")]

# What `make secret` writes into secrets/<env>/ (kubeseal -> SealedSecret, sops -> an encrypted Secret): the
# secrets layer starts empty, but its Application / Kustomization must be allowed to sync these.
SECRETS_LAYER_KIND = {"sealed-secrets": ("bitnami.com", "SealedSecret"), "sops": ("", "Secret")}
# Built-in kinds a generated repo may deploy: (group, kind) -> (scope, resource). CRD-backed kinds come from
# the pinned CRDs' spec.scope and spec.names.plural.
CORE_KINDS = {
    ("", "Namespace"): ("Cluster", "namespaces"),
    ("", "ServiceAccount"): ("Namespaced", "serviceaccounts"),
    ("", "Secret"): ("Namespaced", "secrets"),
    ("", "ConfigMap"): ("Namespaced", "configmaps"),
    ("", "Service"): ("Namespaced", "services"),
    ("apps", "Deployment"): ("Namespaced", "deployments"),
    ("rbac.authorization.k8s.io", "Role"): ("Namespaced", "roles"),
    ("rbac.authorization.k8s.io", "RoleBinding"): ("Namespaced", "rolebindings"),
    ("scheduling.k8s.io", "PriorityClass"): ("Cluster", "priorityclasses"),
    ("networking.k8s.io", "NetworkPolicy"): ("Namespaced", "networkpolicies"),
    ("rbac.authorization.k8s.io", "ClusterRole"): ("Cluster", "clusterroles"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): ("Cluster", "clusterrolebindings"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"): ("Cluster", "validatingadmissionpolicies"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"): ("Cluster", "validatingadmissionpolicybindings"),
}
# The admin-owned layer (platform/admin/): multi-tenant Flux applies it from the entry point, never as the tenant.
ADMIN_KINDS = {("", "Namespace"), ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
               ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding")}
# Verbs that let a holder of RBAC rights grant themselves more: a tenant must never have them.
ESCALATING_VERBS = {"escalate", "bind", "impersonate", "*"}
DEPRECATED_KUSTOMIZE_FIELDS = {"bases", "patchesStrategicMerge", "patchesJson6902", "commonLabels", "vars", "imageTags"}
CLOSED_PROXY = {k: "http://127.0.0.1:9" for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}


# --- helpers -------------------------------------------------------------------------------------------


@cache
def build(folder: Path) -> str:
    """`kustomize build`, once per folder (folders are never modified after rendering)."""
    return kustomize_build(folder)


def objects(text: str) -> list[dict]:
    return [doc for doc, _ in split_documents(text)]


def deployed(repo: Path, rel: str) -> list[dict]:
    """What Argo CD / Flux apply from a repo path: its kustomize build, or (a folder without kustomization,
    like secrets/<env>/) its YAML files."""
    folder = repo / rel
    assert folder.is_dir(), f"{rel} does not exist in the generated repo"
    if (folder / "kustomization.yaml").is_file():
        return objects(build(folder))
    return [doc for f in sorted(folder.glob("*.yaml")) for doc in objects(f.read_text())]


def group_of(obj: dict) -> str:
    return obj["apiVersion"].rpartition("/")[0]


def kinds_of(objs: list[dict]) -> set[tuple[str, str]]:
    return {(group_of(o), o["kind"]) for o in objs}


@cache
def api_resources() -> dict[tuple[str, str], tuple[str, str]]:
    """(group, kind) -> (scope, plural resource) for the core kinds above and every pinned CRD."""
    crd_dirs = schemas.default_crd_dirs()
    assert crd_dirs, "no pinned CRDs found (../shared/crds or $SERVINGOPS_CRDS)"
    table = dict(CORE_KINDS)
    for _, path in schemas.crd_files(crd_dirs):
        for crd in schemas.load_crds(path):
            spec = crd["spec"]
            table[(spec["group"], spec["names"]["kind"])] = (spec["scope"], spec["names"]["plural"])
    return table


def resource_info(kind: tuple[str, str]) -> tuple[str, str]:
    assert kind in api_resources(), f"{kind}: unknown kind (neither in CORE_KINDS nor in the pinned CRDs)"
    return api_resources()[kind]


def answers_of(repo: Path) -> dict:
    return yaml.safe_load((repo / ".copier-answers.yml").read_text())


def env_names(repo: Path) -> list[str]:
    return [e["name"] for e in answers_of(repo)["environments"]]


def referenced_secrets(repo: Path, env: str) -> set[str]:
    """Secrets the models layer of an environment uses (ServiceAccount secrets, env secretKeyRefs)."""
    names = set()
    for obj in deployed(repo, f"environments/{env}/models"):
        if obj["kind"] == "ServiceAccount":
            names |= {s["name"] for s in obj.get("secrets", [])}
        if obj["kind"] == "InferenceService":
            for var in obj["spec"]["predictor"]["model"].get("env", []):
                if ref := var.get("valueFrom", {}).get("secretKeyRef"):
                    names.add(ref["name"])
    return names


def has_secrets_layer(repo: Path, env: str) -> bool:
    """sealed-secrets / sops keep the Secrets the models reference in secrets/<env>/."""
    return answers_of(repo).get("secrets_provider") in SECRETS_LAYER_KIND and bool(referenced_secrets(repo, env))


def layer_of(rel_path: str) -> tuple[str, str]:
    """(environment, layer) of an entry point's path."""
    parts = rel_path.removeprefix("./").strip("/").split("/")
    if parts[0] == "secrets":
        return parts[1], "secrets"
    assert parts[0] == "environments" and len(parts) == 3, f"unexpected entry point path {rel_path}"
    return parts[1], parts[2]


def kinds_synced(repo: Path, rel_path: str) -> set[tuple[str, str]]:
    kinds = kinds_of(deployed(repo, rel_path))
    if layer_of(rel_path)[1] == "secrets":
        kinds.add(SECRETS_LAYER_KIND[answers_of(repo)["secrets_provider"]])
    return kinds


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rendered(tmp_path_factory):
    """rendered(name) -> the repo generated from ANSWER_SETS[name], rendered once per session."""
    root = tmp_path_factory.mktemp("repos")
    repos: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in repos:
            repos[name] = render.render(root / name, ANSWER_SETS[name])
        return repos[name]

    return get


@pytest.fixture(scope="session")
def committed_template(tmp_path_factory) -> Path:
    """The working-tree template as a clean git repo. (From a dirty checkout copier commits the draft anew on
    every copy, so `_commit` would differ between two copies for reasons that have nothing to do with us.)"""
    root = tmp_path_factory.mktemp("template") / "template"
    with render.template_snapshot() as snapshot:
        shutil.copytree(snapshot, root, symlinks=True)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "template snapshot")
    return root


# --- 1. every overlay and entry point validates offline ------------------------------------------------


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_every_overlay_and_entry_point_validates_offline(name, rendered, store):
    repo = rendered(name)
    report = validate([repo], store_dir=store.path)
    assert report.ok, "\n".join(report.failures())
    targets = {(Path.cwd() / t.target).resolve(): t for t in report.targets}
    expected = {repo / "environments" / env / layer for env in env_names(repo) for layer in ("platform", "models")}
    if engine(name) in ("argocd", "both"):
        expected.add(repo / "clusters" / "argocd")
    if engine(name) in ("flux", "both"):
        expected |= {flux_entry(repo, env) for env in env_names(repo)}
    for path in sorted(expected):
        assert path.resolve() in targets, f"{path.relative_to(repo)} was not validated"
        target = targets[path.resolve()]
        assert target.status == VALID and target.resources > 0, f"{target.target}: {target.status}, {target.resources}"
    # An engine that was not chosen leaves no entry point behind.
    assert (repo / "clusters" / "argocd").exists() == (engine(name) in ("argocd", "both"))
    assert (repo / "clusters" / "flux").exists() == (engine(name) in ("flux", "both"))


def flux_entry(repo: Path, env: str) -> Path:
    """The Flux objects of one environment: clusters/flux/<env>/<project_name>/."""
    return repo / "clusters" / "flux" / env / answers_of(repo)["project_name"]


# --- 2. Argo CD -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ARGO_SETS)
def test_argocd_applications(name, rendered):
    repo = rendered(name)
    answers = answers_of(repo)
    objs = objects(build(repo / "clusters" / "argocd"))
    projects = [o for o in objs if o["kind"] == "AppProject"]
    apps = [o for o in objs if o["kind"] == "Application"]
    assert len(projects) == 1 and len(objs) == len(apps) + 1, sorted(o["kind"] for o in objs)
    project = projects[0]["metadata"]["name"]

    waves: dict[str, dict[str, int]] = {}
    for app in apps:
        meta, spec = app["metadata"], app["spec"]
        where = meta["name"]
        assert meta["namespace"] == answers["argocd_namespace"], where
        assert spec["project"] == project, where
        source = spec["source"]
        assert source["repoURL"] == answers["repo_url"], where
        assert source["targetRevision"] == answers["repo_branch"], where
        env, layer = layer_of(source["path"])
        assert (repo / source["path"]).is_dir(), f"{where}: {source['path']} does not exist"
        if (repo / source["path"] / "kustomization.yaml").is_file():
            assert objects(build(repo / source["path"])), f"{where}: {source['path']} builds to nothing"
        else:  # a plain folder of manifests: Argo CD must be told to read it as one
            assert "directory" in source, f"{where}: {source['path']} has no kustomization.yaml"
            deployed(repo, source["path"])
        assert "ServerSideApply=true" in spec["syncPolicy"]["syncOptions"], where
        if layer == "models":  # PodMonitors, InferencePools, ExternalSecrets: CRDs of add-ons
            assert "SkipDryRunOnMissingResource=true" in spec["syncPolicy"]["syncOptions"], where
        retry = spec["syncPolicy"]["retry"]
        assert retry["limit"] > 0 and {"duration", "factor", "maxDuration"} <= retry["backoff"].keys(), where
        assert "ServerSideDiff=true" in meta["annotations"]["argocd.argoproj.io/compare-options"].split(","), where
        assert layer not in waves.setdefault(env, {}), f"{where}: two Applications for {env}/{layer}"
        waves[env][layer] = int(meta["annotations"]["argocd.argoproj.io/sync-wave"])

    assert waves.keys() == set(env_names(repo))
    for env, by_layer in waves.items():
        layers = ["platform", "secrets", "models"] if has_secrets_layer(repo, env) else ["platform", "models"]
        assert sorted(by_layer, key=by_layer.get) == layers, f"{env}: waves {by_layer}"
        assert len(set(by_layer.values())) == len(layers), f"{env}: layers share a wave: {by_layer}"


@pytest.mark.parametrize("name", ARGO_SETS)
def test_argocd_appproject_admits_exactly_what_the_applications_deploy(name, rendered):
    repo = rendered(name)
    objs = objects(build(repo / "clusters" / "argocd"))
    project = next(o for o in objs if o["kind"] == "AppProject")["spec"]
    destinations, cluster_kinds, namespaced_kinds = set(), set(), set()
    for app in (o for o in objs if o["kind"] == "Application"):
        dest, path = app["spec"]["destination"], app["spec"]["source"]["path"]
        destinations.add((dest["name"], dest["namespace"]))
        for kind in kinds_synced(repo, path):
            (cluster_kinds if resource_info(kind)[0] == "Cluster" else namespaced_kinds).add(kind)
        for obj in deployed(repo, path):
            if resource_info((group_of(obj), obj["kind"]))[0] == "Namespaced":
                destinations.add((dest["name"], obj["metadata"].get("namespace", dest["namespace"])))

    assert project["sourceRepos"] == [answers_of(repo)["repo_url"]]
    assert {(d["name"], d["namespace"]) for d in project["destinations"]} == destinations
    assert len(project["destinations"]) == len(destinations)
    assert {(k["group"], k["kind"]) for k in project.get("clusterResourceWhitelist", [])} == cluster_kinds
    assert {(k["group"], k["kind"]) for k in project.get("namespaceResourceWhitelist", [])} == namespaced_kinds
    assert not project.get("clusterResourceBlacklist") and not project.get("namespaceResourceBlacklist")


# --- 3. Flux --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FLUX_SETS)
def test_flux_entry_points(name, rendered):
    repo = rendered(name)
    answers = answers_of(repo)
    envs = env_names(repo)
    assert sorted(p.name for p in (repo / "clusters" / "flux").iterdir()) == sorted(envs)
    for env in envs:
        # `flux bootstrap --path=clusters/flux/<env>` writes flux-system/ there: that folder must have no
        # kustomization.yaml of its own, so Flux's generated one includes both flux-system/ and ours.
        assert not (repo / "clusters" / "flux" / env / "kustomization.yaml").exists()
        objs = objects(build(flux_entry(repo, env)))
        sources = {(o["kind"], o["metadata"]["name"]): o for o in objs if o["kind"] == "GitRepository"}
        kustomizations = [o for o in objs if o["kind"] == "Kustomization"]
        names = {k["metadata"]["name"] for k in kustomizations}
        for source in sources.values():
            assert source["metadata"]["namespace"] == answers["flux_namespace"]
            assert source["spec"]["url"] == answers["repo_url"]
            assert source["spec"]["ref"] == {"branch": answers["repo_branch"]}
            assert source["spec"]["secretRef"] == {"name": "flux-system"}  # bootstrap's credentials
            assert source["spec"]["interval"] == answers["sync_interval"]

        by_layer = {}
        for k in kustomizations:
            spec, where = k["spec"], f"{env}: Kustomization {k['metadata']['name']}"
            assert k["metadata"]["namespace"] == answers["flux_namespace"], where
            path_env, layer = layer_of(spec["path"])
            assert path_env == env, f"{where} points at {spec['path']}"
            assert layer not in by_layer, f"{where}: a second {layer} layer"
            by_layer[layer] = k
            deployed(repo, spec["path"].removeprefix("./"))  # exists and builds
            ref = spec["sourceRef"]
            assert (ref["kind"], ref["name"]) in sources, f"{where}: sourceRef {ref} is not in this entry point"
            assert ref.get("namespace", answers["flux_namespace"]) == answers["flux_namespace"], where
            assert {d["name"] for d in spec.get("dependsOn", [])} <= names, f"{where}: dependsOn does not resolve"
            assert spec["prune"] is True, where
            assert spec["interval"] == answers["sync_interval"], where
            sops = answers.get("secrets_provider") == "sops" and layer == "secrets"
            if sops:
                assert spec["decryption"]["provider"] == "sops" and spec["decryption"]["secretRef"]["name"], where
            else:
                assert "decryption" not in spec, where
            assert spec.get("serviceAccountName") == (answers["flux_service_account"] or None), where

        layers = {"platform", "models"} | ({"secrets"} if has_secrets_layer(repo, env) else set())
        assert by_layer.keys() == layers, env
        name_of = {layer: k["metadata"]["name"] for layer, k in by_layer.items()}
        models = by_layer["models"]["spec"]
        assert {d["name"] for d in models["dependsOn"]} == {name_of[layer] for layer in layers - {"models"}}
        if "secrets" in layers:
            assert [d["name"] for d in by_layer["secrets"]["spec"]["dependsOn"]] == [name_of["platform"]]
        assert by_layer["platform"]["spec"]["wait"] is True
        assert models["timeout"] == answers["sync_timeout"]
        # The models layer health-checks the workload KServe makes of each model it deploys, and each endpoint
        # picker, never an InferenceService (KServe copies its observedGeneration from that workload, #6081).
        assert not models.get("wait") and not models.get("healthCheckExprs")
        applied = deployed(repo, models["path"].removeprefix("./"))
        workload = (("serving.knative.dev/v1", "Service") if answers["deployment_mode"] == "Knative"
                    else ("apps/v1", "Deployment"))
        expected = {(*workload, f"{o['metadata']['name']}-predictor", answers["namespace"])
                    for o in applied if o["kind"] == "InferenceService"}
        expected |= {("apps/v1", "Deployment", o["metadata"]["name"],
                      o["metadata"].get("namespace", answers["namespace"])) for o in applied if o["kind"] == "Deployment"}
        checks = [(c["apiVersion"], c["kind"], c["name"], c["namespace"]) for c in models.get("healthChecks", [])]
        assert sorted(checks) == sorted(expected), env

        if answers["flux_service_account"]:
            check_flux_tenant_rbac(repo, answers, objs, kustomizations)
        else:
            assert not {o["kind"] for o in objs} & {"ServiceAccount", "Role", "ClusterRole", "ClusterRoleBinding"}


def flux_tenant_build(repo: Path, kustomization: dict, tmp: Path) -> list[dict]:
    """What kustomize-controller applies for a Flux Kustomization: its path, with spec.patches applied."""
    folder = repo / kustomization["spec"]["path"].removeprefix("./")
    if not kustomization["spec"].get("patches"):
        return deployed(repo, str(folder.relative_to(repo)))
    overlay = tmp / kustomization["metadata"]["name"]
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": [os.path.relpath(folder, overlay)], "patches": kustomization["spec"]["patches"]}))
    return objects(kustomize_build(overlay))


# What kustomize-controller's health check (kstatus) reads for each kind the models layer checks.
HEALTH_CHECK_READS = {("apps", "Deployment"): {("apps", "deployments"), ("apps", "replicasets"), ("", "pods")},
                      ("serving.knative.dev", "Service"): {("serving.knative.dev", "services")}}


def check_flux_tenant_rbac(repo: Path, answers: dict, objs: list[dict], kustomizations: list[dict]) -> None:
    """Least privilege for the impersonated ServiceAccount, checked for scope, not just kinds: namespaced kinds
    through a Role in the models' namespace, cluster-scoped kinds by name, nothing that escalates, nothing of the
    admin-owned layer, and nothing in Flux's own namespace."""
    sa_name, flux_ns, target_ns = answers["flux_service_account"], answers["flux_namespace"], answers["namespace"]
    subject = {"kind": "ServiceAccount", "name": sa_name, "namespace": flux_ns}
    accounts = [o for o in objs if o["kind"] == "ServiceAccount"]
    assert [(a["metadata"]["name"], a["metadata"]["namespace"]) for a in accounts] == [(sa_name, flux_ns)]

    # What the tenant applies: every layer it impersonates for, with Flux's patches (the admin layer dropped).
    with tempfile.TemporaryDirectory() as tmp:
        applied = [o for k in kustomizations if k["spec"].get("serviceAccountName") == sa_name
                   for o in flux_tenant_build(repo, k, Path(tmp))]
    assert applied and all(k["spec"].get("serviceAccountName") == sa_name for k in kustomizations)
    for k in kustomizations:
        if layer_of(k["spec"]["path"])[1] == "secrets":
            applied += [{"apiVersion": "v1" if not SECRETS_LAYER_KIND[answers["secrets_provider"]][0] else
                         "/".join((SECRETS_LAYER_KIND[answers["secrets_provider"]][0], "v1alpha1")),
                         "kind": SECRETS_LAYER_KIND[answers["secrets_provider"]][1],
                         "metadata": {"name": "any", "namespace": target_ns}}]
    assert not kinds_of(applied) & ADMIN_KINDS, "the tenant applies admin-owned objects"
    # ... and the entry point (the admin) applies the admin layer instead.
    assert ADMIN_KINDS <= kinds_of(objs)

    # Namespaced kinds: a Role (never a ClusterRole) in the models' namespace, bound to the ServiceAccount there.
    (role,) = [o for o in objs if o["kind"] == "Role"]
    (role_binding,) = [o for o in objs if o["kind"] == "RoleBinding"]
    assert role["metadata"]["namespace"] == target_ns == role_binding["metadata"]["namespace"]
    assert role_binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                       "name": role["metadata"]["name"]}
    assert role_binding["subjects"] == [subject]
    namespaced = [o for o in applied if resource_info((group_of(o), o["kind"]))[0] == "Namespaced"]
    assert {o["metadata"].get("namespace", target_ns) for o in namespaced} == {target_ns}
    managed = {(g, r) for rule in role["rules"] if "create" in rule["verbs"]
               for g in rule["apiGroups"] for r in rule["resources"]}
    assert managed == {(group_of(o), resource_info((group_of(o), o["kind"]))[1]) for o in namespaced}
    assert all("resourceNames" not in rule for rule in role["rules"])
    # Beyond that, read-only: what the endpoint pickers' bindings grant (RBAC lets only a holder grant it) and what
    # the models layer's health checks read (a Deployment is read with its ReplicaSets and their Pods).
    extra = [rule for rule in role["rules"] if "create" not in rule["verbs"]]
    assert all(sorted(rule["verbs"]) == ["get", "list", "watch"] for rule in extra)
    readable = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    for k in kustomizations:
        for check in k["spec"].get("healthChecks", []):
            assert check["namespace"] == target_ns
            needs = HEALTH_CHECK_READS[(check["apiVersion"].rpartition("/")[0], check["kind"])]
            assert needs <= readable, f"the tenant cannot read what the health check on {check['name']} reads"

    # The RoleBindings the tenant writes (the endpoint pickers'): without `bind`, the API server resolves the role a
    # binding names and requires the writer to hold all of it (kubernetes pkg/registry/rbac/rolebinding/policybased).
    # So the role exists before the tenant's layer is applied, i.e. the admin applies it (a Role in the same layer is
    # missing during Flux's dry run), and the tenant's Role holds every permission it grants.
    admin_roles = {(o["kind"], o["metadata"]["name"]): o for o in objs if o["kind"] == "ClusterRole"
                   and o["metadata"].get("labels", {}).get("model-serving.io/layer") == "admin"}
    held = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}
    for binding in (o for o in applied if o["kind"] == "RoleBinding"):
        ref = binding["roleRef"]
        assert (ref["kind"], ref["name"]) in admin_roles, \
            f"RoleBinding {binding['metadata']['name']} names {ref}: not an admin-owned role"
        granted = {(g, r, v) for rule in admin_roles[ref["kind"], ref["name"]]["rules"]
                   for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
        assert granted <= held, f"the tenant cannot grant {sorted(granted - held)} without bind"
        assert {v for _, _, v in granted} <= {"get", "list", "watch"}

    # Cluster-scoped kinds: reads may be cluster-wide; every write is narrowed to the names the tenant applies.
    cluster_objs = [o for o in applied if resource_info((group_of(o), o["kind"]))[0] == "Cluster"]
    cluster_roles = [o for o in objs
                     if o["kind"] == "ClusterRole" and ("ClusterRole", o["metadata"]["name"]) not in admin_roles]
    cluster_bindings = [o for o in objs if o["kind"] == "ClusterRoleBinding"]
    assert len(cluster_roles) == len(cluster_bindings) == (1 if cluster_objs else 0)
    writes: dict[tuple[str, str], set[str]] = {}
    for cluster_role in cluster_roles:
        (binding,) = cluster_bindings
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                      "name": cluster_role["metadata"]["name"]}
        assert binding["subjects"] == [subject]
        for rule in cluster_role["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    kind = next(k for k, (scope, plural) in api_resources().items() if k[0] == g and plural == r)
                    assert resource_info(kind)[0] == "Cluster", f"the ClusterRole grants namespaced {r}"
                    if set(rule["verbs"]) - {"get", "list", "watch"}:
                        assert rule.get("resourceNames"), f"writes to every {r} in the cluster"
                        writes.setdefault((g, r), set()).update(rule["resourceNames"])
    assert writes == {
        (group_of(o), resource_info((group_of(o), o["kind"]))[1]): {
            p["metadata"]["name"] for p in cluster_objs if (group_of(p), p["kind"]) == (group_of(o), o["kind"])}
        for o in cluster_objs}

    for rbac_role in [role, *cluster_roles]:
        for rule in rbac_role["rules"]:
            assert not set(rule["verbs"]) & ESCALATING_VERBS, f"{rbac_role['kind']} grants {rule['verbs']}"
            assert "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
            if "rbac.authorization.k8s.io" in rule["apiGroups"]:  # only the endpoint pickers' bindings, in its namespace
                assert rbac_role is role and set(rule["resources"]) <= {"rolebindings"}, rule
    # Nothing in Flux's namespace: its Git credentials and decryption keys live there.
    assert not [o for o in objs if o["kind"] in ("Role", "RoleBinding") and o["metadata"]["namespace"] == flux_ns]


# --- 4. catalog, copier choices and template agree ------------------------------------------------------


def jinja_condition_names(folder: Path, variable: str) -> dict[str, Path]:
    """Entries named `{% if 'x' in <variable> %}x{% endif %}` -> {x: path}; any other name is an error."""
    shape = re.compile(r"\{% if '([a-z0-9-]+)' in " + variable + r" %\}([a-z0-9-]+)\{% endif %\}")
    found = {}
    for entry in folder.iterdir():
        match = shape.fullmatch(entry.name)
        assert match and match.group(1) == match.group(2), f"{entry}: not a '{{% if 'x' in {variable} %}}x' entry"
        found[match.group(1)] = entry
    return found


def test_components_agree_across_catalog_folders_template_and_copier(rendered, tmp_path):
    catalog = list(render.catalog("components"))
    folders = sorted(p.name for p in (render.CATALOG / "components").iterdir() if p.is_dir())
    links = jinja_condition_names(PROJECT_ROOT / "template" / "components", "components_used")
    assert sorted(catalog) == folders == sorted(links)
    for name, link in links.items():
        assert link.is_symlink() and link.resolve() == (render.CATALOG / "components" / name).resolve()

    # copier accepts every catalog component: two answer sets select them all (one Knative, one Standard: keda
    # works in Standard mode only), and each renders as a Component.
    repos = [rendered("both-all-models"), rendered("both-standard")]
    used = {c for repo in repos for env in answers_of(repo)["environments"] for c in env["components"]}
    assert used == set(catalog)
    written = {p.name: p for repo in repos for p in (repo / "components").iterdir()}
    assert sorted(written) == sorted(catalog)
    for name in catalog:
        doc = yaml.safe_load((written[name] / "kustomization.yaml").read_text())
        assert (doc["apiVersion"], doc["kind"]) == ("kustomize.config.k8s.io/v1alpha1", "Component"), name

    # ... and rejects anything else, naming exactly the catalog's components, writing nothing.
    dst = tmp_path / "bad"
    bad = [{"name": "gpu", "cluster": "in-cluster", "components": ["gpu", "bogus"]}]
    with pytest.raises(ValueError, match=r'unknown component "bogus": use (.+)$') as failure:
        render.render(dst, {"environments": bad})
    offered = re.search(r"use (.+)$", str(failure.value)).group(1).split(", ")
    assert offered == catalog
    assert not dst.exists()


def test_runtimes_agree_across_catalog_template_and_copier(tmp_path):
    catalog = list(render.catalog("runtimes"))
    folders = jinja_condition_names(PROJECT_ROOT / "template" / "platform" / "runtimes", "runtimes")
    assert sorted(folders) == sorted(catalog)

    # copier's rendered choices for `runtimes` (it lists them when it refuses an unknown one) are the catalog.
    with pytest.raises(ValueError, match=r"Invalid choice for 'runtimes'") as failure:
        render.render(tmp_path / "bad", {"runtimes": ["bogus"]})
    choices = re.search(r"is not in \[(.*)\]", str(failure.value)).group(1)
    assert [c.strip().strip("'\"") for c in choices.split(",")] == catalog
    assert not (tmp_path / "bad").exists()

    # Each runtime alone renders its ClusterServingRuntime, and only that one.
    for runtime, entry in render.catalog("runtimes").items():
        repo = render.render(tmp_path / runtime, {"runtimes": [runtime]})
        assert [p.name for p in (repo / "platform" / "runtimes").iterdir()] == [runtime]
        objs = objects(build(repo / "platform" / "runtimes" / runtime))
        assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [("ClusterServingRuntime", entry["runtime_name"])]


def test_every_catalog_model_renders_and_validates(rendered, store):
    repo = rendered("both-all-models")
    names = [m["name"] for m in render.catalog("models")["models"]]
    assert sorted(p.name for p in (repo / "models").iterdir()) == sorted(names)
    report = validate([repo], store_dir=store.path)
    assert report.ok, "\n".join(report.failures())
    served = {
        o["metadata"]["name"]
        for env in env_names(repo)
        for o in deployed(repo, f"environments/{env}/models")
        if o["kind"] == "InferenceService"
    }
    assert served == set(names)


def test_catalog_huggingface_models_load_a_pinned_commit(rendered):
    """Supply chain: every catalog model from HuggingFace names the commit it loads (KServe's hf://org/repo:rev),
    so a re-download next month loads the same weights."""
    repo = rendered("both-all-models")
    hf_models = [m for m in render.catalog("models")["models"] if str(m.get("storageUri", "")).startswith("hf://")]
    assert hf_models
    predictors = {o["metadata"]["name"]: o["spec"]["predictor"]["model"]
                  for env in env_names(repo) for o in deployed(repo, f"environments/{env}/models")
                  if o["kind"] == "InferenceService"}
    for model in hf_models:
        assert re.fullmatch(r"[0-9a-f]{40}", model.get("revision", "")), f"{model['name']}: no commit pinned"
        loaded = predictors[model["name"]]
        if "storageUri" in loaded:  # KServe's storage initializer: hf://org/repo:revision
            assert loaded["storageUri"] == f"{model['storageUri']}:{model['revision']}"
        else:  # llama.cpp fetches one GGUF file itself, at that commit
            assert any(f"/resolve/{model['revision']}/" in str(arg) for arg in loaded.get("args", [])), loaded


def test_generated_make_validate_fetches_schemas_from_pinned_refs(rendered):
    """Supply chain: the generated `make validate` downloads nothing from a moving branch: no URL of its own,
    and every CRD it fetches (servingops' crds.lock.toml) is a tagged URL with its sha256."""
    makefile = (rendered("argocd") / "Makefile").read_text()
    assert not re.findall(r"https://raw\.githubusercontent\.com/\S+", makefile)
    lock = tomllib.loads((PROJECT_ROOT / "src" / "servingops" / "data" / "crds.lock.toml").read_text())
    assert lock["crd"]
    for entry in lock["crd"]:
        ref = entry["url"].removeprefix("https://raw.githubusercontent.com/").split("/")[2]
        assert ref not in ("main", "master", "HEAD") and not ref.startswith("refs"), entry["url"]
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), entry


# --- 5. clean, deterministic Kustomize ------------------------------------------------------------------


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_kustomizations_are_idiomatic_v5(name, rendered):
    repo = rendered(name)
    files = sorted(repo.rglob("kustomization.yaml"))
    assert files
    for path in files:
        where = path.relative_to(repo)
        doc = yaml.safe_load(path.read_text())
        assert list(doc)[:2] == ["apiVersion", "kind"], f"{where} starts with {list(doc)[:2]}"
        assert (doc["apiVersion"], doc["kind"]) in {
            ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
            ("kustomize.config.k8s.io/v1alpha1", "Component"),
        }, where
        assert not DEPRECATED_KUSTOMIZE_FIELDS & doc.keys(), f"{where}: {DEPRECATED_KUSTOMIZE_FIELDS & doc.keys()}"
        for patch in doc.get("patches", []):
            assert ("path" in patch) != ("patch" in patch), f"{where}: patch {patch}"
        for image in doc.get("images", []):
            assert image.get("newTag") or image.get("digest"), f"{where}: image {image['name']} is not pinned"
            assert image.get("newTag") != "latest", f"{where}: image {image['name']} uses latest"
        names = [image["name"] for image in doc.get("images", [])]
        assert len(names) == len(set(names)), f"{where}: an image is pinned twice"


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_every_overlay_builds_deterministically(name, rendered):
    repo = rendered(name)
    for target in find_targets([repo]):
        first = build(target.path)
        assert kustomize_build(target.path) == first, f"{target.path.relative_to(repo)} builds differently twice"


# --- README ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ANSWER_SETS)
def test_readme_lists_environments_and_the_tree(name, rendered):
    repo = rendered(name)
    text = (repo / "README.md").read_text()
    layout = re.search(r"^## Layout\n+```\n(.*?)\n```\n+(.*?)\n\n", text, re.S | re.M)
    assert layout, "README has no Layout section with a tree and the environments table"
    tree, table = layout.groups()
    rows = [line.strip("|").split("|") for line in table.splitlines()]
    assert [c.strip() for c in rows[0]][:2] == ["environment", "cluster"]
    listed = {r[0].strip(): r[1].strip() for r in rows[2:]}
    assert listed == {e["name"]: e["cluster"] for e in answers_of(repo)["environments"]}

    mentioned = {line.split("/")[0] for line in tree.splitlines() if line and not line.startswith(" ")}
    existing = {p.name for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert existing <= mentioned, f"top folders missing from the README tree: {existing - mentioned}"
    assert mentioned <= existing, f"the README tree names folders that do not exist: {mentioned - existing}"
    for line in tree.splitlines():  # deeper paths the tree names literally (no <placeholder>) exist too
        path = line.split()[0]
        if not line.startswith(" ") and "<" not in path:
            assert (repo / path).exists(), f"README tree: {path} does not exist"


# --- 6. re-copying over a committed repo changes nothing ------------------------------------------------


@pytest.mark.parametrize("name", ["both-sealed-secrets", "flux-sops"])
def test_recopy_with_the_same_answers_leaves_git_clean(name, committed_template, tmp_path):
    repo = render.render(tmp_path / "repo", ANSWER_SETS[name], template=committed_template)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "generated")
    # Tamper with a generated file, so a clean tree proves the re-copy rewrote it byte for byte.
    readme = repo / "README.md"
    readme.write_text(readme.read_text() + "\nlocal edit\n")
    answers = {k: v for k, v in answers_of(repo).items() if not k.startswith("_")}
    copier.run_copy(
        str(committed_template), str(repo), data=answers, overwrite=True, defaults=True, vcs_ref="HEAD",
        quiet=True, unsafe=False,
    )
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


# --- 7. the generated repo's own `make validate` --------------------------------------------------------

SERVINGOPS = Path(sys.executable).with_name("servingops")


def make_validate(repo: Path, store) -> subprocess.CompletedProcess:
    """The repo's `make validate` with this checkout's servingops and a prebuilt schema store: fully offline."""
    return subprocess.run(
        ["make", "--no-print-directory", "validate", f"SERVINGOPS={SERVINGOPS}", f"SCHEMA_STORE={store.path}"],
        cwd=repo, capture_output=True, text=True, timeout=300,
        env={**{k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")},
             **CLOSED_PROXY, "NO_PROXY": "", "no_proxy": "",  # offline: any fetch would fail
             "SERVINGOPS_TOOLS_DIR": str(tool_path("kustomize").parent)},
    )


def test_generated_make_validate_passes_offline(rendered, store):
    repo = rendered("both-sealed-secrets")
    result = make_validate(repo, store)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every overlay and entry point Argo CD / Flux sync was built and validated.
    expected = [f"environments/{env}/{layer}" for env in env_names(repo) for layer in ("models", "platform")]
    expected += ["clusters/argocd"] + [str(flux_entry(repo, env).relative_to(repo)) for env in env_names(repo)]
    report = subprocess.run(
        [str(SERVINGOPS), "validate", "--prebuilt-schemas", str(store.path), "--output", "json", "."],
        cwd=repo, capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    targets = {t["target"]: t["status"] for t in json.loads(report)["targets"]}
    assert all(targets.get(overlay) == VALID for overlay in expected), targets


def test_generated_make_validate_fails_on_a_broken_manifest(rendered, store, tmp_path):
    repo = shutil.copytree(rendered("both-sealed-secrets"), tmp_path / "repo", symlinks=True)
    manifest = repo / "models" / "llama-70b" / "inferenceservice.yaml"
    isvc = yaml.safe_load(manifest.read_text())
    isvc["spec"]["predictor"]["notAField"] = True
    manifest.write_text(yaml.safe_dump(isvc))
    result = make_validate(repo, store)
    assert result.returncode != 0
    assert "notAField" in result.stdout + result.stderr
