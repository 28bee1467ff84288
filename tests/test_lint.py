"""`servingops lint`: every rule fails its bad fixture and passes its good one (real kustomize builds), references
resolve across an environment's layers, and rendered repos lint clean."""

from __future__ import annotations

import json
import os
import shutil
import types
from pathlib import Path

import pytest
import yaml

from servingops import capacity, kserve, lint, render
from servingops.cli import main
from servingops.errors import InputError
from servingops.validate import display_path, kustomize_build, split_documents

FIXTURES = Path(__file__).parent / "fixtures" / "lint"
REPO = FIXTURES / "_repo"  # a generated repo in miniature: environment dev = platform + secrets + models layers

# What each bad fixture must report: the resources (prefixes: generated Secret names carry a hash) and a phrase
# of the message. Nothing else may be reported.
BAD = {
    "build": (["kustomization"], "missing.yaml"),
    "ref-runtime": (["InferenceService llm/qwen", "InferenceService llm/tiny"], "runtime kserve-nope is not deployed"),
    "ref-service-account": (["InferenceService llm/tiny"], "serviceAccountName s3-sa"),
    "ref-secret": (["InferenceService llm/qwen", "ServiceAccount llm/hf-sa"], "Secret hf-secret is not created"),
    "ref-priority-class": (["InferenceService llm/tiny"], "priorityClassName llm-critical"),
    "ref-inference-pool": (["HTTPRoute llm/qwen", "HTTPRoute llm/qwen"], "(group inference.networking.x-k8s.io)"),
    "pool-no-match": (["InferencePool llm/qwen"], "serving.kserve.io/inferenceservice=qwen2 selects no"),
    "pool-non-vllm": (["InferencePool llm/qwen"], "non-vLLM model servers (tiny)"),
    "gpu-limit": (["InferenceService llm/qwen"], "requests 2 nvidia.com/gpu but its limit is 1"),
    "gpu-toleration": (["InferenceService llm/qwen"], "does not tolerate the nvidia.com/gpu NoSchedule taint"),
    "capacity": (["InferenceService llm/tiny", "InferenceService llm/tiny"], "8192 MiB --cache-ram"),
    "timeouts": (["Kustomization llm/models"], "timeout 30m is shorter than InferenceService qwen's"),
    "flux-health-checks": (["Kustomization llm/models", "Kustomization llm/models",
                            "Kustomization llm/models-waiting"], "kserve/kserve#6081"),
    "gpu-tensor-parallel": (["InferenceService llm/qwen"], "--tensor-parallel-size 1 does not use its 2"),
    "gpu-on-cpu": (["InferenceService llm/qwen", "InferenceService llm/tiny"],
                   "labelled model-serving.io/accelerator=cpu"),
    "resources": (
        ["ClusterServingRuntime kserve-llamacpp", "ClusterServingRuntime kserve-vllm", "InferenceService llm/tiny"],
        "has no limits.memory",
    ),
    "image-pinned": (["ClusterServingRuntime kserve-llamacpp", "ClusterServingRuntime kserve-vllm"],
                     "registry.internal:5000/kserve/huggingfaceserver is not pinned"),
    "secret-plaintext": (["Secret half-encrypted", "Secret hf-secret", "Secret llm/api-key", "Secret llm/s3-creds-"],
                         "stringData in plain text"),
    "env-credential": (["InferenceService llm/tiny"], "model env DB_PASSWORD has a literal value"),
    "capabilities": (["ClusterServingRuntime kserve-llamacpp"], "adds capabilities CHOWN, SYS_ADMIN"),
    "host-namespaces": (["InferenceService llm/tiny"], "predictor hostNetwork: true"),
    "host-path": (["InferenceService llm/tiny"], "volume cache is a hostPath"),
    "privileged": (["ClusterServingRuntime kserve-llamacpp"], "is privileged"),
    "privilege-escalation": (["InferenceService llm/tiny"], "allowPrivilegeEscalation: true"),
    "ns-pod-security": (["Namespace llm"], "enforce is privileged"),
    "ns-network-policy": (["Namespace llm", "NetworkPolicy llm/default-ingress"], "admits traffic from anywhere"),
    "pool-endpoint-picker": (["InferencePool llm/everything", "InferencePool llm/gpu-models",
                              "InferencePool llm/gpu-models", "InferencePool llm/qwen"],
                             "qwen-epp serves pool qwen, not gpu-models"),
    "route-timeout": (["HTTPRoute llm/qwen"], "without timeouts.request"),
    "route-openai-path": (["HTTPRoute llm/qwen"], "reaches qwen as /v1/chat/completions, but it serves the OpenAI "
                          "API under /openai/v1/"),
    "ns-gateway-ingress": (["NetworkPolicy llm/default-ingress"] * 3, "no ingress rule admits namespace kourier-system"),
    "keda-scaling": (["InferenceService llm/qwen"] * 3 + ["InferenceService llm/tiny"] * 2,
                     "vLLM labels its metrics with the model path (/mnt/models)"),
    "runtime-admission": (["ClusterServingRuntime kserve-llamacpp", "ClusterServingRuntime kserve-vllm"],
                          "like KServe v0.20.0's kserve-huggingfaceserver-multinode"),
}


def test_every_rule_has_a_good_and_a_bad_fixture():
    rules = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert rules == sorted(lint.RULES) == sorted(BAD)
    for rule in rules:
        assert (FIXTURES / rule / "good" / "kustomization.yaml").is_file()
        assert (FIXTURES / rule / "bad" / "kustomization.yaml").is_file()


@pytest.mark.parametrize("rule", sorted(BAD))
def test_good_fixture_lints_clean(rule):
    report = lint.lint_paths([FIXTURES / rule / "good"])
    assert report.ok, report.failures()
    assert report.overlays == [display_path(FIXTURES / rule / "good")]
    assert report.summary() == "1 overlay lints clean"


@pytest.mark.parametrize("rule", sorted(BAD))
def test_bad_fixture_fails_its_rule_only(rule):
    resources, phrase = BAD[rule]
    report = lint.lint_paths([FIXTURES / rule / "bad"])
    assert not report.ok
    assert {f.rule for f in report.findings} == {rule}, report.failures()
    found = sorted(f.resource for f in report.findings)
    assert len(found) == len(resources) and all(f.startswith(e) for f, e in zip(found, sorted(resources))), found
    assert any(phrase in f.message for f in report.findings), report.failures()
    for finding in report.findings:
        # One line: what is wrong, then the fix after a colon; the overlay (or repo file) it is in.
        assert "\n" not in finding.message and ": " in finding.message
        assert finding.overlay.startswith(display_path(FIXTURES / rule / "bad"))
    assert report.summary() == f"{len(resources)} finding{'' if len(resources) == 1 else 's'} in 1 overlay"


