"""Free text cannot break YAML (issue 7): hostile strings in every free-text answer.

Property, for each free-text answer (every str question without choices in copier.yml, and the string fields
inside the YAML answers): a hostile string is either refused by its validator (a one-line message naming the
question), or the copy succeeds and then every generated .yaml/.yml file parses, the answers file records the
value as given, the value appears exactly where the repo uses it, and `servingops validate` (kustomize builds,
strict schemas, lint) passes on the whole repo.

Profiles (hypothesis.settings): "ci" (default, `make test`): a few hundred examples, derandomized so every run
tries the same strings; "long" (HYPOTHESIS_PROFILE=long, `make fuzz-long`): >= 10,000 examples, random.

Renders run in one worker process per test process (ProcessPoolExecutor, max_workers=1) whose initializer calls
render.batch_mode(): that patches Jinja and copier process-wide, which only a dedicated process may do. It also
swaps PyYAML's loader for libyaml's; the worker puts the pure-Python loader back, because copier reads its YAML
answers with that loader for users, and the two differ exactly on the kind of input this test is about (libyaml
refuses surrogate-pair escapes that PyYAML accepts). What stays is the compile cache, which changes no output.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import traceback
from fnmatch import fnmatch
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from servingops import render
from servingops.tools import PROJECT_ROOT
from servingops.validate import validate

QUESTIONS: dict[str, dict] = {
    name: spec for name, spec in yaml.safe_load((PROJECT_ROOT / "copier.yml").read_text()).items()
    if not name.startswith("_")
}
FREE_TEXT = [
    name for name, spec in QUESTIONS.items()
    if spec.get("when") is not False and spec.get("type") == "str" and "choices" not in spec
]

# --- hypothesis profiles ---------------------------------------------------------------------------------

CI_EXAMPLES, LONG_EXAMPLES = 300, 10_000  # in total, spread over the targets below
settings.register_profile(
    "ci", deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
assert PROFILE in ("ci", "long"), f"HYPOTHESIS_PROFILE={PROFILE}: use ci or long"

# --- hostile strings -------------------------------------------------------------------------------------

# Whole values YAML reads as something other than the text typed (YAML 1.1 and Go's YAML).
YAML_WORDS = [
    "", "yes", "no", "on", "off", "y", "n", "Yes", "NO", "true", "False", "null", "Null", "~", "1e3", "1e-3", "0x1F",
    "0x1f", "010", "0o17", "0b101", "123", "-1", "+1", ".5", ".inf", "-.inf", ".nan", "1_000", "12:30:00",
    "2024-01-01", "<<", "=", "-", "?", ":", "---", "...", "[]", "{}", "null-1", "1-yes",
]
# Printable pieces: YAML and Jinja syntax, quotes, shell, unicode (RTL, combining marks, emoji, ZWJ sequences).
PRINTABLE = [
    "'", '"', "''", ":", ": ", " :", "#", " #", "# ", "{{", "}}", "{%", "%}", "{#", "#}", "{{ 7*7 }}", "{% raw %}",
    "${", "${HOME}", "$(id)", "- ", "? ", "!", "!!str ", "!!python/object/apply:os.system", "&a ", "*a", "|", "|-",
    ">", "%", "%YAML 1.1", "@", "`", "[", "]", "{", "}", ",", "\\", "\\n", "\\u0041", "/", "..", " ", "\u00a0",
    "\u200b", "\u200f", "\u202e", "\u0301", "e\u0301", "é", "中文", "עברית", "مرحبا", "😀", "👩\u200d👩\u200d👧",
    "\U0001f3f3\ufe0f\u200d\U0001f308", "a", "model", "hf://", "s3://", "://", "=", "key=value", "--flag",
    *YAML_WORDS,
]
# Characters no one-line answer may hold: line breaks (YAML's too), control characters, non-characters.
CONTROL = ["\n", "\r\n", "\r", "\t", "\x00", "\x07", "\x1b[31m", "\x7f", "\x85", "\u2028", "\u2029", "\ufeff",
           "\ud800", "\ufffe"]
# Runs of characters some validators accept (DNS labels, paths): hostile pieces need company to get through.
PLAIN_RUNS = st.from_regex(r"[a-z0-9][a-z0-9.\-/]{0,10}", fullmatch=True)
core = st.one_of(
    st.sampled_from(YAML_WORDS),
    # printable: what free-text answers accept, so these mostly render and test the quoting
    st.lists(st.one_of(st.sampled_from(PRINTABLE), PLAIN_RUNS), min_size=1, max_size=10).map("".join),
    st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40),
    # anything
    st.lists(st.one_of(st.sampled_from(PRINTABLE + CONTROL), PLAIN_RUNS, st.text(max_size=4)), min_size=1,
             max_size=10).map("".join),
    st.text(max_size=40),
    # very long: a piece repeated up to 5000 characters
    st.builds(lambda unit, n: (unit * n)[:n], st.sampled_from(["a", "ab-", "a: b ", "😀", "{{", "é\u0301", "x "]),
              st.integers(200, 5000)),
)
# Leading/trailing blanks now and then.
hostile = st.tuples(
    st.sampled_from(["", "", "", "", " ", "\t"]), core, st.sampled_from(["", "", "", "", " ", "  "])
).map("".join)

# --- where each answer goes ------------------------------------------------------------------------------

SMALL_VLLM = {"runtimes": ["vllm"], "catalog_models": ["qwen25-1-5b"]}  # one GPU environment: gpu, pool, monitoring
SMALL_LLAMACPP = {"runtimes": ["llamacpp"], "catalog_models": ["qwen25-0-5b-gguf"]}  # one CPU environment
SMALL_OLLAMA = {"runtimes": ["ollama"], "catalog_models": ["qwen3-4b"]}
S3 = {"runtimes": ["llamacpp"], "catalog_models": ["qwen-7b-gguf"]}  # static keys from External Secrets
GATED = {"runtimes": ["vllm"], "catalog_models": ["llama-70b"]}  # HF token from External Secrets
KEYLESS = {**S3, "s3_auth": "keyless"}
SOPS = {**GATED, "secrets_provider": "sops", "gitops_engine": "flux"}
FLUX = {**SMALL_VLLM, "gitops_engine": "flux"}
KEDA = {**SMALL_VLLM, "deployment_mode": "Standard",
        "environments": [{"name": "gpu", "cluster": "in-cluster", "components": ["gpu", "monitoring", "keda"]}]}


def profile_of(question: str) -> dict:
    """The smallest answer set under which a question is asked (small repos validate fast)."""
    if question.startswith("llamacpp_"):
        return SMALL_LLAMACPP
    if question.startswith("ollama_"):
        return SMALL_OLLAMA
    if question.startswith("s3_") or question == "eso_s3_key":
        return S3
    if question.startswith("hf_") or question in ("eso_store_name", "eso_hf_token_key"):
        return GATED
    if question.startswith("keda_"):
        return KEDA
    if question.startswith("sops_"):
        return SOPS
    if question in ("flux_namespace", "sync_interval", "sync_timeout", "flux_service_account"):
        return FLUX
    return SMALL_VLLM


# A value each free-text question accepts (the plain round trip below). Questions that take a DNS-1123 name
# are not listed: they take PLAIN_NAME.
PLAIN_NAME = "fuzz-name-1"
PLAIN: dict[str, str] = {
    "repo_url": "https://git.example.com/team/llm.git",
    "repo_branch": "release/v1",
    "kubernetes_version": "1.32.4",
    "vllm_image": "registry.example.com/ml/vllm",
    "llamacpp_image": "registry.example.com/ml/llama",
    "ollama_image": "registry.example.com/ml/ollama",
    "vllm_image_tag": "v1.2.3",
    "llamacpp_image_tag": "b1234",
    "ollama_image_tag": "0.9.0",
    "ollama_keep_alive": "24h",
    "s3_endpoint": "minio.minio.svc:9000",
    "s3_region": "eu-west-1",
    "eso_hf_token_key": "team/llm: hf #1",
    "eso_s3_key": "team/llm: s3 #1",
    "sops_age_recipients": "age1" + "q" * 58,
    "gpu_product": "NVIDIA-A100-SXM4-80GB",
    "sync_interval": "15m",
    "sync_timeout": "1h30m",
    "gateway_request_timeout": "45m",
    "keda_prometheus_url": "http://prometheus.obs.svc:9090",
    "keda_kv_cache_target": "0.75",
}
# Where a value is used, when that is not a YAML scalar equal to it.
USED_AS: dict[str, Callable[[str], str]] = {
    # The bucket of the catalog's S3 model (profile S3: qwen-7b-gguf).
    "s3_bucket": lambda v: f"s3://{v}/qwen2.5-7b-instruct-q4_k_m.gguf",
}
USED_IN_TEXT: dict[str, tuple[str, Callable[[str], str]]] = {
    "kubernetes_version": ("Makefile", lambda v: f"\nKUBERNETES_VERSION ?= {v}\n"),
    # Inside the keda component's JSON patches (a block scalar), JSON-quoted.
    "keda_prometheus_url": ("components/keda/kustomization.yaml", lambda v: f"serverAddress: {json.dumps(v)}\n"),
    "keda_kv_cache_target": ("components/keda/kustomization.yaml", lambda v: f"value: {json.dumps(v)}\n"),
}


@dataclass(frozen=True)
class Target:
    id: str
    question: str  # the copier question the string is an answer to (or part of)
    answers: Callable[[str], dict]
    used: Callable[[str], str]  # the scalar the string must become where the repo uses it
    where: str = "*"  # files that use it (fnmatch on the path in the repo; * also matches /)
    prefixes: tuple[str, ...] = ()  # how our refusal message starts (default: the question)
    plain: str = PLAIN_NAME  # a value that is accepted

    def prefix(self) -> tuple[str, ...]:
        return self.prefixes or (self.question,)


def question_target(name: str) -> Target:
    return Target(name, name, lambda v: {**profile_of(name), name: v}, USED_AS.get(name, lambda v: v),
                  plain=PLAIN.get(name, PLAIN_NAME))


def model(runtime: str, **fields: Any) -> dict:
    base = {
        "vllm": {"name": "fuzz", "runtime": "vllm", "storageUri": "hf://org/model", "gpus": 1},
        "llamacpp": {"name": "fuzz", "runtime": "llamacpp", "storageUri": "hf://org/model-GGUF", "file": "m.gguf"},
        "ollama": {"name": "fuzz", "runtime": "ollama", "modelTag": "qwen3:4b"},
    }[runtime]
    return {"runtimes": [runtime], "catalog_models": [], "custom_models": [{**base, **fields}]}


def model_target(id: str, runtime: str, field: Callable[[str], dict], used: Callable[[str], str] = lambda v: v,
                 plain: str = "plain-value") -> Target:
    return Target(f"custom_models.{id}", "custom_models", lambda v: model(runtime, **field(v)), used,
                  "models/*/inferenceservice.yaml", ("models[", "custom_models"), plain)


ENV = {"name": "cpu", "cluster": "in-cluster", "components": ["cpu", "monitoring"]}
TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}
TARGETS: list[Target] = [question_target(name) for name in FREE_TEXT] + [
    model_target("name", "vllm", lambda v: {"name": v}, plain="fuzz-model"),
    model_target("storageUri", "vllm", lambda v: {"storageUri": v}, plain="hf://org/plain-model"),
    model_target("storageUri-s3", "vllm", lambda v: {"storageUri": f"s3://models/{v}"}, lambda v: f"s3://models/{v}"),
    model_target("storageUri-pvc", "vllm", lambda v: {"storageUri": f"pvc://claim/{v}"}, lambda v: f"pvc://claim/{v}"),
    # An hf:// GGUF: llama-server fetches the one file itself (--hf-file <file>).
    model_target("file", "llamacpp", lambda v: {"file": v}, lambda v: v, plain="plain.gguf"),
    model_target("modelTag", "ollama", lambda v: {"modelTag": v}, plain="llama3.1:8b"),
    model_target("args", "vllm", lambda v: {"args": [v]}),
    model_target("env-value", "vllm", lambda v: {"env": {"FUZZ": v}}),
    # (A name like *_KEY or *_TOKEN says it holds a credential: refused, so the plain name is neither.)
    model_target("env-key", "vllm", lambda v: {"env": {v: "value"}}, plain="PLAIN_NAME"),
    model_target("nodeSelector-key", "vllm", lambda v: {"nodeSelector": {v: "value"}}),
    model_target("nodeSelector-value", "vllm", lambda v: {"nodeSelector": {"example.com/pool": v}}),
    model_target("toleration-key", "vllm", lambda v: {"tolerations": [{**TOLERATION, "key": v}]}),
    model_target("toleration-value", "vllm", lambda v: {"tolerations": [{**TOLERATION, "value": v}]}),
    Target("environments.name", "environments", lambda v: {**SMALL_LLAMACPP, "environments": [{**ENV, "name": v}]},
           lambda v: v, "environments/*/models/kustomization.yaml"),
    Target("environments.cluster", "environments",
           lambda v: {**SMALL_LLAMACPP, "environments": [{**ENV, "cluster": v}]}, lambda v: v,
           "clusters/argocd/*.yaml"),
    Target("s3_service_account_annotations.value", "s3_service_account_annotations",
           lambda v: {**KEYLESS, "s3_service_account_annotations": {"eks.amazonaws.com/role-arn": v}}, lambda v: v,
           "components/s3/*.yaml", plain="arn:aws:iam::123456789012:role/plain"),
    Target("s3_service_account_annotations.key", "s3_service_account_annotations",
           lambda v: {**KEYLESS, "s3_service_account_annotations": {v: "value"}}, lambda v: v, "components/s3/*.yaml"),
    Target("gpu_node_selector.key", "gpu_node_selector", lambda v: {**SMALL_VLLM, "gpu_node_selector": {v: "true"}},
           lambda v: v, "components/gpu/*.yaml"),
    Target("gpu_node_selector.value", "gpu_node_selector",
           lambda v: {**SMALL_VLLM, "gpu_node_selector": {"example.com/gpu": v}}, lambda v: v, "components/gpu/*.yaml"),
    Target("cpu_node_selector.key", "cpu_node_selector", lambda v: {**SMALL_LLAMACPP, "cpu_node_selector": {v: "c7i"}},
           lambda v: v, "components/cpu/*.yaml"),
    Target("cpu_node_selector.value", "cpu_node_selector",
           lambda v: {**SMALL_LLAMACPP, "cpu_node_selector": {"example.com/pool": v}}, lambda v: v,
           "components/cpu/*.yaml"),
    Target("ingress_namespaces.item", "ingress_namespaces", lambda v: {**SMALL_VLLM, "ingress_namespaces": [v]},
           lambda v: v, "platform/networkpolicy.yaml"),
]
EXAMPLES_PER_TARGET = -(-(LONG_EXAMPLES if PROFILE == "long" else CI_EXAMPLES) // len(TARGETS))
SETTINGS = settings(settings.get_profile(PROFILE), max_examples=EXAMPLES_PER_TARGET)

# --- rendering in a worker process -----------------------------------------------------------------------


def _worker_init() -> None:
    pure_loader = yaml.safe_load
    render.batch_mode()
    yaml.safe_load = pure_loader  # see the module docstring


def _render(template: str, dst: str, answers: dict) -> tuple[str, str]:
    try:
        render.render(Path(dst), answers, template=Path(template), vcs_ref=None)
    except ValueError as exc:
        return "refused", str(exc)
    except Exception:  # noqa: BLE001 - reported as a test failure: a crash is not a refusal
        return "crashed", traceback.format_exc()
    return "rendered", ""


@pytest.fixture(scope="module")
def copy():
    """copy(dst, answers) -> (outcome, message): outcome is rendered, refused or crashed."""
    with render.template_snapshot() as template, ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init
    ) as pool:
        yield lambda dst, answers: pool.submit(_render, str(template), str(dst), answers).result(timeout=600)


# --- checks ----------------------------------------------------------------------------------------------


def scalars(node: Any) -> set[str]:
    """Every string in a parsed document: mapping keys and values, list items."""
    if isinstance(node, dict):
        return {s for k, v in node.items() for s in scalars(k) | scalars(v)}
    if isinstance(node, list):
        return {s for item in node for s in scalars(item)}
    return {node} if isinstance(node, str) else set()


def parsed_yaml(repo: Path) -> dict[str, list]:
    """Every generated .yaml/.yml file, parsed (a parse error fails the property)."""
    documents = {}
    for path in sorted(repo.rglob("*")):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            rel = str(path.relative_to(repo))
            try:
                documents[rel] = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
            except yaml.YAMLError as exc:
                raise AssertionError(f"{rel} does not parse: {exc}\n{path.read_text(encoding='utf-8')}") from exc
    return documents


def check_refusal(target: Target, message: str) -> None:
    prefix = f"Validation error for question '{target.question}': "
    assert message.startswith(prefix), f"refused, but not by {target.question}'s validator: {message}"
    ours = message.removeprefix(prefix)
    assert ours.startswith(target.prefix()), f"not our message (a validator crashed?): {message}"
    assert "\n" not in message, f"not one line: {message!r}"


def check_repo(target: Target, repo: Path, answers: dict, value: str, full: bool = True) -> None:
    documents = parsed_yaml(repo)
    recorded = documents.pop(".copier-answers.yml")[0]
    assert recorded[target.question] == answers[target.question], "the answers file does not keep the answer"
    if value or target.question not in FREE_TEXT:  # an empty optional answer is used nowhere
        if target.id in USED_IN_TEXT:
            name, line = USED_IN_TEXT[target.id]
            assert line(value) in (repo / name).read_text(encoding="utf-8")
        else:
            used = {s for rel, docs in documents.items() if fnmatch(rel, target.where) for s in scalars(docs)}
            assert target.used(value) in used, f"{target.used(value)!r} not found in {target.where}"
    if full:
        report = validate([repo])
        assert report.ok, "\n".join(report.failures())


def run(copy, target: Target, value: str, full: bool = True) -> str:
    answers = target.answers(value)
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        dst = Path(tmp) / "repo"
        outcome, message = copy(dst, answers)
        assert outcome != "crashed", message
        if outcome == "refused":
            check_refusal(target, message)
            assert not dst.exists(), "refused, but files were written"
        else:
            check_repo(target, dst, answers, value, full)
        shutil.rmtree(dst, ignore_errors=True)
    return outcome


# --- tests -----------------------------------------------------------------------------------------------


def test_targets_cover_every_free_text_answer():
    assert FREE_TEXT, "no free-text question found in copier.yml"
    assert [t.question for t in TARGETS[: len(FREE_TEXT)]] == FREE_TEXT
    assert set(PLAIN) | set(USED_AS) | set(USED_IN_TEXT) <= set(FREE_TEXT)


@pytest.mark.parametrize("target", TARGETS, ids=[t.id for t in TARGETS])
def test_plain_value_is_accepted_and_used(copy, target):
    """The property below is not vacuous: each target's answers are asked, and found where they are used."""
    assert run(copy, target, target.plain, full=False) == "rendered"


@pytest.mark.parametrize("target", TARGETS, ids=[t.id for t in TARGETS])
@SETTINGS
@given(value=hostile)
@example(value="a: b # c {{ x }} {% if %} ${y} & *z | >")
@example(value="yes")  # env names are values: PyYAML reads a plain yes as true
@example(value="true")  # kustomize reads a quoted "true" key as a boolean
@example(value="<<")  # kustomize writes it unquoted: PyYAML reads a merge key
@example(value="é😀\u200f\u0301 \"q\" 's' 中文")
def test_hostile_string_is_refused_or_renders_valid_yaml(copy, target, value):
    event(run(copy, target, value))  # the statistics show how many were refused and how many rendered
