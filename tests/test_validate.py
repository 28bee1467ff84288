"""The validation pipeline end to end: real kustomize, real kubeconform, real CRDs, no network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from conftest import write
from servingops import releases
from servingops import validate as validate_module
from servingops.errors import CommandError
from servingops.lint import Finding, LintReport
from servingops.validate import (ERROR, INVALID, VALID, Report, ResourceResult, TargetResult, Verdict, _combine,
                                 _namespaces, _verdict, server_crd_sources, server_dry_run, split_documents,
                                 validate)
from servingops.tools import PROJECT_ROOT

KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: llm-platform
resources:
{resources}
"""

RUNTIME = """\
apiVersion: serving.kserve.io/v1alpha1
kind: ClusterServingRuntime
metadata:
  name: kserve-vllm
spec:
  supportedModelFormats:
    - name: huggingface
      version: "1"
      autoSelect: true
  protocolVersions: [v2, v1]
  containers:
    - name: kserve-container
      image: kserve/huggingfaceserver:v0.16.0-gpu
      args: ["--model_name={{.Name}}", "--backend=vllm"]
      resources:
        requests: {cpu: "1", memory: 2Gi}
        limits: {cpu: "1", memory: 2Gi}
"""

ISVC = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: qwen25-1-5b
spec:
  predictor:
    model:
      modelFormat: {name: huggingface}
      runtime: kserve-vllm
      storageUri: hf://Qwen/Qwen2.5-1.5B-Instruct
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: nginx:1.27
"""


def overlay(folder: Path, **manifests: str) -> Path:
    resources = "\n".join(f"  - {name}.yaml" for name in manifests)
    return write(folder, {"kustomization.yaml": KUSTOMIZATION.format(resources=resources)}
                 | {f"{name}.yaml": text for name, text in manifests.items()})


def check(paths):
    """Schema validation alone: these tests are about kubeconform and the store, not the lint rules."""
    return validate(paths, lint=False)


def statuses(report):
    return {(r.kind, r.name): (r.status, r.message) for r in report.resources}


def test_valid_kserve_objects_pass(tmp_path, store):
    report = check([overlay(tmp_path, runtime=RUNTIME, isvc=ISVC)])
    assert report.ok, report.failures()
    assert [t.status for t in report.targets] == [VALID] and report.failures() == []
    assert report.summary() == "2 resources valid, 0 invalid, 0 errors in 1 overlay"


def test_inference_service_typo_fails(tmp_path, store):
    report = check([overlay(tmp_path, isvc=ISVC.replace("storageUri", "storageUrl"))])
    status, message = statuses(report)[("InferenceService", "qwen25-1-5b")]
    assert status == INVALID and "storageUrl" in message and "/spec/predictor/model" in message
    assert not report.ok
    assert [t.status for t in report.targets] == [INVALID]  # the overlay is as bad as its worst resource
    [line] = report.failures()
    assert line.startswith(f"{report.targets[0].target}: InferenceService llm-platform/qwen25-1-5b "
                           "(serving.kserve.io/v1beta1): "), line


def test_deployment_with_unknown_field_fails(tmp_path, store):
    report = check([overlay(tmp_path, web=DEPLOYMENT + "          bogus: true\n")])
    status, message = statuses(report)[("Deployment", "web")]
    assert status == INVALID and "'bogus' not allowed" in message


def test_kind_without_schema_is_an_error_not_a_skip(tmp_path, store):
    unknown = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 1}\n"
    report = check([overlay(tmp_path, widget=unknown, web=DEPLOYMENT)])
    status, message = statuses(report)[("Widget", "w")]
    assert status == ERROR and "no schema for example.com/v1 Widget" in message and "--crds" in message
    assert statuses(report)[("Deployment", "web")][0] == VALID
    assert report.summary() == "1 resource valid, 0 invalid, 1 error in 1 overlay"


def test_broken_kustomization_fails_with_kustomizes_message(tmp_path, store):
    write(tmp_path, {"kustomization.yaml": KUSTOMIZATION.format(resources="  - missing.yaml")})
    report = check([tmp_path])
    [target] = report.targets
    assert target.status == ERROR and "kustomize" in target.message and "missing.yaml" in target.message
    assert target.resources == 0
    assert not report.ok and report.errors == 1


def test_each_overlay_is_judged_by_its_own_resources(tmp_path, store):
    # One bad overlay between two good ones (the paths sort on either side of it).
    for name in ("a-good", "c-good"):
        overlay(tmp_path / name, isvc=ISVC)
    overlay(tmp_path / "b-bad", isvc=ISVC.replace("storageUri", "storageUrl"))
    report = check([tmp_path / "a-good", tmp_path / "b-bad", tmp_path / "c-good"])
    assert {Path(t.target).name: t.status for t in report.targets} == {
        "a-good": VALID, "b-bad": INVALID, "c-good": VALID}


def test_a_file_that_is_not_yaml_is_an_error_of_its_own(tmp_path, store):
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: ConfigMap\nmetadata: {name: [\n")
    [target] = check([broken]).targets
    assert target.status == ERROR and target.message.startswith("not valid YAML: "), target


def test_search_finds_every_overlay_and_skips_components(tmp_path, store):
    overlay(tmp_path / "envs" / "a", isvc=ISVC)
    overlay(tmp_path / "envs" / "b", web=DEPLOYMENT)
    write(tmp_path / "components" / "gpu", {
        "kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"})
    report = check([tmp_path])
    assert sorted(Path(t.target).name for t in report.targets) == ["a", "b"]
    assert report.ok


def cli(*args: str, env: dict | None = None, wrapper: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*wrapper, sys.executable, "-m", "servingops", *args],
        capture_output=True, text=True, cwd=PROJECT_ROOT, env={**os.environ, **(env or {})}, timeout=300,
    )


def test_cli_prints_one_line_per_failure_and_the_summary(tmp_path, store):
    overlay(tmp_path / "good", isvc=ISVC)
    overlay(tmp_path / "bad", web=DEPLOYMENT.replace("containers:", "containerz:"))
    result = cli("validate", "--no-lint", str(tmp_path))
    lines = result.stdout.splitlines()
    assert result.returncode == 1
    assert lines[-1] == "1 resource valid, 1 invalid, 0 errors in 2 overlays"
    assert len(lines) == 2 and "Deployment llm-platform/web" in lines[0] and "containerz" in lines[0]
    as_json = json.loads(cli("validate", "--no-lint", str(tmp_path / "good"), "--output", "json").stdout)
    assert as_json["summary"] == {"valid": 1, "invalid": 0, "errors": 0, "overlays": 1}


def network_blocker() -> tuple[str, ...]:
    """An empty network namespace when the kernel allows one; the closed-port proxies apply in any case."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return (unshare, "-rn")
    return ()