def copy_fixtures(tmp_path: Path, *names: str) -> Path:
    root = tmp_path / "lint"
    for name in ("_base", *names):
        shutil.copytree(FIXTURES / name, root / name, symlinks=True)
    return root


def test_each_way_a_secret_exists_counts(tmp_path):
    good = copy_fixtures(tmp_path, "ref-secret") / "ref-secret" / "good"
    assert lint.lint_paths([good]).ok
    (good / ".servingops.yaml").unlink()  # api-key was only listed as created outside Git
    kustomization = good / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("  - sealedsecret.yaml\n", ""))
    report = lint.lint_paths([good])
    assert sorted((f.rule, f.resource, f.message.split(" is ")[0]) for f in report.findings) == [
        ("ref-secret", "InferenceService llm/tiny", "Secret api-key"),
        ("ref-secret", "InferenceService llm/tiny", "Secret s3-creds"),
    ]


# --- settings -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, error", [
    ("lint:\n  externalSecret: [a]\n", "unknown key lint.externalSecret: allowed keys are externalSecrets"),
    ("lints: {}\n", "unknown key 'lints': allowed keys are lint"),
    ("lint:\n  externalSecrets: hf-secret\n", "lint.externalSecrets must be a list of Secret names"),
    ("lint:\n  gatewayNamespaces: istio-system\n", "lint.gatewayNamespaces must be a list"),
    ("- lint\n", "must be a mapping"),
    ("lint: [\n", "not valid YAML"),
])
def test_settings_errors_name_the_key_and_the_fix(tmp_path, text, error):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    (repo / ".servingops.yaml").write_text(text)
    with pytest.raises(InputError, match=error.replace("[", r"\[").replace("(", r"\(")):
        lint.lint_paths([repo])


