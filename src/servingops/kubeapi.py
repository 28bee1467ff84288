"""A small Kubernetes API client on the standard library: discovery, server-side apply, get/list/delete, status.

Enough for the offline checks that talk to a real kube-apiserver (`servingops cluster-check`); no kubectl, no
client library. Errors carry the API server's own message (for an admission denial: the webhook's words).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from .errors import ServingOpsError

FIELD_MANAGER = "servingops"
TIMEOUT = 60
# How long a request keeps retrying "try again later" answers: 429 (any verb: the server did not act on it) and
# 503 on reads. A watch cache that is (re)initializing answers so for a moment, e.g. after a CRD is installed;
# client-go retries the same way, honouring Retry-After.
RETRY_FOR = 20.0
MAX_RETRIES = 10  # client-go's default


class ApiError(ServingOpsError):
    """The API server refused a request: `status` is the HTTP code, `reason` the Status reason, str() its message."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = 1.0  # seconds, from the Retry-After header when the server sends one


@dataclass(frozen=True)
class Resource:
    group_version: str
    plural: str
    namespaced: bool

    def path(self, namespace: str = "", name: str = "", subresource: str = "") -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{urllib.parse.quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{urllib.parse.quote(name)}"
        return base + (f"/{subresource}" if subresource else "")


class Client:
    """One API server, reached with a bearer token over TLS verified against `ca_file`."""

    def __init__(self, server: str, token: str, ca_file: str | None = None):
        self.server = server.rstrip("/")
        self.token = token
        self.context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        self._resources: dict[tuple[str, str], Resource] = {}

    # --- transport -------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                query: dict[str, str] | None = None, timeout: float = TIMEOUT, raw: bool = False) -> Any:
        deadline = time.monotonic() + RETRY_FOR
        for attempt in range(MAX_RETRIES + 1):
            try:
                return self._request_once(method, path, body, content_type, query, timeout, raw)
            except ApiError as exc:
                pause = max(exc.retry_after, 0.1)  # never a busy loop, even on Retry-After: 0
                retryable = exc.status == 429 or (exc.status == 503 and method == "GET")
                if not retryable or attempt == MAX_RETRIES or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
        raise AssertionError("unreachable")

    def _request_once(self, method: str, path: str, body: Any, content_type: str, query: dict[str, str] | None,
                      timeout: float, raw: bool) -> Any:
        url = self.server + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                status = json.loads(text)
                error = ApiError(exc.code, status.get("reason", ""), status.get("message", text))
            except ValueError:
                error = ApiError(exc.code, "", text.strip() or str(exc))
            retry_after = (exc.headers or {}).get("Retry-After", "")
            error.retry_after = min(int(retry_after), 5) if retry_after.isdecimal() else 1.0
            raise error from None
        except (urllib.error.URLError, OSError) as exc:
            raise ServingOpsError(f"API server {self.server} unreachable: {exc}") from exc
        if raw:
            return payload
        return json.loads(payload) if payload else None

    # --- discovery -------------------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> Resource:
        """The REST resource for apiVersion/kind (discovery is cached; refreshed once on a miss, e.g. a new CRD)."""
        key = (api_version, kind)
        if key not in self._resources:
            self._discover(api_version)
        if key not in self._resources:
            raise ServingOpsError(f"the API server does not serve {kind} ({api_version}): is its CRD installed?")
        return self._resources[key]

    def serves(self, api_version: str, kind: str) -> bool:
        """Does the API server serve apiVersion/kind (is its CRD installed)?"""
        if (api_version, kind) not in self._resources:
            self._discover(api_version)
        return (api_version, kind) in self._resources

    def _discover(self, api_version: str) -> None:
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            listing = self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return
            raise
        for entry in listing.get("resources", []):
            if "/" not in entry["name"]:
                self._resources[(api_version, entry["kind"])] = Resource(api_version, entry["name"], entry["namespaced"])

    def forget(self) -> None:
        self._resources.clear()

    # --- verbs -----------------------------------------------------------------------------------------

    def apply(self, obj: dict, *, force: bool = True, dry_run: bool = False) -> dict:
        """Server-side apply (create or update), as `kubectl apply --server-side` does."""
        meta = obj.get("metadata", {})
        res = self.resource(obj["apiVersion"], obj["kind"])
        query = {"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"}
        if dry_run:
            query["dryRun"] = "All"
        return self.request(
            "PATCH", res.path(meta.get("namespace", "") if res.namespaced else "", meta["name"]),
            json.dumps(obj).encode(), content_type="application/apply-patch+yaml", query=query,
        )

    def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> dict | None:
        try:
            return self.request("GET", self.resource(api_version, kind).path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str = "", selector: str = "",
             field_selector: str = "") -> list[dict]:
        query = {k: v for k, v in (("labelSelector", selector), ("fieldSelector", field_selector)) if v}
        return self.request("GET", self.resource(api_version, kind).path(namespace), query=query or None)["items"]

    def create(self, obj: dict) -> dict:
        res = self.resource(obj["apiVersion"], obj["kind"])
        return self.request("POST", res.path(obj["metadata"].get("namespace", "") if res.namespaced else ""), obj)

    def delete(self, api_version: str, kind: str, name: str, namespace: str = "") -> None:
        try:
            self.request("DELETE", self.resource(api_version, kind).path(namespace, name),
                         {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                          "propagationPolicy": "Background"})
        except ApiError as exc:
            if exc.status != 404:
                raise

    def merge_patch(self, api_version: str, kind: str, name: str, patch: dict, namespace: str = "",
                    subresource: str = "") -> dict:
        return self.request("PATCH", self.resource(api_version, kind).path(namespace, name, subresource), patch,
                            content_type="application/merge-patch+json")
