"""`servingops validate --server`: a real kube-apiserver (tools/kube, built once into .tools) started offline.

Every test here runs the real binary with the real pinned CRDs (../shared/crds). A missing binary is an error
(controlplane.install builds it, or says how to get it), never a skip. Marked slow: `make test` runs them.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from servingops import apiserver, controlplane, releases, render, schemas
from conftest import child_pids, terminal_sigint
from servingops.tools import PROJECT_ROOT
from servingops.validate import ERROR, INVALID, VALID, kustomize_build, server_crd_sources, validate

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("kube-apiserver")]
EXAMPLES = PROJECT_ROOT / "examples"
SHARED_CRDS = schemas.shared_crds_dir()


@pytest.fixture(scope="module")
def plane() -> controlplane.ControlPlane:
    return controlplane.install(log=print)


@pytest.fixture(scope="module")
def pool_repo(tmp_path_factory) -> Path:
    """The seed's InferencePool example for KServe v0.20 (InferencePool inference.networking.k8s.io/v1), generated:
    its built gpu/models layer is where faults get planted, in overlays inside the repo (same KServe release)."""
    data = yaml.safe_load((EXAMPLES / "inference-pool.yml").read_text()) | {"kserve_version": "v0.20"}
    return render.render(tmp_path_factory.mktemp("pool") / "repo", data)


def kinds(docs: list[dict], kind: str) -> dict:
    return next(d for d in docs if d["kind"] == kind)


def write_overlay(folder: Path, docs: dict[str, dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    resources = "".join(f"  - {name}.yaml\n" for name in docs)
    (folder / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n" + resources
    )
    return folder


def planted_faults(pool_repo: Path) -> dict[str, dict]:
    """Generated objects, each with one fault that kubeconform's schemas cannot see."""
    built = [d for d in yaml.safe_load_all(kustomize_build(pool_repo / "environments" / "gpu" / "models")) if d]
    pool, route, isvc = kinds(built, "InferencePool"), kinds(built, "HTTPRoute"), kinds(built, "InferenceService")
    faults = {"pool": copy.deepcopy(pool), "route": copy.deepcopy(route), "isvc": copy.deepcopy(isvc)}
    # CEL (x-kubernetes-validations) on InferencePool.spec.targetPorts: "port number must be unique"
    port = pool["spec"]["targetPorts"][0]
    faults["pool"]["spec"]["targetPorts"] = [dict(port), dict(port)]
    # CEL on HTTPRoute path matches: a PathPrefix must start with '/'
    faults["route"]["spec"]["rules"][0]["matches"][0]["path"]["value"] = "v1/completions"
    # An unknown field where the CRD declares an object without properties: kubeconform lets anything in;
    # a strict create refuses it (server-side apply alone would silently drop it).
    faults["isvc"]["spec"]["predictor"]["volumes"] = [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
        "metadata": {"labelz": {"team": "ml"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }}}]
    # A wrong enum on a built-in kind: Kubernetes' published schemas carry no enum for Service.spec.type.
    faults["service"] = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "model-gateway", "namespace": pool["metadata"]["namespace"]},
        "spec": {"type": "LoadBalancers", "selector": {"app": "x"}, "ports": [{"port": 80}]},
    }
    return faults


def by_kind(report) -> dict[str, tuple[str, str]]:
    return {r.kind: (r.status, r.message) for r in report.resources}