def test_settings_are_optional_and_found_upwards(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    assert lint.find_repo_root(repo / "environments" / "dev" / "models") == repo.resolve()
    assert lint.load_settings(repo.resolve()).external_secrets == {"s3-creds"}
    (repo / ".servingops.yaml").write_text("# nothing to configure\n")
    assert lint.load_settings(repo.resolve()) == lint.Settings()
    assert lint.find_repo_root(tmp_path) is None


# --- one environment = what its entry points deploy ----------------------------------------------------


def layers(*names: str, root: Path = REPO) -> list[str]:
    return sorted(display_path(root / n) for n in names)


DEV = ("environments/dev/models", "environments/dev/platform", "secrets/dev")


def test_environment_groups_come_from_the_argocd_entry_point():
    root = REPO.resolve()
    assert lint.environment_groups(root) == [frozenset(root / n for n in DEV)]


@pytest.mark.parametrize("path", [".", "environments/dev/models", "models/qwen"])
def test_references_resolve_across_the_environment(path):
    # The models layer's runtime, PriorityClass and namespace live in the platform layer, hf-secret in the SOPS
    # file of secrets/dev: a layer (or a base of one) is linted with every layer of its environment.
    report = lint.lint_paths([REPO / path])
    assert report.ok, report.failures()
    assert report.overlays == layers(*DEV)


def flux_entry_point(tmp_path: Path, names: tuple[str, ...], **spec) -> tuple[Path, Path]:
    """A copy of the fixture repo synced by Flux instead of Argo CD: one Kustomization per layer (name) of DEV."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    shutil.rmtree(repo / "clusters" / "argocd")
    flux = repo / "clusters" / "flux" / "dev"
    flux.mkdir(parents=True)
    (flux / "layers.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": layer},
         "spec": {"interval": "10m", **spec, "path": f"./{path}", "prune": True,
                  "sourceRef": {"kind": "GitRepository", "name": "llm"}}}
        for layer, path in zip(names, DEV)]))
    return repo, flux


def test_flux_entry_points_group_the_same_way(tmp_path):
    repo, _ = flux_entry_point(tmp_path, ("models", "platform", "secrets"))
    assert lint.environment_groups(repo.resolve()) == [frozenset(repo.resolve() / n for n in DEV)]
    report = lint.lint_paths([repo])
    assert report.ok and report.overlays == layers(*DEV, root=repo), report.failures()


def test_flux_entry_points_decide_the_group_not_the_layout(tmp_path):
    # Flux syncs only the models and platform layers here: the layout would have added secrets/dev.
    repo, _ = flux_entry_point(tmp_path, ("models", "platform"))
    assert lint.environment_groups(repo.resolve()) == [frozenset(repo.resolve() / n for n in DEV[:2])]


def test_argocd_entry_points_decide_the_group_not_the_layout(tmp_path):
    # Argo CD syncs only the models and platform layers here: the layout would have added secrets/dev.
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    apps = repo / "clusters" / "argocd" / "dev.yaml"
    apps.write_text(yaml.safe_dump_all(
        [d for d in yaml.safe_load_all(apps.read_text()) if d["spec"]["source"]["path"] != "secrets/dev"]))
    assert lint.environment_groups(repo.resolve()) == [frozenset(repo.resolve() / n for n in DEV[:2])]


def test_a_flux_entry_point_waits_for_the_models_of_its_layer(tmp_path):
    # clusters/flux/dev syncs the models layer with a 5m timeout; qwen may take 60m to load.
    repo, flux = flux_entry_point(tmp_path, ("models", "platform", "secrets"), timeout="5m")
    models = repo / "environments" / "dev" / "models" / "kustomization.yaml"
    models.write_text(models.read_text() + (
        "patches:\n  - target: {kind: InferenceService, name: qwen}\n    patch: |-\n      - op: add\n"
        "        path: /metadata/annotations\n        value: {serving.knative.dev/progress-deadline: 60m}\n"))
    report = lint.lint_paths([repo])
    assert [(f.overlay, f.resource, f.rule) for f in report.findings] == [
        (display_path(flux / "layers.yaml"), "Kustomization models", "timeouts")], report.failures()


def test_without_entry_points_the_environments_layout_groups(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    shutil.rmtree(repo / "clusters")
    report = lint.lint_paths([repo])
    assert report.ok and report.overlays == layers(*DEV, root=repo), report.failures()


def test_without_grouping_each_layer_is_missing_the_others(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    (repo / ".servingops.yaml").unlink()  # no repo root: every overlay on its own, nothing grouped
    report = lint.lint_paths([repo / "environments"])
    models = display_path(repo / "environments" / "dev" / "models")
    assert {(f.overlay, f.rule) for f in report.findings} == {
        (models, rule) for rule in
        ("ref-runtime", "ref-priority-class", "ref-secret", "ns-pod-security", "ns-network-policy")
    }
    assert {f.message.split(" is ")[0] for f in report.findings if f.rule == "ref-secret"} == {
        "Secret hf-secret", "Secret s3-creds"}


def test_environments_do_not_see_each_other(tmp_path):
    # prod deploys the same model on a platform without the vLLM runtime: only prod is wrong, dev stays clean.
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    text = (repo / "clusters" / "argocd" / "dev.yaml").read_text()
    (repo / "clusters" / "argocd" / "prod.yaml").write_text(text.replace("dev", "prod"))
    shutil.copytree(repo / "secrets" / "dev", repo / "secrets" / "prod")
    shutil.copytree(repo / "environments" / "dev", repo / "environments" / "prod")
    (repo / "environments" / "prod" / "platform" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../../platform\n"
        "patches:\n  - patch: |-\n      $patch: delete\n      apiVersion: serving.kserve.io/v1alpha1\n"
        "      kind: ClusterServingRuntime\n      metadata: {name: kserve-vllm}\n"
    )
    report = lint.lint_paths([repo])
    assert [(f.overlay, f.resource, f.rule) for f in report.findings] == [
        (display_path(repo / "environments" / "prod" / "models"), "InferenceService llm/qwen", "ref-runtime")
    ]
    assert len(report.overlays) == 6


def test_a_missing_secret_in_the_secrets_layer_is_found(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    (repo / "secrets" / "dev" / "hf-secret.yaml").unlink()
    report = lint.lint_paths([repo])
    assert [(f.resource, f.rule) for f in report.findings] == [("InferenceService llm/qwen", "ref-secret")]
    assert "Secret hf-secret is not created" in report.findings[0].message
    assert report.overlays == layers("environments/dev/models", "environments/dev/platform", root=repo)


def test_lint_built_reuses_outputs_and_builds_only_the_missing_layers():
    models = REPO / "environments" / "dev" / "models"
    docs = [parsed for parsed, _ in split_documents(kustomize_build(models))]
    report = lint.lint_built({display_path(models): docs})
    assert report.ok and report.overlays == layers(*DEV), report.failures()
    # The docs given are what is linted (not a rebuild): a change in them shows.
    for doc in docs:
        if doc["kind"] == "InferenceService":
            doc["spec"]["predictor"]["priorityClassName"] = "llm-critical"
    report = lint.lint_built({models: docs}, REPO)
    assert [(f.overlay, f.resource, f.rule) for f in report.findings] == [
        (str(models), "InferenceService llm/qwen", "ref-priority-class")]  # named as the caller named it


# --- rendered repos ---------------------------------------------------------------------------------------

EVERY_RUNTIME = {
    "gitops_engine": "both",
    "catalog_models": ["llama-70b", "qwen-7b-gguf", "qwen3-4b", "llama-8b-gpu", "qwen25-1-5b"],
}


@pytest.mark.renders
@pytest.mark.parametrize("answers", [
    {},
    {**EVERY_RUNTIME, "secrets_provider": "manual"},
    {**EVERY_RUNTIME, "secrets_provider": "sealed-secrets"},
], ids=["defaults", "both-manual", "both-sealed-secrets"])
def test_rendered_repo_lints_clean(tmp_path, answers):
    repo = render.render(tmp_path / "repo", answers)
    report = lint.lint_paths([repo])
    assert report.ok, report.failures()
    envs = [p.name for p in sorted((repo / "environments").iterdir())]
    for env in envs:
        assert display_path(repo / "environments" / env / "models") in report.overlays
        assert display_path(repo / "environments" / env / "platform") in report.overlays
    if answers.get("secrets_provider") in ("manual", "sealed-secrets"):
        # The Secrets the models need come from outside Git: without .servingops.yaml's list they are unresolved.
        settings = yaml.safe_load((repo / ".servingops.yaml").read_text())
        assert sorted(settings["lint"]["externalSecrets"]) == ["hf-secret", "s3-model-creds"]
        (repo / ".servingops.yaml").write_text("lint:\n  externalSecrets: []\n")
        report = lint.lint_paths([repo])
        assert {f.rule for f in report.findings} == {"ref-secret"}
        assert {f.message.split(" is ")[0] for f in report.findings} == {"Secret hf-secret", "Secret s3-model-creds"}


# --- CLI --------------------------------------------------------------------------------------------------


def test_cli_text_output_and_exit_codes(capsys):
    assert main(["lint", str(FIXTURES / "gpu-on-cpu" / "good")]) == 0
    assert capsys.readouterr().out == "1 overlay lints clean\n"
    assert main(["lint", str(FIXTURES / "gpu-on-cpu" / "bad"), str(FIXTURES / "host-path" / "bad")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "3 findings in 2 overlays"
    assert all(": [gpu-on-cpu] " in line or ": [host-path] " in line for line in lines[:-1]) and len(lines) == 4


def test_cli_json_output(capsys):
    assert main(["lint", str(FIXTURES / "pool-non-vllm" / "bad"), "--output", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["summary"] == {"findings": 1, "overlays": 1, "ok": False}
    [finding] = data["findings"]
    assert finding["rule"] == "pool-non-vllm" and finding["resource"] == "InferencePool llm/qwen"
    assert finding["overlay"] == display_path(FIXTURES / "pool-non-vllm" / "bad")


def test_cli_bad_settings_is_one_line_error(tmp_path, capsys):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    (repo / ".servingops.yaml").write_text("lint:\n  externalSecretz: []\n")
    assert main(["lint", str(repo)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key lint.externalSecretz" in err


def test_cli_lists_the_catalogue(capsys):
    assert main(["lint", "--list-rules"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(lint.RULES)
    assert all(rule.why in line for rule, line in zip(lint.RULES.values(), lines))
    assert main(["lint"]) == 1
    assert "lint needs a PATH" in capsys.readouterr().err


def test_lint_and_validate_import_no_circle():
    # build <- lint <- validate: lint stands on build alone, so importing it first works and pulls no validate.
    import subprocess
    import sys
    code = "import sys, servingops.lint; assert 'servingops.validate' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- runtime-admission: KServe's ServingRuntime webhook (pkg/webhook/admission/servingruntime) -----------------

HF = {"name": "huggingface", "version": "1", "autoSelect": True, "priority": 2}


@pytest.mark.parametrize("new, existing, collides", [
    ({"protocolVersions": ["v2"], "supportedModelFormats": [HF]},
     {"protocolVersions": ["v1", "v2"], "supportedModelFormats": [HF]}, True),
    # Each of these is admitted by the webhook:
    ({"protocolVersions": ["v2"], "supportedModelFormats": [HF]},
     {"protocolVersions": ["v1"], "supportedModelFormats": [HF]}, False),  # no shared protocol
    ({"protocolVersions": ["v2"], "supportedModelFormats": [{**HF, "autoSelect": False}]},
     {"protocolVersions": ["v2"], "supportedModelFormats": [HF]}, False),  # not auto-selected
    ({"protocolVersions": ["v2"], "supportedModelFormats": [{**HF, "priority": 3}]},
     {"protocolVersions": ["v2"], "supportedModelFormats": [HF]}, False),  # another priority
    ({"protocolVersions": ["v2"], "supportedModelFormats": [{**HF, "version": "2"}]},
     {"protocolVersions": ["v2"], "supportedModelFormats": [HF]}, False),  # another format version
    ({"protocolVersions": ["v2"], "supportedModelFormats": [{k: v for k, v in HF.items() if k != "priority"}]},
     {"protocolVersions": ["v2"], "supportedModelFormats": [HF]}, False),  # no priority
    ({"protocolVersions": ["v2"], "supportedModelFormats": [HF], "multiModel": True},
     {"protocolVersions": ["v2"], "supportedModelFormats": [HF]}, False),  # multi-model vs single-model
    ({"protocolVersions": ["v2"], "supportedModelFormats": [HF]},
     {"protocolVersions": ["v2"], "supportedModelFormats": [HF], "disabled": True}, False),  # existing disabled
])
def test_runtime_priority_collision_follows_the_webhook(new, existing, collides):
    assert bool(kserve.priority_collision(new, existing)) is collides
    assert bool(kserve.priority_collision(existing, new)) is collides


@pytest.mark.renders
@pytest.mark.parametrize("release", [lint.kserve.releases.release(v)["tag"] for v in lint.kserve.releases.versions()])
def test_generated_runtimes_are_admitted_beside_every_release(tmp_path, release):
    # Every runtime the template can generate, next to what each supported KServe release installs.
    repo = render.render(tmp_path / "repo", {"catalog_models": EVERY_RUNTIME["catalog_models"]})
    docs = []
    for folder in sorted((repo / "platform" / "runtimes").iterdir()):
        docs += [lint.Resource(folder.name, d) for d, _ in split_documents(kustomize_build(folder))]
    assert {d.name for d in docs} == {"kserve-vllm", "kserve-llamacpp", "kserve-ollama"}
    env = lint.Environment(docs, lint.Settings(), release=release)
    assert list(lint.runtime_admission(env)) == []
    for doc in docs:  # the seed chart's runtime (autoSelect, priority 2) is what the webhook refuses
        for fmt in doc.obj["spec"]["supportedModelFormats"]:
            fmt.update(autoSelect=True, priority=2)
    found = [(f.resource, f.message.split(" like ")[1].split(",")[0]) for f in lint.runtime_admission(env)]
    assert found == [("ClusterServingRuntime kserve-vllm", f"KServe {release}'s kserve-huggingfaceserver-multinode")]


@pytest.mark.parametrize("path, rules, forwarded", [
    ("/v1/models", [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}], "filters": [
        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/openai/v1"}}}]},
     {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}], "/openai/v1/models"),
    ("/openai/v1/models", [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}]},
                           {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}], "/openai/v1/models"),
    ("/v10/x", [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}]}], None),  # prefixes match segments
    ("/v1/x", [{}], "/v1/x"),  # no matches: every path
    ("/v1/chat/completions", [{"filters": [  # the whole path replaced (mutation testing: `==` -> `<` survived)
        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/chat"}}}]}],
     "/chat"),
    ("/v1/x", [{"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {}}]}], "/v1/x"),
    ("/v1/chat/completions", [{"matches": [{"path": {"type": "Exact", "value": "/v1/models"}}]}], None),
    ("/v1/models", [{"matches": [{"path": {"type": "Exact", "value": "/v1/models"}}]}], "/v1/models"),
])
def test_forwarded_path_follows_gateway_api_matching(path, rules, forwarded):
    assert lint._forwarded_path(path, rules) == forwarded


@pytest.mark.parametrize("value, prefix", [
    (None, "/openai"),  # huggingfaceserver's default
    ("", ""),  # at /v1
    ("custom/", "/custom"),  # one leading slash, none trailing, whatever the user wrote
    ("/a/b", "/a/b"),
])
def test_openai_prefix_follows_kserve_openai_route_prefix(value, prefix):
    good = FIXTURES / "route-openai-path" / "good"
    docs = [lint.Resource(display_path(good), d) for d, _ in split_documents(kustomize_build(good))]
    [runtime] = [d for d in docs if d.kind == "ClusterServingRuntime" and d.name == "kserve-vllm"]
    runtime.obj["spec"]["containers"][0]["env"] = (
        [] if value is None else [{"name": "KSERVE_OPENAI_ROUTE_PREFIX", "value": value}])
    env = lint.Environment(docs, lint.Settings())
    [pod] = [p for p in env.pods() if p.res.name == "qwen" and p.component == "predictor"]
    assert lint._openai_prefix(env, pod) == prefix


NAME = "kubernetes.io/metadata.name"


@pytest.mark.parametrize("selector, matches", [
    ({}, True),
    ({"matchLabels": {NAME: "llm"}}, True),
    ({"matchLabels": {NAME: "other"}}, False),
    ({"matchExpressions": [{"key": NAME, "operator": "In", "values": ["llm", "x"]}]}, True),
    ({"matchExpressions": [{"key": NAME, "operator": "In", "values": ["other"]}]}, False),
    ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["llm"]}]}, False),
    ({"matchExpressions": [{"key": NAME, "operator": "NotIn", "values": ["other"]}]}, True),
    ({"matchExpressions": [{"key": NAME, "operator": "NotIn", "values": ["llm"]}]}, False),
    ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["llm"]}]}, True),
    ({"matchExpressions": [{"key": NAME, "operator": "Exists"}]}, True),
    ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, False),
    ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, True),
    ({"matchExpressions": [{"key": NAME, "operator": "DoesNotExist"}]}, False),
    ("not a mapping", False),
])
def test_namespace_selectors_match_as_kubernetes_matches_them(selector, matches):
    # A label selector (In, NotIn, Exists, DoesNotExist) against a namespace known only by its name label. Read
    # from YAML as lint reads it: its strings are not the interned constants of this file (an `is` would pass).
    assert lint._selector_matches(yaml.safe_load(json.dumps(selector)), {NAME: "llm"}) is matches


@pytest.mark.parametrize("args, value", [
    (["--backend=vllm"], "vllm"),
    (["--backend", "vllm"], "vllm"),
    (["--backend=a", "--backend", "b"], "b"),  # the last one wins
    (["--backend"], None),  # a flag with no value after it
    (["--backend-x=1"], None),
])
def test_flag_reads_both_spellings(args, value):
    assert lint._flag(args, "--backend") == value


# --- ns-gateway-ingress: the NetworkPolicy follows gateway_implementation ---------------------------------------


@pytest.mark.renders
@pytest.mark.parametrize("answers, admitted, cidrs", [
    ({"gateway_implementation": "envoy-gateway"}, {"envoy-gateway-system", "knative-serving", "kourier-system"}, []),
    ({"gateway_implementation": "gke", "deployment_mode": "Standard"}, set(), ["130.211.0.0/22", "35.191.0.0/16"]),
    ({"gateway_implementation": "istio", "knative_ingress": "contour"},
     {"istio-system", "knative-serving", "contour-external", "contour-internal"}, []),
], ids=["envoy-gateway-kourier", "gke-standard", "istio-contour"])
def test_network_policy_admits_the_gateway_implementation(tmp_path, answers, admitted, cidrs):
    repo = render.render(tmp_path / "repo", {"catalog_models": ["qwen25-0-5b-gguf"], **answers})
    [policy] = [d for d in yaml.safe_load_all((repo / "platform" / "networkpolicy.yaml").read_text()) if d]
    peers = policy["spec"]["ingress"][0]["from"]
    names = {v for p in peers for e in (p.get("namespaceSelector") or {}).get("matchExpressions", []) for v in e["values"]}
    assert names - {"monitoring"} == admitted  # monitoring: the monitoring component, when selected
    assert sorted(p["ipBlock"]["cidr"] for p in peers if "ipBlock" in p) == cidrs
    report = lint.lint_paths([repo])
    assert report.ok, report.failures()
    # The repo tells lint where the gateway runs: drop one source from the policy and the rule says so.
    text = (repo / "platform" / "networkpolicy.yaml").read_text()
    dropped = sorted(admitted)[0] if admitted else cidrs[0]
    (repo / "platform" / "networkpolicy.yaml").write_text(
        text.replace(f"                  - {dropped}\n", "").replace(f"            cidr: {dropped}\n", "            cidr: 10.0.0.0/8\n"))
    assert {f.rule for f in lint.lint_paths([repo]).findings} == {"ns-gateway-ingress"}


# --- issue 15: each shape of "admits anyone" is caught on its own ------------------------------------------------

ADMITS_ANYONE = {
    "no from": {"ports": [{"port": 8080}]},
    "empty from": {"from": []},
    "every namespace": {"from": [{"namespaceSelector": {}}]},
    "every address": {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]},
}


@pytest.mark.parametrize("shape", sorted(ADMITS_ANYONE))
def test_an_ingress_rule_that_admits_anyone_is_flagged(tmp_path, shape):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    patch = yaml.safe_dump([{"op": "replace", "path": "/spec/ingress", "value": [ADMITS_ANYONE[shape]]}])
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "llm",
        "resources": [os.path.relpath(FIXTURES / "_base", overlay)],
        "patches": [{"target": {"kind": "NetworkPolicy", "name": "default-ingress"}, "patch": patch}],
    }))
    report = lint.lint_paths([overlay])
    assert [(f.rule, f.resource) for f in report.findings] == [("ns-network-policy", "NetworkPolicy llm/default-ingress")]
    assert "admits traffic from anywhere" in report.findings[0].message


def test_a_sops_file_with_every_value_encrypted_is_clean_and_one_plain_value_is_not(tmp_path):
    good = (FIXTURES / "secret-plaintext" / "good" / "hf-secret.sops.yaml").read_text()
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({"resources": [
        os.path.relpath(FIXTURES / "_base", folder), "hf-secret.sops.yaml"], "namespace": "llm"}))
    (folder / "hf-secret.sops.yaml").write_text(good)
    assert lint.lint_paths([folder]).ok
    (folder / "hf-secret.sops.yaml").write_text(good.replace("  HF_TOKEN: ENC[", "  PLAIN: hunter2\n  HF_TOKEN: ENC["))
    findings = lint.lint_paths([folder]).findings
    assert findings and {f.rule for f in findings} == {"secret-plaintext"}
    assert all("stringData.PLAIN in plain text" in f.message for f in findings)


# --- rule details, on a fixture's built documents (each written for a mutant that survived `make mutation`) --


def built(rule: str, which: str = "good") -> list[lint.Resource]:
    folder = FIXTURES / rule / which
    return [lint.Resource(display_path(folder), d) for d, _ in split_documents(kustomize_build(folder))]


def resource(docs: list[lint.Resource], kind: str, name: str) -> lint.Resource:
    return next(d for d in docs if d.kind == kind and d.name == name)


def predictor(env: lint.Environment, name: str) -> lint.Pod:
    return next(p for p in env.pods() if p.res.name == name and p.component == "predictor")


@pytest.mark.parametrize("model, fmt, args, settings", [
    ("tiny", "gguf", ["--ctx-size", "8192", "--cache-ram=512"], ("llamacpp", 8192, 1)),
    ("tiny", "gguf", [], None),  # --ctx-size 0: the model's own context, unknown here
    ("tiny", "ollama", [], ("ollama", 4096, 1)),  # Ollama's default context (overlays-catalog/capacity.yml)
    ("qwen", "huggingface", ["--max-model-len=1"], ("vllm", 1, 1)),  # no --tensor-parallel-size: 1
    ("qwen", "huggingface", ["--max-model-len=1", "-tp", "2"], ("vllm", 1, 2)),
    ("qwen", "huggingface", ["--max-model-len=0"], None),  # vLLM takes the model's own maximum
    ("qwen", "huggingface", [], None),
])
def test_capacity_reads_each_runtimes_settings(model, fmt, args, settings):
    docs = built("capacity")
    spec = resource(docs, "InferenceService", model).obj["spec"]["predictor"]["model"]
    spec["modelFormat"]["name"], spec["args"] = fmt, args
    env = lint.Environment(docs, lint.Settings())
    found = lint._capacity_settings(env, predictor(env, model))
    assert (found and (found.runtime, found.ctx, found.tp)) == settings


def test_capacity_findings_name_the_limit_and_the_request_to_set():
    docs = built("capacity", "bad")
    spec = resource(docs, "InferenceService", "tiny").obj["spec"]["predictor"]["model"]
    spec["resources"]["requests"]["ephemeral-storage"] = "100Mi"
    messages = sorted(f.message for f in lint.capacity_rule(lint.Environment(docs, lint.Settings())))
    assert [m.rsplit(": ", 1)[1] for m in messages] == [
        "request 1Gi", "raise the limit to 10Gi or lower the context or cache"], messages  # 9269 MiB, rounded up
    assert "requests 100 MiB of ephemeral-storage" in messages[0]


@pytest.mark.parametrize("args, flagged", [
    (["--tensor-parallel-size=4"], False),  # the good fixture's qwen has 4 GPUs
    (["--tensor-parallel-size=8"], True),  # more GPUs than the pod gets: vLLM fails to start
    (["--tensor-parallel-size=2", "--pipeline-parallel-size=2"], False),
    (["--tensor-parallel-size=2"], True),
])
def test_tensor_parallel_must_equal_the_gpus(args, flagged):
    docs = built("gpu-tensor-parallel")
    resource(docs, "InferenceService", "qwen").obj["spec"]["predictor"]["model"]["args"] = args
    found = list(lint.gpu_tensor_parallel(lint.Environment(docs, lint.Settings())))
    assert bool(found) is flagged


def test_namespaces_match_when_equal_or_unset():
    assert lint._same_ns("llm", "llm") and lint._same_ns("", "llm") and lint._same_ns("llm", "")
    assert not lint._same_ns("llm", "other")


@pytest.mark.parametrize("api_version, kind", [
    ("ai.example.com/v1", "InferenceService"),  # another group (sorts before serving.kserve.io)
    ("serving.kserve.io/v1alpha1", "InferenceGraph"),  # KServe's, another kind (sorts before InferenceService)
])
def test_only_kserves_inference_services_are_model_pods(api_version, kind):
    docs = built("capacity")
    isvc = resource(docs, "InferenceService", "qwen")
    isvc.obj.update(apiVersion=api_version, kind=kind)
    assert "qwen" not in {p.res.name for p in lint.Environment(docs, lint.Settings()).pods()}


def test_a_runtime_that_does_not_support_the_format_names_what_it_supports():
    docs = built("ref-runtime")
    resource(docs, "InferenceService", "qwen").obj["spec"]["predictor"]["model"]["modelFormat"]["name"] = "onnx"
    [finding] = lint.ref_runtime(lint.Environment(docs, lint.Settings()))
    assert "does not support model format onnx (it supports HuggingFace)" in finding.message


@pytest.mark.parametrize("expression, avoids", [
    ({"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"}, True),
    ({"key": "nvidia.com/gpu.present", "operator": "Exists"}, False),  # the opposite: GPU nodes only
    ({"key": "kubernetes.io/arch", "operator": "DoesNotExist"}, False),
])
def test_the_cpu_placement_is_the_gpu_present_label_absent(expression, avoids):
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [expression]}]}}}
    assert lint._avoids_gpus(types.SimpleNamespace(affinity=affinity)) is avoids


def test_the_openai_prefix_comes_from_the_kserve_container_only():
    docs = built("route-openai-path")
    runtime = resource(docs, "ClusterServingRuntime", "kserve-vllm").obj["spec"]
    runtime["containers"].insert(0, {"name": "sidecar", "image": "x:1",
                                     "env": [{"name": "KSERVE_OPENAI_ROUTE_PREFIX", "value": "/wrong"}]})
    env = lint.Environment(docs, lint.Settings())
    assert lint._openai_prefix(env, predictor(env, "qwen")) == ""  # the kserve-container's, not the sidecar's


def test_a_pool_reached_by_two_routes_is_reported_on_the_first():
    docs = built("route-openai-path", "bad")
    route = resource(docs, "HTTPRoute", "qwen")
    docs.append(lint.Resource(route.overlay, {**route.obj, "metadata": {**route.obj["metadata"], "name": "qwen-b"}}))
    found = list(lint.route_openai_path(lint.Environment(docs, lint.Settings())))
    assert [f.resource for f in found] == ["HTTPRoute llm/qwen"]


@pytest.mark.parametrize("priorities, differs", [
    ((1, 2), "huggingface"), ((2, 1), "huggingface"), ((2, 2), None), ((2, None), None)])
def test_one_runtime_giving_a_format_two_priorities(priorities, differs):
    spec = {"supportedModelFormats": [{"name": "huggingface", "autoSelect": True, "priority": p} for p in priorities]}
    assert lint._priority_differs(spec) == differs


def test_a_runtime_is_not_its_own_rival():
    # The same runtime in two layers is one object to the webhook (an update); under another name it collides.
    docs = built("runtime-admission")
    vllm = resource(docs, "ClusterServingRuntime", "kserve-vllm")
    twin = yaml.safe_load(yaml.safe_dump(vllm.obj))  # strings as YAML reads them, not shared with vllm's
    same = lint.Environment(docs + [lint.Resource("other-layer", twin)], lint.Settings())
    assert list(lint.runtime_admission(same)) == []
    renamed = yaml.safe_load(yaml.safe_dump(vllm.obj))
    renamed["metadata"]["name"] = "vllm-copy"
    rival = lint.Environment(docs + [lint.Resource("other-layer", renamed)], lint.Settings())
    assert [f.resource for f in lint.runtime_admission(rival)] == ["ClusterServingRuntime kserve-vllm"]


def test_an_ollama_model_downloads_even_without_a_storage_uri():
    docs = built("capacity")
    spec = resource(docs, "InferenceService", "tiny").obj["spec"]["predictor"]["model"]
    spec["modelFormat"]["name"], spec["args"] = "ollama", []  # Ollama pulls its model itself
    del spec["storageUri"], spec["resources"]["requests"]["ephemeral-storage"]
    messages = [f.message for f in lint.capacity_rule(lint.Environment(docs, lint.Settings()))]
    assert any(m.startswith("downloads 491400032 bytes to the node's disk") for m in messages), messages


def test_a_tensor_parallel_size_that_is_no_number_is_flagged():
    docs = built("gpu-tensor-parallel")
    model = resource(docs, "InferenceService", "qwen").obj["spec"]["predictor"]["model"]
    model["args"] = ["--tensor-parallel-size=auto"]
    for side in ("requests", "limits"):
        model["resources"][side]["nvidia.com/gpu"] = "1"
    found = list(lint.gpu_tensor_parallel(lint.Environment(docs, lint.Settings())))
    assert [f.rule for f in found] == ["gpu-tensor-parallel"]


def test_a_peer_that_is_no_mapping_does_not_hide_the_next():
    assert lint._admits_anyone({"from": ["junk", {"namespaceSelector": {}}]}) is True
    assert lint._admits_anyone({"from": ["junk", {"podSelector": {"matchLabels": {"a": "b"}}}]}) is False


def test_the_secrets_a_pod_needs():
    spec = {"imagePullSecrets": [{"name": "pull"}], "volumes": [
        {"name": "a", "projected": {"sources": [{"secret": {"name": "p-required"}},
                                                {"secret": {"name": "p-optional", "optional": True}},
                                                {"configMap": {"name": "cm"}}]}},
        {"name": "b", "secret": {"secretName": "v-required"}},
        {"name": "c", "secret": {"secretName": "v-optional", "optional": True}}]}
    assert lint._pod_secret_refs(types.SimpleNamespace(spec=spec, containers=[])) == [
        "pull", "p-required", "v-required"]


@pytest.mark.parametrize("image, args, vllm", [
    ("vllm/vllm-openai:v0.9.2", [], True),
    ("kserve/huggingfaceserver:v0.16.0-gpu", ["--backend=vllm"], True),
    ("kserve/huggingfaceserver:v0.16.0-gpu", [], False),  # its automatic choice is not guessed
    ("example.com/zephyr-server:1", [], False),  # sorts after vllm-openai
])
def test_vllm_is_known_by_its_backend_flag_or_its_image(image, args, vllm):
    assert lint._is_vllm(types.SimpleNamespace(image=image, args=args)) is vllm


def test_a_runtime_of_another_api_group_is_not_kserves_to_admit():
    docs = built("runtime-admission")
    other = yaml.safe_load(yaml.safe_dump(resource(docs, "ClusterServingRuntime", "kserve-vllm").obj))
    other["apiVersion"], other["metadata"]["name"] = "serving.example.com/v1alpha1", "look-alike"
    env = lint.Environment(docs + [lint.Resource("other-layer", other)], lint.Settings())
    assert list(lint.runtime_admission(env)) == []


def test_a_namespaced_runtime_is_no_rival_of_a_cluster_runtime():
    # The webhook compares runtimes of one scope: a ServingRuntime in llm beside a ClusterServingRuntime is admitted.
    docs = built("runtime-admission")
    namespaced = yaml.safe_load(yaml.safe_dump(resource(docs, "ClusterServingRuntime", "kserve-vllm").obj))
    namespaced.update(kind="ServingRuntime", metadata={"name": "ns-vllm", "namespace": "llm"})
    env = lint.Environment(docs + [lint.Resource("other-layer", namespaced)], lint.Settings())
    assert list(lint.runtime_admission(env)) == []


def test_a_runtime_of_another_api_group_is_no_pod_template():
    docs = built("capacity")
    runtime = resource(docs, "ClusterServingRuntime", "kserve-llamacpp")
    runtime.obj["apiVersion"] = "serving.zzz.io/v1alpha1"  # sorts after serving.kserve.io
    assert "kserve-llamacpp" not in {p.res.name for p in lint.Environment(docs, lint.Settings()).pods()}


def test_a_settings_file_that_is_not_yaml_names_the_parsers_first_line(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    (repo / ".servingops.yaml").write_text("lint: [\n")
    with pytest.raises(InputError) as refused:
        lint.lint_paths([repo])
    assert "not valid YAML (while parsing a flow node): fix the syntax" in str(refused.value)


def test_init_containers_are_named_as_such():
    found = lint._containers({"initContainers": [{"name": "fetch"}], "containers": [{"name": "server"}]})
    assert [c.where for c in found] == ["init container fetch", "container server"]


def test_a_query_that_does_not_select_the_pod_label_needs_no_podmonitor_label():
    docs = built("keda-scaling")
    for doc in docs:
        if doc.kind == "PodMonitor":
            doc.obj["spec"].pop("podTargetLabels", None)  # copies no pod label
    isvc = resource(docs, "InferenceService", "qwen")
    [metric] = isvc.obj["spec"]["predictor"]["autoScaling"]["metrics"]
    env = lint.Environment(docs, lint.Settings())
    assert [f.message for f in lint.RULES["keda-scaling"].check(env)] != []  # the label it selects is not copied
    metric["external"]["metric"]["query"] = 'sum(vllm:num_requests_waiting{namespace="llm"})'
    assert list(lint.RULES["keda-scaling"].check(lint.Environment(docs, lint.Settings()))) == []


def test_an_unknown_model_server_has_no_openai_prefix():
    docs = built("route-openai-path")
    runtime = resource(docs, "ClusterServingRuntime", "kserve-vllm").obj["spec"]["containers"][0]
    runtime["image"] = "example.com/custom-server:1"
    runtime["args"] = ["--backend=vllm"]
    env = lint.Environment(docs, lint.Settings())
    assert lint._openai_prefix(env, predictor(env, "qwen")) is None


def test_other_env_variables_are_no_openai_prefix():
    docs = built("route-openai-path")
    resource(docs, "ClusterServingRuntime", "kserve-vllm").obj["spec"]["containers"][0]["env"] = [
        {"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}]  # sorts after KSERVE_OPENAI_ROUTE_PREFIX
    env = lint.Environment(docs, lint.Settings())
    assert lint._openai_prefix(env, predictor(env, "qwen")) == "/openai"


def test_one_entry_point_file_for_two_clusters_is_two_environments(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo)
    apps = repo / "clusters" / "argocd" / "dev.yaml"
    docs = list(yaml.safe_load_all(apps.read_text()))
    docs[0]["spec"]["destination"]["name"] = "other-cluster"  # dev-platform
    apps.write_text(yaml.safe_dump_all(docs))
    groups = lint.environment_groups(repo.resolve())
    assert sorted(sorted(p.name for p in g) for g in groups) == [["dev", "models"], ["platform"]]


def test_a_model_too_big_for_its_gpu_names_the_gpu():
    docs = built("capacity")
    isvc = resource(docs, "InferenceService", "qwen").obj
    isvc.setdefault("metadata", {})["annotations"] = {capacity.ANNOTATION: json.dumps(
        {"parameters": 70_000_000_000, "layers": 80, "kvHeads": 8, "headDim": 128, "bytesPerWeight": 2,
         "downloadBytes": 1})}
    isvc["spec"]["predictor"]["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}
    isvc["spec"]["predictor"]["model"]["args"] = ["--max-model-len=8192"]
    messages = [f.message for f in lint.capacity_rule(lint.Environment(docs, lint.Settings()))]
    assert any(" MiB per GPU " in m and "its GPU offers" in m for m in messages), messages


def test_an_inference_service_without_a_model_has_no_capacity_to_check():
    docs = built("capacity")
    predictor_spec = resource(docs, "InferenceService", "tiny").obj["spec"]["predictor"]
    del predictor_spec["model"]
    predictor_spec["containers"] = [{"name": "kserve-container", "image": "example.com/server:1"}]
    assert list(lint.capacity_rule(lint.Environment(docs, lint.Settings()))) == []


def test_a_pool_over_a_model_whose_runtime_is_missing_does_not_crash():
    docs = built("pool-non-vllm")
    resource(docs, "InferenceService", "qwen").obj["spec"]["predictor"]["model"]["runtime"] = "kserve-nope"
    assert list(lint.RULES["pool-non-vllm"].check(lint.Environment(docs, lint.Settings()))) == []


def test_keda_rules_check_every_model_whatever_comes_first():
    docs = built("keda-scaling", "bad")
    expected = [f.message for f in lint.RULES["keda-scaling"].check(lint.Environment(docs, lint.Settings()))]
    plain = yaml.safe_load(yaml.safe_dump(resource(docs, "InferenceService", "tiny").obj))
    plain["metadata"] = {"name": "plain", "namespace": "llm"}  # not scaled by KEDA, and first
    found = [f.message for f in lint.RULES["keda-scaling"].check(
        lint.Environment([lint.Resource(docs[0].overlay, plain)] + docs, lint.Settings()))]
    assert found == expected and found


def flux_health_findings(checks: list[dict], **spec) -> list[str]:
    """flux-health-checks on the good fixture's objects, synced by one Flux Kustomization with these checks."""
    docs = [d for d in built("flux-health-checks") if d.kind != "Kustomization"]
    flux = lint.Resource("flux", {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "models", "namespace": "flux-system"}, "spec": {**spec, "healthChecks": checks}})
    return [f.message for f in lint.RULES["flux-health-checks"].check(lint.Environment(docs + [flux], lint.Settings()))]