def test_validation_needs_no_network(tmp_path, store):
    # No route out (network namespace) and every proxy pointing at a closed port: a schema fetch would fail,
    # which kubeconform reports as "could not find schema" -> an error here. All valid proves nothing is fetched.
    overlay(tmp_path, runtime=RUNTIME, isvc=ISVC, web=DEPLOYMENT)
    closed = {k: "http://127.0.0.1:9" for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    wrapper = network_blocker()
    result = cli("validate", "--no-lint", str(tmp_path), env=closed, wrapper=wrapper)
    mode = "network namespace + closed proxies" if wrapper else "closed proxies only (no network namespace here)"
    assert result.returncode == 0, f"[{mode}] " + result.stdout + result.stderr
    assert result.stdout.strip().endswith("3 resources valid, 0 invalid, 0 errors in 1 overlay")


def test_validate_runs_lint_unless_told_not_to(tmp_path, store):
    # Schema-valid, but a vLLM model without a GPU limit, a runtime nobody defines, no NetworkPolicy, ...
    overlay(tmp_path, isvc=ISVC)
    with_lint = validate([tmp_path])
    assert with_lint.count("valid") == 1 and with_lint.lint is not None and not with_lint.lint.ok
    assert not with_lint.ok and "lint:" in with_lint.summary()
    assert any("[ref-runtime]" in line for line in with_lint.failures())
    without = validate([tmp_path], lint=False)
    assert without.ok and without.lint is None
    result = cli("validate", str(tmp_path))
    assert result.returncode == 1 and "[ref-runtime]" in result.stdout


def test_documents_split_where_the_yaml_parser_splits_them():
    text = "kind: A\n---\nkind: B\ndata:\n  script: |\n    echo one\n    ---\n    echo two\n---\n# only a comment\n"
    docs = split_documents(text)
    assert [d["kind"] for d, _ in docs] == ["A", "B"]
    assert "---\n    echo two" in docs[1][1] and docs[1][0]["data"]["script"].endswith("---\necho two\n")


def test_a_schema_that_needs_the_network_fails_loudly(tmp_path):
    # What the offline guarantee rests on: when a schema would have to be fetched (here a remote $ref), the
    # closed-proxy fetch fails, kubeconform cannot compile it, and the resource is an error, never skipped.
    from servingops.schemas import Store
    from servingops.validate import kubeconform_verdicts

    (tmp_path / "example.com").mkdir()
    (tmp_path / "example.com" / "widget_v1.json").write_text('{"$ref": "https://schemas.example.com/widget.json"}')
    store = Store(tmp_path, "1.33.0", 1, rebuilt=False)
    [verdict] = kubeconform_verdicts(["apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"], store)
    assert verdict.status == ERROR and "no schema for example.com/v1 Widget" in verdict.message


def test_plain_scalars_read_as_kubernetes_reads_them():
    # kustomize writes `<<` and `=` unquoted; PyYAML's defaults would make a merge key / value tag of them.
    [(doc, _)] = split_documents("args:\n- <<\n- =\n- 0x_\n- 0x1F\nk: <<\n")
    assert doc == {"args": ["<<", "=", "0x_", 31], "k": "<<"}


def test_the_servers_crds_come_from_the_option_the_environment_or_the_release(tmp_path, monkeypatch):
    monkeypatch.delenv("SERVINGOPS_CRDS", raising=False)
    assert server_crd_sources(tmp_path, [tmp_path / "crds"]) == ("--crds", [tmp_path / "crds"])
    version = releases.default_version()
    assert server_crd_sources(tmp_path, None) == (f"KServe {version}", releases.crd_files(version))
    monkeypatch.setenv("SERVINGOPS_CRDS", str(tmp_path))
    assert server_crd_sources(tmp_path, None) == ("$SERVINGOPS_CRDS", [tmp_path])


@pytest.mark.parametrize("schema, server, combined", [
    ((VALID, ""), (VALID, ""), (VALID, "")),
    ((INVALID, "bad field"), (VALID, ""), (INVALID, "bad field")),  # kubeconform's refusal stands
    ((VALID, ""), (INVALID, "denied"), (INVALID, "kube-apiserver: denied")),  # the server's refusal shows
    ((VALID, ""), (ERROR, "timeout"), (ERROR, "kube-apiserver: timeout")),
    ((INVALID, "bad field"), (INVALID, "denied"), (INVALID, "bad field; kube-apiserver: denied")),
])
def test_the_server_verdict_joins_the_schema_verdict(schema, server, combined):
    assert _combine(Verdict(*schema), Verdict(*server)) == Verdict(*combined)


def test_the_namespaces_a_dry_run_needs(tmp_path):
    # Created for real before the dry-run: Namespaces themselves, and the namespace of each namespaced object.
    cluster_scoped = {"Namespace", "ClusterRole"}
    server = types.SimpleNamespace(resource_for=lambda obj: types.SimpleNamespace(
        namespaced=obj["kind"] not in cluster_scoped) if obj["kind"] != "Unknown" else None)
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "llm"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "reader"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "apps"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "b"}},
        {"apiVersion": "example.com/v1", "kind": "Unknown", "metadata": {"name": "c", "namespace": "nowhere"}},
    ]
    assert _namespaces(server, objects) == {"llm", "apps", "default"}


