"""The pinned-tool installer: PATH reuse, version refusal, the release download and the final error."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import tarfile
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from servingops import tools
from servingops.errors import ToolError


def fake_binary(folder: Path, name: str, version_output: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '{version_output}'\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty tools dir and a PATH with only the basic system folders (no kustomize, kubeconform or go)."""
    monkeypatch.setenv("SERVINGOPS_TOOLS_DIR", str(tmp_path / "tools"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("SERVINGOPS_RELEASE_MIRROR", "http://127.0.0.1:9")  # closed port
    return tmp_path


def test_pins_are_the_expected_versions():
    pins = tools.pinned_tools()
    assert pins["kustomize"].version == "v5.8.1" and pins["kubeconform"].version == "v0.7.0"
    for tool in pins.values():
        assert set(tool.sha256) == {"linux_amd64", "linux_arm64", "darwin_amd64", "darwin_arm64"}


def test_installed_tools_report_the_pinned_versions():
    # `go install` builds of kubeconform print "development": the version comes from Go's embedded build info.
    for name, tool in tools.pinned_tools().items():
        assert tools.binary_version(tools.tool_path(name), tool) == tool.version


def test_matching_binary_on_path_is_reused(isolated, monkeypatch):
    fake = fake_binary(isolated / "bin", "kustomize", "v5.8.1")
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    installed = tools.install("kustomize", allow_go=False, allow_download=False, log=lambda _: None)
    assert installed.is_symlink() and installed.resolve() == fake.resolve()


def test_wrong_version_on_path_is_refused_and_the_error_says_how_to_fix(isolated, monkeypatch):
    fake = fake_binary(isolated / "bin", "kustomize", "v5.4.0")
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    with pytest.raises(ToolError) as error:
        tools.install("kustomize", log=lambda _: None)
    message = str(error.value)
    assert "v5.4.0, not v5.8.1" in message
    assert "`go` is not on PATH" in message and "download of http://127.0.0.1:9/" in message
    assert "put kustomize v5.8.1 on PATH" in message and "install Go" in message and "github.com" in message
    assert "\n" not in message
    assert not (isolated / "tools" / "kustomize").exists()


def test_no_method_works_names_all_three_fixes(isolated):
    with pytest.raises(ToolError) as error:
        tools.install("kubeconform", log=lambda _: None)
    message = str(error.value)
    assert message.startswith("kubeconform v0.7.0 is missing (no kubeconform on PATH; `go` is not on PATH; download")
    assert "Fix one of:" in message


def test_tool_path_rejects_a_wrong_version(isolated, monkeypatch):
    fake = fake_binary(isolated / "other", "kubeconform", "v0.6.7")
    monkeypatch.setenv("SERVINGOPS_KUBECONFORM", str(fake))
    with pytest.raises(ToolError, match="is kubeconform v0.6.7, but v0.7.0 is pinned: run `make setup`"):
        tools.tool_path("kubeconform")


def serve(folder: Path):
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def release_archive(folder: Path, name: str, version: str) -> bytes:
    script = f"#!/bin/sh\necho '{version}'\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    return buffer.getvalue()


@pytest.mark.parametrize("checksum_matches", [True, False])
def test_release_download_is_verified_by_sha256(isolated, monkeypatch, checksum_matches):
    tool = tools.pinned_tools()["kubeconform"]
    archive = release_archive(isolated, "kubeconform", "v0.7.0")
    system, arch = tools.release_platform().split("_")
    (isolated / "mirror").mkdir()
    (isolated / "mirror" / f"kubeconform-{system}-{arch}.tar.gz").write_bytes(archive)
    server = serve(isolated / "mirror")
    try:
        monkeypatch.setenv("SERVINGOPS_RELEASE_MIRROR", f"http://127.0.0.1:{server.server_port}")
        good = hashlib.sha256(archive).hexdigest()
        pinned = replace(tool, sha256={tools.release_platform(): good if checksum_matches else "0" * 64})
        monkeypatch.setattr(tools, "pinned_tools", lambda: {"kubeconform": pinned})
        if checksum_matches:
            path = tools.install("kubeconform", allow_go=False, log=lambda _: None)
            assert tools.binary_version(path, pinned) == "v0.7.0" and os.access(path, os.X_OK)
        else:
            with pytest.raises(ToolError, match=f"has sha256 {good}, expected 0000"):
                tools.install("kubeconform", allow_go=False, log=lambda _: None)
    finally:
        server.shutdown()
