"""Without ../shared: the pinned upstream CRDs of every KServe release are fetched (sha256-checked) into the cache
and validation then runs offline from it; with no source, no cache and no network, one line names the fixes.

The "upstream" here is a real HTTP server on 127.0.0.1 serving ../shared (SERVINGOPS_RELEASE_MIRROR), with every
proxy pointed at a closed port: nothing can reach anything else.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from servingops import render, schemas

SERVINGOPS = Path(sys.executable).with_name("servingops")
CLOSED_PROXY = {k: "http://127.0.0.1:9" for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
FIXES = ("--crds", "SERVINGOPS_CRDS", "network")


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D102 (the test output is the place for failures, not access logs)
        pass


@pytest.fixture
def mirror():
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 serving that folder (stopped after the test)."""
    servers = []

    def serve(folder: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def servingops(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SERVINGOPS_")}
    return subprocess.run([str(SERVINGOPS), *args], cwd=cwd, env={**clean, **CLOSED_PROXY, **env},
                          capture_output=True, text=True, timeout=600)


def no_shared(tmp_path: Path) -> dict[str, str]:
    """A machine without ../shared and with an empty cache: a user's clone of the template."""
    (tmp_path / "no-shared").mkdir()
    return {"SERVINGOPS_SHARED": str(tmp_path / "no-shared"), "SERVINGOPS_CACHE_DIR": str(tmp_path / "cache"),
            "NO_PROXY": "", "no_proxy": ""}


def test_without_shared_every_release_is_fetched_checked_and_validates_offline(tmp_path, mirror):
    env = no_shared(tmp_path)
    fetched = servingops("schemas", "fetch", cwd=tmp_path,
                         env={**env, "SERVINGOPS_RELEASE_MIRROR": mirror(schemas.shared_root()),
                              "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    assert fetched.returncode == 0, fetched.stderr
    cache = tmp_path / "cache" / "upstream"
    lock = schemas.pinned_crds()
    for entry in lock:
        assert hashlib.sha256((cache / entry["file"]).read_bytes()).hexdigest() == entry["sha256"], entry["file"]
    assert {e["file"].split("/")[1] for e in lock if e["file"].startswith("kserve/")} == {"v0.16.0", "v0.19.0", "v0.20.0"}

    # Offline now (no mirror, proxies closed): each release validates from the cache alone, against its own CRDs.
    for version, pool_api in (("v0.16", "inference.networking.x-k8s.io/v1alpha2"),
                              ("v0.20", "inference.networking.k8s.io/v1")):
        repo = render.render(tmp_path / f"repo-{version}", {"kserve_version": version})
        result = servingops("validate", str(repo), "--schemas", str(tmp_path / "schemas"), cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        store = tmp_path / "schemas" / f"kserve-{version}"
        index = (store / "index.json").read_text()
        assert f'"{pool_api} InferencePool"' in index
        assert ("inference.networking.x-k8s.io/v1alpha2 InferencePool" in index) == (version == "v0.16")
        assert "downloading" not in result.stdout + result.stderr


def test_a_file_that_does_not_match_its_sha256_is_refused(tmp_path, mirror):
    entry = next(e for e in schemas.pinned_crds() if e["file"].startswith("kserve/v0.20.0/"))
    tampered = tmp_path / "mirror" / entry["file"]
    tampered.parent.mkdir(parents=True)
    tampered.write_text((schemas.shared_root() / entry["file"]).read_text() + "\n# changed\n")
    env = no_shared(tmp_path)
    result = servingops("schemas", "fetch", cwd=tmp_path,
                        env={**env, "SERVINGOPS_RELEASE_MIRROR": mirror(tmp_path / "mirror"),
                             "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    assert result.returncode == 1
    assert f"but {entry['sha256']} is pinned" in result.stderr or "404" in result.stderr
    assert not (tmp_path / "cache" / "upstream" / entry["file"]).exists()  # nothing unchecked is kept


def test_offline_without_source_or_cache_stops_with_one_line_naming_the_fixes(tmp_path):
    env = no_shared(tmp_path)
    repo = render.render(tmp_path / "repo", {})
    for argv in (["schemas", "fetch"], ["validate", str(repo)], ["schemas", "build"]):
        result = servingops(*argv, cwd=tmp_path, env=env)
        assert result.returncode == 1, argv
        lines = [line for line in result.stderr.splitlines() if not line.startswith("fetching ")]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("servingops: error: no CRD source:") and all(fix in lines[0] for fix in FIXES)
        # It really tried upstream (through the closed proxy) before giving up.
        assert "cannot download https://raw.githubusercontent.com/" in lines[0] and "refused" in lines[0]
    assert not (tmp_path / "cache" / "upstream").exists() or not any((tmp_path / "cache" / "upstream").rglob("*.yaml"))


def test_crds_given_explicitly_need_no_fetch(tmp_path):
    # The user's own CRDs (--crds) and KServe runtimes (for lint's runtime-admission rule): nothing to fetch.
    env = {**no_shared(tmp_path),
           "SERVINGOPS_KSERVE_RUNTIMES": str(schemas.shared_root() / "kserve" / "v0.19.0" / "runtimes")}
    repo = render.render(tmp_path / "repo", {"kserve_version": "v0.19"})
    crds = [str(p) for p in schemas.release_crd_paths("v0.19")]
    result = servingops("validate", str(repo), *(a for p in crds for a in ("--crds", p)),
                        "--schemas", str(tmp_path / "schemas"), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "cache").exists()