def check(kind: str, name: str, namespace: str | None = "llm", api: str = "apps/v1") -> dict:
    return {"apiVersion": api, "kind": kind, "name": name, **({"namespace": namespace} if namespace else {})}


MODELS = [check("Deployment", "qwen-predictor"), check("Deployment", "tiny-predictor")]


def test_flux_health_checks_follow_the_target_namespace():
    # spec.targetNamespace moves every namespaced object Flux applies: the model's workload is checked there.
    moved = [check("Deployment", c["name"], "serving") for c in MODELS] + [check("Deployment", "qwen-epp", "serving")]
    assert flux_health_findings(moved, targetNamespace="serving") == []
    stale = flux_health_findings(MODELS + [check("Deployment", "qwen-epp")], targetNamespace="serving")
    assert len(stale) == 5, stale  # both models unchecked, and three entries where the build put them, not Flux
    # a cluster-scoped object stays cluster-scoped
    runtime = check("ClusterServingRuntime", "kserve-vllm", None, "serving.kserve.io/v1alpha1")
    assert flux_health_findings(moved + [runtime], targetNamespace="serving") == []


@pytest.mark.parametrize("entry, phrase", [
    (check("Deployment", "qwen-epp", None), "without a namespace, and Flux does not default it"),
    (check("Deployment", "gone-predictor"), "which nothing this Kustomization applies creates"),
    (check("Deployment", "qwen-epp", api="extensions/v1beta1"), "which nothing this Kustomization applies creates"),
    (check("Deployment", "qwen-transformer"), None),  # KServe creates it for the model: not stale
    (check("HorizontalPodAutoscaler", "tiny-predictor", api="autoscaling/v2"), None),
])
def test_flux_health_check_entries(entry, phrase):
    found = flux_health_findings(MODELS + [entry])
    assert (found == []) if phrase is None else (len(found) == 1 and phrase in found[0]), found


def test_a_core_service_does_not_health_check_a_knative_model():
    # Knative's own route Service is named <model>-predictor too, and is there before the model serves.
    docs_mode = {"serving.kserve.io/deploymentMode": "Knative"}
    found = flux_health_findings([check("Service", "qwen-predictor", api="v1"), check("Service", "tiny-predictor", api="v1")])
    assert len(found) == 2, found  # without a deployment mode annotation: a Deployment or a Knative Service
    docs = [d for d in built("flux-health-checks") if d.kind != "Kustomization"]
    for doc in docs:
        if doc.kind == "InferenceService":
            doc.obj["metadata"].setdefault("annotations", {}).update(docs_mode)
    flux = lint.Resource("flux", {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "models", "namespace": "flux-system"},
        "spec": {"healthChecks": [check("Service", f"{m}-predictor", api="v1") for m in ("qwen", "tiny")]}})
    messages = [f.message for f in lint.RULES["flux-health-checks"].check(lint.Environment(docs + [flux], lint.Settings()))]
    assert len(messages) == 2 and all("apiVersion: serving.knative.dev/v1, kind: Service" in m for m in messages), messages
