"""The CRD converter, checked by running kubeconform over the store it feeds (and on small unit cases)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from servingops import crdschema, schemas
from servingops.validate import ERROR, INVALID, VALID, kubeconform_verdicts

CRDS = schemas.shared_crds_dir()


def verdicts(store, *docs: str):
    return kubeconform_verdicts([yaml.safe_dump(yaml.safe_load(d), sort_keys=False) for d in docs], store)


SECRET_STORE = """
apiVersion: external-secrets.io/v1
kind: {kind}
metadata: {{name: vault}}
spec:
  provider:
    vault:
      server: https://vault.example.com
      path: secret
      version: v2
      auth:
        kubernetes:
          mountPath: kubernetes
          role: llm-serving
"""


@pytest.mark.parametrize("kind", ["SecretStore", "ClusterSecretStore"])
def test_secret_store_schemas_compile_and_accept_a_valid_store(store, kind):
    # Upstream's converter puts additionalProperties into the *property named* `properties`
    # (spec.provider.crd.whitelist.rules[].properties): the schema no longer compiles and kubeconform says
    # "could not find schema". Ours compiles, so the valid store passes and a typo in it fails.
    valid = SECRET_STORE.format(kind=kind)
    typo = valid.replace("mountPath", "mountPth")
    assert [v.status for v in verdicts(store, valid, typo)] == [VALID, INVALID]


def test_the_property_named_properties_is_a_property_not_a_keyword(store):
    schema = json.loads((store.path / "external-secrets.io" / "secretstore_v1.json").read_text())
    rule = schema["properties"]["spec"]["properties"]["provider"]["properties"]["crd"]["properties"]
    rule = rule["whitelist"]["properties"]["rules"]["items"]
    assert "properties" in rule["properties"]  # the field itself survived as a property ...
    named_properties = rule["properties"]["properties"]
    assert "additionalProperties" not in named_properties.get("properties", {})  # ... and got no keyword


def test_unserved_versions_get_no_schema(store):
    crd = yaml.safe_load((CRDS / "external-secrets.io" / "external-secrets.io_externalsecrets.yaml").read_text())
    served = {v["name"]: v["served"] for v in crd["spec"]["versions"]}
    assert served == {"v1": True, "v1beta1": False}
    assert (store.path / "external-secrets.io" / "externalsecret_v1.json").is_file()
    assert not (store.path / "external-secrets.io" / "externalsecret_v1beta1.json").exists()
    doc = "apiVersion: external-secrets.io/v1beta1\nkind: ExternalSecret\nmetadata: {name: x}\nspec: {}\n"
    [verdict] = verdicts(store, doc)
    assert verdict.status == ERROR and "no schema for external-secrets.io/v1beta1 ExternalSecret" in verdict.message


SEALED = """
apiVersion: bitnami.com/v1alpha1
kind: SealedSecret
metadata: {name: hf-token, namespace: llm-platform}
spec:
  encryptedData: {HF_TOKEN: AgBy8hCi}
  template:
    metadata: {creationTimestamp: null, name: hf-token, namespace: llm-platform}
    type: Opaque
"""


def test_preserve_unknown_fields_is_open_while_a_strict_sibling_rejects_extras(store):
    # spec.template.metadata preserves unknown fields (kubeseal writes creationTimestamp: null there);
    # spec.template itself is strict.
    extra_in_sibling = SEALED.replace("type: Opaque", "type: Opaque\n    bogus: 1")
    results = verdicts(store, SEALED, extra_in_sibling)
    assert results[0].status == VALID, results[0].message
    assert results[1].status == INVALID and "bogus" in results[1].message


def test_nullable_accepts_null(store):
    with_null_data = SEALED.replace("type: Opaque", "type: Opaque\n    data: null")
    assert verdicts(store, with_null_data)[0].status == VALID


ISVC = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: qwen}
spec:
  predictor:
    model:
      modelFormat: {name: huggingface}
      storageUri: hf://Qwen/Qwen2.5-1.5B-Instruct
      resources:
        limits: {cpu: CPU, memory: 8Gi}
status:
  anything: goes
"""


def test_int_or_string_accepts_both_forms_and_nothing_else(store):
    results = verdicts(store, ISVC.replace("CPU", "4"), ISVC.replace("CPU", '"4"'), ISVC.replace("CPU", "[4]"))
    assert [r.status for r in results] == [VALID, VALID, INVALID]


def test_metadata_is_checked_like_the_api_server_does(store):
    typo = ISVC.replace("metadata: {name: qwen}", "metadata: {name: qwen, annotation: {a: b}}")
    result = verdicts(store, typo)[0]
    assert result.status == INVALID and "annotation" in result.message


# --- unit cases on convert() ---------------------------------------------------------------------------