def test_faults_kubeconform_accepts_are_refused_by_the_server_in_its_own_words(plane, pool_repo, tmp_path):
    overlay = write_overlay(pool_repo / "faulty", planted_faults(pool_repo))
    schema_only = validate([overlay], lint=False)
    assert schema_only.ok, schema_only.failures()  # kubeconform: all four pass

    report = validate([overlay], lint=False, server=True)
    found = by_kind(report)
    assert found["InferencePool"][0] == INVALID and "port number must be unique" in found["InferencePool"][1]
    assert found["HTTPRoute"][0] == INVALID
    assert "value must be an absolute path and start with '/'" in found["HTTPRoute"][1]
    assert found["InferenceService"][0] == INVALID
    assert 'unknown field "spec.predictor.volumes[0].ephemeral.volumeClaimTemplate.metadata.labelz"' \
        in found["InferenceService"][1]
    assert found["Service"][0] == INVALID and 'Unsupported value: "LoadBalancers"' in found["Service"][1]
    assert not report.ok and report.summary() == (
        f"0 resources valid, 4 invalid, 0 errors in 1 overlay (kubeconform and kube-apiserver {controlplane.pin().version} dry-run)")
    assert all(line.count("kube-apiserver: ") == 1 for line in report.failures())


def test_the_unplanted_objects_pass_and_a_kind_without_crd_is_an_error(plane, pool_repo, tmp_path):
    built = [d for d in yaml.safe_load_all(kustomize_build(pool_repo / "environments" / "gpu" / "models")) if d]
    stray = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "llm-platform"}}
    docs = {f"doc{n}": doc for n, doc in enumerate(built)}
    report = validate([write_overlay(pool_repo / "unplanted", docs)], lint=False, server=True)
    assert report.ok, report.failures()
    # kubeconform has no schema for it either; the server check must not turn that into a pass.
    report = validate([write_overlay(tmp_path / "stray", {"w": stray})], lint=False, server=True)
    assert [r.status for r in report.resources] == [ERROR]
    assert "the server has no API for example.com/v1 Widget" in report.resources[0].message


def test_default_repo_and_every_example_pass_on_the_server(plane, tmp_path):
    repos = [render.render(tmp_path / "default")]
    for example in sorted(EXAMPLES.glob("*.yml")):
        repos.append(render.render(tmp_path / example.stem, yaml.safe_load(example.read_text())))
    report = validate(repos, server=True)
    assert report.ok, "\n".join(report.failures())
    assert report.server == f"kube-apiserver {controlplane.pin().version}"
    assert report.count(VALID) > 100 and len(report.targets) >= len(repos)


# --- lifecycle ---------------------------------------------------------------------------------------------

SMALL_CRDS = [
    SHARED_CRDS / "inference.networking.k8s.io" / "inference.networking.k8s.io_inferencepools.yaml",
    SHARED_CRDS / "gateway.networking.k8s.io" / "gateway.networking.k8s.io_httproutes.yaml",
]


def test_api_serves_crds_applies_for_real_and_a_snapshot_skips_the_install(plane, tmp_path, monkeypatch):
    monkeypatch.setattr(apiserver, "SNAPSHOT_ROOT", tmp_path / "snapshots")
    messages: list[str] = []
    pool = {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
            "metadata": {"name": "p", "namespace": "team"},
            "spec": {"selector": {"matchLabels": {"app": "m"}}, "targetPorts": [{"number": 8000}],
                     "endpointPickerRef": {"name": "epp", "port": {"number": 9002}}}}
    with apiserver.start(SMALL_CRDS, plane=plane, log=messages.append) as server:
        status, version = server.request("GET", "/version")
        assert status == 200 and version["gitVersion"] == controlplane.pin().version
        assert server.kubeconfig.is_file() and server.token in server.kubeconfig.read_text()
        server.ensure_namespace("team")
        assert server.apply(pool, dry_run=False).accepted
        status, stored = server.request("GET", "/apis/inference.networking.k8s.io/v1/namespaces/team/inferencepools/p")
        assert status == 200 and stored["spec"]["targetPorts"] == [{"number": 8000}]
        run_dir = server.run_dir
    assert not run_dir.exists()
    assert len(messages) == 1 and "2 CRDs installed" in messages[0]
    snapshots = list((tmp_path / "snapshots").glob("*/etcd"))
    assert len(snapshots) == 1

    with apiserver.start(SMALL_CRDS, plane=plane, log=messages.append) as server:
        assert ("inference.networking.k8s.io/v1", "InferencePool") in server.resources()
        # The snapshot holds the CRDs only: what the first server applied is gone.
        status, _ = server.request("GET", "/apis/inference.networking.k8s.io/v1/namespaces/team/inferencepools/p")
        assert status == 404
    assert len(messages) == 1  # no second install


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_validate_and_wait_for_server(path: Path) -> tuple[subprocess.Popen, set[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "servingops", "validate", "--server", "--no-lint", str(path)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=terminal_sigint,
    )
    deadline = time.monotonic() + 600
    # the server, not `kube-apiserver --version` (run first to check the binary)
    while not (servers := {p for p in child_pids(proc.pid) if "--cert-dir=" in _cmdline(p)}):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "kube-apiserver never started"
        time.sleep(0.2)
    time.sleep(1)
    return proc, servers


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_ctrl_c_stops_the_server_and_leaves_nothing_behind(plane, pool_repo):
    proc, servers = start_validate_and_wait_for_server(pool_repo / "environments" / "gpu" / "models")
    run_dirs = {part.split("=", 1)[1] for p in servers for part in _cmdline(p).split() if part.startswith("--cert-dir=")}
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert not any(alive(pid) for pid in servers)
    assert run_dirs and not any(Path(d).exists() for d in run_dirs)


def test_a_killed_caller_takes_its_server_down(plane, pool_repo):
    proc, servers = start_validate_and_wait_for_server(pool_repo / "environments" / "gpu" / "models")
    proc.kill()  # no cleanup code runs: the kernel's parent-death signal must end the server
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in servers)