def test_kubeconforms_entries_become_verdicts(tmp_path):
    store = types.SimpleNamespace(path=tmp_path)
    assert _verdict({"status": "statusValid"}, store) == Verdict(VALID)
    # kubeconform's msg holds the innermost causes after "' - ": those, on one line, are the message.
    invalid = {"status": "statusInvalid",
               "msg": "problem validating schema. Check JSON formatting: jsonschema: '/spec' does not validate with "
                      "'file:///s.json#/properties/spec' - at '/spec/x':\n  additional properties 'x' not allowed"}
    assert _verdict(invalid, store) == Verdict(INVALID, "at '/spec/x': additional properties 'x' not allowed")
    plain = {"status": "statusInvalid", "msg": "missing 'kind' key"}
    assert _verdict(plain, store) == Verdict(INVALID, "missing 'kind' key")
    assert _verdict({"status": "statusError", "msg": "could not find schema for Widget", "version": "example.com/v1",
                     "kind": "Widget"}, store).message.startswith(f"no schema for example.com/v1 Widget in {tmp_path}")
    assert _verdict({"status": "statusError", "msg": "error while parsing"}, store) == Verdict(ERROR,
                                                                                             "error while parsing")


def test_the_servers_answers_become_verdicts():
    # accepted -> valid; refused with an HTTP code -> invalid; never sent (code 0) -> an error. Each object once.
    outcomes = {"ok": (True, 200, ""), "bad": (False, 422, "spec.x: unknown field"), "none": (False, 0, "no API")}
    sent = []

    def dry_run(obj):
        sent.append(obj["metadata"]["name"])
        accepted, code, message = outcomes[obj["metadata"]["name"]]
        return types.SimpleNamespace(accepted=accepted, code=code, message=message)

    server = types.SimpleNamespace(resource_for=lambda obj: None, ensure_namespace=lambda name: None, dry_run=dry_run)
    objects = [{"kind": "ConfigMap", "metadata": {"name": n}} for n in ("ok", "bad", "none", "ok")]
    assert server_dry_run(server, objects, jobs=1) == [
        Verdict(VALID), Verdict(INVALID, "spec.x: unknown field"), Verdict(ERROR, "no API"), Verdict(VALID)]
    assert sorted(sent) == ["bad", "none", "ok"]


