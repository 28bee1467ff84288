"""The generated repo's `make secret` (scripts/secret): the Secret it builds, and that it refuses without values."""

from __future__ import annotations

import base64
import os
import pty
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
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and "set HF_TOKEN in your environment first" in result.stderr
    assert not list((repo / "secrets" / "gpu").glob("*hf-secret*"))


def encrypter(repo: Path) -> str:
    return "kubeseal" if "kubeseal" in (repo / "scripts" / "secret").read_text() else "sops"


def test_a_failing_encrypter_leaves_the_existing_file_intact(repo, tmp_path):
    tool = encrypter(repo)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / tool).write_text("#!/bin/sh\ncat >/dev/null\necho 'cannot fetch the certificate' >&2\nexit 1\n")
    (bin_dir / tool).chmod(0o755)
    suffix = "sealedsecret" if tool == "kubeseal" else "sops"
    existing = repo / "secrets" / "gpu" / f"hf-secret.{suffix}.yaml"
    existing.write_text("encrypted: earlier\n")
    try:
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HF_TOKEN": "x" * 12}
        result = subprocess.run(["make", "secret", "ENV=gpu", "NAME=hf-secret"], cwd=repo, env=env,
                                capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert result.returncode != 0
        assert existing.read_text() == "encrypted: earlier\n"
        assert sorted(p.name for p in existing.parent.iterdir()) == sorted(["README.md", existing.name])
    finally:
        existing.unlink()


@pytest.mark.parametrize("env_name", ["../..", "..", "nope", "gpu/../cpu"])
def test_make_secret_accepts_only_the_environments(repo, tmp_path, env_name):
    bin_dir = fake_tool(tmp_path / "bin", encrypter(repo))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HF_TOKEN": "x" * 12}
    before = sorted(str(p) for p in repo.parent.rglob("*"))
    result = subprocess.run(["make", "secret", f"ENV={env_name}", "NAME=hf-secret"], cwd=repo, env=env,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and "unknown environment" in result.stderr and "use one of gpu cpu" in result.stderr
    assert sorted(str(p) for p in repo.parent.rglob("*")) == before
    assert not (bin_dir / f"{encrypter(repo)}.stdin").exists()


def test_make_secret_asks_without_echo_when_the_value_is_not_set(repo, tmp_path):
    """In a terminal, the token is asked for (hidden) instead of taken from the command line."""
    tool = encrypter(repo)
    bin_dir = fake_tool(tmp_path / "bin", tool)
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    cert = repo / "secrets" / "gpu" / "sealed-secrets.pem"  # sealed-secrets seals with the environment's certificate
    if tool == "kubeseal" and not cert.exists():
        cert.write_text("gpu cluster certificate\n")
    pid, fd = pty.fork()
    if pid == 0:  # the child: make in a pseudo-terminal
        os.chdir(repo)
        os.execvpe("make", ["make", "secret", "ENV=gpu", "NAME=hf-secret"], env)
    token = "hf_" + "s3cr3t" * 5
    output = b""
    while b"input hidden" not in output:
        output += os.read(fd, 1024)
    os.write(fd, token.encode() + b"\n")
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output.decode()
    assert token.encode() not in output  # not echoed
    secret = yaml.safe_load((bin_dir / f"{tool}.stdin").read_text())
    assert base64.b64decode(secret["data"]["HF_TOKEN"]).decode() == token
    written = repo / "secrets" / "gpu" / f"hf-secret.{'sealedsecret' if tool == 'kubeseal' else 'sops'}.yaml"
    written.unlink()


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
