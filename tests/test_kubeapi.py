"""The small API client against a local HTTP server that answers like a kube-apiserver whose watch cache is
(re)initializing: "try again later" (429, or 503 on a read) is retried the way client-go does, nothing else is."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from servingops import gitops_check, kubeapi
from servingops.errors import ServingOpsError


class FakeApiServer:
    """Answers each request with the next (status, headers) of `script`, then 200 with an empty list."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]):
        self.script, self.seen = list(script), []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                fake.seen.append(self.command)
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                status, headers = fake.script.pop(0) if fake.script else (200, {})
                body = {"kind": "PodList", "items": []} if status == 200 else {
                    "kind": "Status", "reason": "TooManyRequests", "message": "storage is (re)initializing"}
                raw = json.dumps(body).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PATCH = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.client = kubeapi.Client(f"http://127.0.0.1:{self.httpd.server_port}", "token")

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def fake():
    servers = []

    def start(script):
        servers.append(FakeApiServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_a_read_is_retried_through_an_initializing_watch_cache(fake):
    server = fake([(429, {"Retry-After": "0"}), (503, {}), (429, {"Retry-After": "0"})])
    started = time.monotonic()
    assert server.client.request("GET", "/api/v1/pods") == {"kind": "PodList", "items": []}
    assert server.seen == ["GET"] * 4
    assert time.monotonic() - started < 3  # 503 without Retry-After waits one second; Retry-After: 0 does not


def test_a_write_is_retried_on_429_only(fake):
    server = fake([(429, {"Retry-After": "0"})])
    server.client.request("PATCH", "/api/v1/pods/x", {"a": 1})
    assert server.seen == ["PATCH", "PATCH"]
    server = fake([(503, {})])  # the server may have acted on it: not repeated
    with pytest.raises(kubeapi.ApiError, match="re.initializing") as refused:
        server.client.request("POST", "/api/v1/pods", {"a": 1})
    assert refused.value.status == 503 and server.seen == ["POST"]


def test_other_errors_and_a_cache_that_stays_down_are_raised(fake, monkeypatch):
    server = fake([(404, {})])
    with pytest.raises(kubeapi.ApiError) as missing:
        server.client.request("GET", "/api/v1/pods/x")
    assert missing.value.status == 404 and server.seen == ["GET"]
    monkeypatch.setattr(kubeapi, "RETRY_FOR", 0.5)
    server = fake([(429, {"Retry-After": "3"})] * 1000)
    with pytest.raises(kubeapi.ApiError) as down:  # the wait it asks for is past the deadline: no retry
        server.client.request("GET", "/api/v1/pods")
    assert down.value.status == 429 and len(server.seen) == 1
    monkeypatch.setattr(kubeapi, "RETRY_FOR", 60)
    server = fake([(429, {"Retry-After": "0"})] * 1000)
    started = time.monotonic()
    with pytest.raises(kubeapi.ApiError):  # "now" again and again: a bounded number of paced retries
        server.client.request("GET", "/api/v1/pods")
    assert len(server.seen) == kubeapi.MAX_RETRIES + 1 and time.monotonic() - started >= 0.1 * kubeapi.MAX_RETRIES


class FlakyClient:
    """A Pod list that fails `failures` times, then succeeds."""

    def __init__(self, failures: int):
        self.failures, self.calls = failures, 0

    def list(self, api_version, kind, *args, **kwargs):
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ServingOpsError("storage is (re)initializing")
        return []


class FakeBox:
    def __init__(self, client):
        self.client = client


@pytest.mark.parametrize("failures, reported", [(1, ""), (10**6, "storage is (re)initializing")])
def test_simulators_report_only_an_error_that_keeps_failing(failures, reported):
    client = FlakyClient(failures)
    with gitops_check.Simulators(FakeBox(client), gateway=False) as sims:
        deadline = time.monotonic() + 30
        while client.calls < 3 and time.monotonic() < deadline:  # three passes, however busy the machine
            time.sleep(0.1)
    assert client.calls >= 3 and sims.error == reported