def test_convert_keeps_open_objects_open_and_closes_declared_ones():
    schema = crdschema.convert(
        {
            "type": "object",
            "properties": {
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {}}},
                "map": {"type": "object", "additionalProperties": {"type": "string"}},
                "bare": {"type": "object"},
            },
        }
    )
    assert schema["additionalProperties"] is False
    assert "additionalProperties" not in schema["properties"]["free"]
    assert schema["properties"]["map"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in schema["properties"]["bare"]


def test_convert_nullable_enum_and_int_or_string():
    schema = crdschema.convert(
        {
            "properties": {
                "mode": {"type": "string", "enum": ["a", "b"], "nullable": True},
                "port": {"x-kubernetes-int-or-string": True},
            }
        }
    )
    assert schema["properties"]["mode"] == {"type": ["string", "null"], "enum": ["a", "b", None]}
    assert schema["properties"]["port"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}


def test_every_schema_in_the_store_compiles_in_kubeconform(store):
    # A schema that does not compile is reported by kubeconform as "could not find schema": feed one minimal
    # object of every kind in the store and require that each got a schema verdict (valid or invalid).
    index = store.index()
    docs = [
        yaml.safe_dump({"apiVersion": name.split()[0], "kind": name.split()[1], "metadata": {"name": "x"}})
        for name in index
    ]
    results = kubeconform_verdicts(docs, store)
    missing = [name for name, r in zip(index, results) if r.status == ERROR]
    assert len(index) > 200 and missing == []


def test_store_is_deterministic_and_rebuilt_only_when_inputs_change(tmp_path: Path):
    crds = tmp_path / "crds"
    crds.mkdir()
    source = CRDS / "bitnami.com" / "bitnami.com_sealedsecrets.yaml"
    (crds / "sealed.yaml").write_text(source.read_text())
    first = schemas.build_store(tmp_path / "a", crd_dirs=[crds])
    second = schemas.build_store(tmp_path / "b", crd_dirs=[crds])
    assert first.rebuilt and second.rebuilt
    files_a = sorted(p.relative_to(first.path) for p in first.path.rglob("*.json"))
    assert files_a == sorted(p.relative_to(second.path) for p in second.path.rglob("*.json"))
    assert all((first.path / f).read_bytes() == (second.path / f).read_bytes() for f in files_a)
    assert not schemas.build_store(tmp_path / "a", crd_dirs=[crds]).rebuilt
    (crds / "sealed.yaml").write_text(source.read_text().replace("SealedSecret", "SealedThing"))
    rebuilt = schemas.build_store(tmp_path / "a", crd_dirs=[crds])
    assert rebuilt.rebuilt and "bitnami.com/v1alpha1 SealedThing" in rebuilt.index()


def test_a_users_kubectl_crd_list_is_a_crd_source(tmp_path: Path):
    crd = yaml.safe_load((CRDS / "keda.sh" / "keda.sh_scaledobjects.yaml").read_text())
    (tmp_path / "cluster-crds.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [crd]}))
    store = schemas.build_store(tmp_path / "store", crd_dirs=[tmp_path / "cluster-crds.yaml"])
    index = store.index()
    assert "keda.sh/v1alpha1 ScaledObject" in index
    assert "serving.kserve.io/v1beta1 InferenceService" not in index  # only what the user gave, plus core
    assert "apps/v1 Deployment" in index


def test_stores_sharing_a_folder_never_replace_each_other(tmp_path: Path, monkeypatch):
    # A rebuild swaps a store's whole folder: a store kept inside another's folder was deleted with it while a
    # concurrent pytest worker validated against it ("no schema for v1 Namespace"), and two Kubernetes versions
    # in one folder rebuilt each other on every use.
    monkeypatch.delenv("SERVINGOPS_CRDS", raising=False)
    crds = tmp_path / "crds"
    crds.mkdir()
    (crds / "sealed.yaml").write_text((CRDS / "bitnami.com" / "bitnami.com_sealedsecrets.yaml").read_text())
    out = tmp_path / "schemas"
    release = schemas.release_store("v0.16", out)
    given = schemas.release_store("v0.16", out, crd_dirs=[crds])
    older = schemas.release_store("v0.16", out, "1.32.0", crd_dirs=[crds])
    assert len({release.path, given.path, older.path}) == 3
    assert all(store.path.parent == out for store in (release, given, older))
    assert not schemas.release_store("v0.16", out).rebuilt
    assert not schemas.release_store("v0.16", out, crd_dirs=[crds]).rebuilt
    assert "serving.kserve.io/v1beta1 InferenceService" in release.index()
    assert older.kubernetes_version == "1.32.0" and given.kubernetes_version == "1.33.0"