def test_missing_binary_and_no_go_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SERVINGOPS_TOOLS_DIR", str(tmp_path / "tools" / "bin"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    with pytest.raises(controlplane.ToolError) as error:
        controlplane.install(log=lambda _: None)
    message = str(error.value)
    assert "kube-apiserver v1.34.4 with etcd v3.6.4 is missing" in message
    assert "`go` is not on PATH" in message and "KUBEBUILDER_ASSETS" in message


def test_envtest_binaries_are_reused_when_their_versions_match(monkeypatch, tmp_path):
    assets = tmp_path / "assets"
    assets.mkdir()
    for name, says in (("kube-apiserver", "Kubernetes v1.34.4"), ("etcd", "etcd Version: 3.6.4")):
        (assets / name).write_text(f"#!/bin/sh\necho '{says}'\n")
        (assets / name).chmod(0o755)
    monkeypatch.setenv("SERVINGOPS_TOOLS_DIR", str(tmp_path / "tools" / "bin"))
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    found = controlplane.find()
    assert found is not None and found.etcd == assets / "etcd" and not found.embedded_etcd
    assert controlplane.install(log=lambda _: None) == found  # reused: nothing built
    (assets / "etcd").write_text("#!/bin/sh\necho 'etcd Version: 3.5.21'\n")
    os.utime(assets / "etcd", ns=(1, 1))  # a different file: the version is read again
    tried: list[str] = []
    assert controlplane.find(tried) is None
    assert any("etcd v3.5.21" in reason for reason in tried)


def test_the_server_gets_the_crd_set_of_the_repositorys_kserve_release(tmp_path):
    shared = PROJECT_ROOT.parent / "shared"
    v016 = [p.relative_to(shared).as_posix() for p in releases.crd_files("v0.16")]
    v020 = [p.relative_to(shared).as_posix() for p in releases.crd_files("v0.20")]
    assert "kserve/v0.16.0/crds/serving.kserve.io_inferenceservices.yaml" in v016
    assert "kserve/v0.20.0/crds/serving.kserve.io_inferenceservices.yaml" in v020
    assert not any(p.startswith("crds/serving.kserve.io/") for p in v016 + v020)  # only the release's own
    pools = "crds/inference.networking.k8s.io/inference.networking.k8s.io_inferencepools.yaml"
    assert pools in v020 and pools not in v016
    repo = render.render(tmp_path / "repo", {"kserve_version": "v0.16"})
    label, sources = server_crd_sources(repo / "environments", None)
    assert label == "KServe v0.16" and sources == releases.crd_files("v0.16")
