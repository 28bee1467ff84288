"""Convert a CustomResourceDefinition's openAPIV3Schema into JSON Schema that kubeconform validates strictly.

Differences from kubeconform's openapi2jsonschema.py, each one a false pass or a false failure there:
- only *served* versions get a schema (an unserved version is rejected by the API server, so must not validate);
- the walk follows the schema's structure, so a *property named* `properties` (External Secrets' SecretStore has
  one) is never mistaken for a `properties` keyword;
- `additionalProperties: false` only on objects that declare properties and do not preserve unknown fields;
- `nullable: true` becomes a null type (and null enum value), `x-kubernetes-int-or-string` becomes integer|string;
- `metadata` is checked against the Kubernetes ObjectMeta schema when one is supplied, as the API server does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

DRAFT4 = "http://json-schema.org/draft-04/schema#"
# Keywords whose value is one subschema or a list of subschemas.
SUBSCHEMA = ("items", "additionalProperties", "not")
SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
# Annotations that never affect validation; dropping them keeps schemas small and fast to compile.
DROPPED = ("description", "example", "externalDocs")
EMBEDDED_RESOURCE_FIELDS = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object"},
}


@dataclass(frozen=True)
class VersionSchema:
    group: str
    kind: str
    version: str
    schema: dict[str, Any]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def served_versions(
    crd: dict[str, Any], object_meta: dict[str, Any] | None = None
) -> Iterator[VersionSchema]:
    """One strict JSON schema per served version of a CRD (apiextensions.k8s.io/v1)."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    for version in spec["versions"]:
        if not version.get("served", False):
            continue
        openapi = (version.get("schema") or {}).get("openAPIV3Schema")
        if openapi is None:
            # No schema means the API server accepts anything; say so instead of inventing rules.
            openapi = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        schema = convert(openapi)
        schema.setdefault("properties", {})
        schema["properties"]["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
        schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
        if object_meta is not None:
            _use_object_meta(schema, object_meta)
        schema["$schema"] = DRAFT4
        yield VersionSchema(group, kind, version["name"], schema)


def convert(node: Any) -> Any:
    """OpenAPI v3 structural schema -> draft-4 JSON schema (a new object; the input is not modified)."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED or key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: convert(sub) for name, sub in value.items()}
        elif key in SUBSCHEMA and isinstance(value, dict):
            out[key] = convert(value)
        elif key in SUBSCHEMA_LISTS:
            out[key] = [convert(sub) for sub in value]
        else:
            out[key] = value

    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        if not any(k in out for k in SUBSCHEMA_LISTS):
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]

    if node.get("x-kubernetes-embedded-resource") and "properties" in out:
        for name, sub in EMBEDDED_RESOURCE_FIELDS.items():
            out["properties"].setdefault(name, dict(sub))

    preserves_unknown = node.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in out and not preserves_unknown and "additionalProperties" not in out:
        out["additionalProperties"] = False

    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        for key in SUBSCHEMA_LISTS:
            if key in out:  # a null must pass the combinator too
                out[key] = [*out[key], {"type": "null"}]
    return out


def _use_object_meta(schema: dict[str, Any], object_meta: dict[str, Any]) -> None:
    """Check `metadata` like the API server: against ObjectMeta (plus any rules the CRD itself adds)."""
    definitions = object_meta["definitions"]
    schema.setdefault("definitions", {}).update(definitions)
    ref = {"$ref": object_meta["$ref"]}
    own = schema["properties"].get("metadata") or {}
    own_rules = {k: v for k, v in own.items() if k != "type"}
    own_rules.pop("additionalProperties", None)  # ObjectMeta decides which fields exist
    schema["properties"]["metadata"] = {"allOf": [ref, own_rules]} if own_rules else ref