def test_failures_list_each_problem_once():
    broken, fine = "envs/broken", "envs/fine"
    report = Report(
        targets=[TargetResult(broken, ERROR, message="kustomize build failed"), TargetResult(fine, INVALID)],
        resources=[ResourceResult(fine, "v1", "ConfigMap", "llm", "a", INVALID, "bad field"),
                   ResourceResult(fine, "v1", "ConfigMap", "llm", "b", VALID),
                   ResourceResult(fine, "v1", "Secret", "llm", "c", ERROR, "no schema")],
        lint=LintReport(findings=[Finding(broken, "kustomization", "build", "does not build"),
                                  Finding(fine, "kustomization", "build", "does not build either"),
                                  Finding(broken, "InferenceService llm/q", "ref-runtime", "no runtime")]))
    assert report.failures() == [
        f"{broken}: kustomize build failed",
        f"{fine}: ConfigMap llm/a (v1): bad field",
        f"{fine}: Secret llm/c (v1): no schema",
        # lint's build finding for the overlay validate already reported is left out; the others stay
        Finding(fine, "kustomization", "build", "does not build either").line(),
        Finding(broken, "InferenceService llm/q", "ref-runtime", "no runtime").line(),
    ]
    assert (report.errors, report.count(INVALID), report.ok) == (2, 1, False)  # the overlay's and c's


def test_kubeconform_without_a_json_report_is_an_error(tmp_path, monkeypatch):
    fake = tmp_path / "kubeconform"
    fake.write_text("#!/bin/sh\necho 'panic: out of memory' >&2\necho not json\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(validate_module, "tool_path", lambda name: fake)
    store = types.SimpleNamespace(kubernetes_version="1.34.0", location=str(tmp_path), path=tmp_path)
    with pytest.raises(CommandError, match=r"kubeconform printed no JSON report \(exit 3\): .*panic: out of memory"):
        validate_module.kubeconform_verdicts(["kind: ConfigMap\n"], store)


def test_the_servers_verdicts_join_each_resources(tmp_path, store, monkeypatch):
    # validate(server=True) with the kube-apiserver replaced by its verdicts (tests/test_apiserver.py runs a real one).
    asked = []

    def fake_server(objects, sources, *, jobs=None):
        asked.append(sorted(o["kind"] for o in objects))
        return [Verdict(INVALID, "denied") if o["kind"] == "InferenceService" else Verdict(VALID) for o in objects]

    monkeypatch.setattr(validate_module, "server_verdicts", fake_server)
    report = validate([overlay(tmp_path, runtime=RUNTIME, isvc=ISVC)], lint=False, server=True)
    assert asked == [["ClusterServingRuntime", "InferenceService"]]
    assert statuses(report) == {("ClusterServingRuntime", "kserve-vllm"): (VALID, ""),
                                ("InferenceService", "qwen25-1-5b"): (INVALID, "kube-apiserver: denied")}
    assert report.server.startswith("kube-apiserver v")
