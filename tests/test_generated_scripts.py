"""The generated repo's `make secret` (scripts/secret): the Secret it builds, and that it refuses without values."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from servingops import render

ANSWERS = {"catalog_models": ["llama-70b", "qwen-7b-gguf"], "gitops_engine": "flux"}


@pytest.fixture(scope="module", params=["sealed-secrets", "sops"])
def repo(request, tmp_path_factory) -> Path:
    provider = request.param
    recipient = {"sops_age_recipients": "age1" + "q" * 58} if provider == "sops" else {}
    return render.render(tmp_path_factory.mktemp(provider) / "repo",
                         {**ANSWERS, "secrets_provider": provider, **recipient})


def fake_tool(folder: Path, name: str) -> Path:
    """A stand-in for kubeseal/sops: keeps what it was given (to inspect) and writes a marker as its output."""
    folder.mkdir(exist_ok=True)
    script = folder / name
    script.write_text(f"#!/bin/sh\necho \"$*\" > {folder}/{name}.args\ncat > {folder}/{name}.stdin\n"
                      f"echo encrypted-by-{name}\n")
    script.chmod(0o755)
    return folder


def test_make_secret_pipes_a_complete_secret_into_the_encrypter(repo, tmp_path):
    tool = "kubeseal" if (repo / "secrets" / "gpu" / "README.md").read_text().count("kubeseal") else "sops"
    bin_dir = fake_tool(tmp_path / "bin", tool)
    if tool == "kubeseal":
        (repo / "secrets" / "cpu" / "sealed-secrets.pem").write_text("cpu cluster certificate\n")
    value = 'ab"c\\d e$f'  # characters that break naive quoting
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "AWS_ACCESS_KEY_ID": "id-" + value,
           "AWS_SECRET_ACCESS_KEY": "key-" + value}
    result = subprocess.run(["make", "secret", "ENV=cpu", "NAME=s3-model-creds"], cwd=repo, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    suffix = "sealedsecret" if tool == "kubeseal" else "sops"
    written = repo / "secrets" / "cpu" / f"s3-model-creds.{suffix}.yaml"
    assert written.read_text().strip() == f"encrypted-by-{tool}"
    secret = yaml.safe_load((bin_dir / f"{tool}.stdin").read_text())
    assert secret["metadata"]["name"] == "s3-model-creds" and secret["metadata"]["namespace"] == "llm-platform"
    assert secret["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == "s3.amazonaws.com"
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"AWS_ACCESS_KEY_ID": "id-" + value, "AWS_SECRET_ACCESS_KEY": "key-" + value}


def test_make_secret_refuses_without_the_value(repo, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env["PATH"] = f"{fake_tool(tmp_path / 'bin', 'kubeseal')}:{fake_tool(tmp_path / 'bin', 'sops')}:{env['PATH']}"
    result = subprocess.run(["make", "secret", "ENV=gpu", "NAME=hf-secret"], cwd=repo, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "set HF_TOKEN in your environment first" in result.stderr
    assert not list((repo / "secrets" / "gpu").glob("hf-secret.*"))


def test_sops_secret_needs_a_recipient(tmp_path):
    repo = render.render(tmp_path / "repo", {**ANSWERS, "secrets_provider": "sops"})
    env = {**os.environ, "PATH": f"{fake_tool(tmp_path / 'bin', 'sops')}:{os.environ['PATH']}", "HF_TOKEN": "x" * 12}
    result = subprocess.run(["make", "secret", "ENV=gpu", "NAME=hf-secret"], cwd=repo, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "age public key" in result.stderr


def test_sealed_secrets_seal_each_environment_with_its_own_certificate(tmp_path):
    """(i) Never the current kube context's controller: secrets/<env>/sealed-secrets.pem, or a refusal."""
    repo = render.render(tmp_path / "repo", {**ANSWERS, "secrets_provider": "sealed-secrets"})
    bin_dir = fake_tool(tmp_path / "bin", "kubeseal")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HF_TOKEN": "hf_" + "x" * 30,
           "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "key"}
    result = subprocess.run(["make", "secret", "ENV=gpu", "NAME=hf-secret"], cwd=repo, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "secrets/gpu/sealed-secrets.pem is missing" in result.stderr
    assert "--fetch-cert --context" in result.stderr and not (bin_dir / "kubeseal.args").exists()
    assert "sealed-secrets.pem" in (repo / "secrets" / "gpu" / "README.md").read_text()
    for name in ("gpu", "cpu"):
        (repo / "secrets" / name / "sealed-secrets.pem").write_text(f"{name} certificate\n")
    for name, secret in (("gpu", "hf-secret"), ("cpu", "s3-model-creds")):
        result = subprocess.run(["make", "secret", f"ENV={name}", f"NAME={secret}"], cwd=repo, env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert (bin_dir / "kubeseal.args").read_text().split() == [
            "--cert", f"secrets/{name}/sealed-secrets.pem", "--format", "yaml"]
