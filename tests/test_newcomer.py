"""A newcomer's first hour (issue 13): the questionnaire as a user meets it.

Every choice of every choice question renders with --defaults (a question's default is valid for every earlier
answer); help texts fit a terminal and never name an engine the user did not choose; the answers that shape the
catalog's models (S3 bucket, llama.cpp threads) reach the manifests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servingops import render
from servingops.tools import PROJECT_ROOT

COPIER = Path(sys.executable).with_name("copier")
QUESTIONS: dict[str, dict] = {
    name: spec for name, spec in yaml.safe_load((PROJECT_ROOT / "copier.yml").read_text()).items()
    if not name.startswith("_") and isinstance(spec, dict)
}
ASKED = {name: spec for name, spec in QUESTIONS.items() if spec.get("when") is not False}
# Answers under which each choice question is asked at all (the defaults ask the others).
GATED = {"catalog_models": ["llama-70b"]}
S3 = {"catalog_models": ["qwen-7b-gguf"]}
ASKED_WITH = {"s3_auth": S3, "secrets_provider": GATED, "eso_store_kind": GATED}
# A terminal is 80 columns; copier prints the help after a two-column prompt mark.
HELP_WIDTH = 76
# What a Jinja expression in a help renders to at most (an engine name, a pinned image tag).
JINJA_WIDTH = 20


def choice_values(name: str, spec: dict) -> list[str]:
    """Every value a choice question offers (templated choice lists read from the catalog they come from)."""
    if name == "runtimes":
        return list(render.catalog("runtimes"))
    if name == "catalog_models":
        return [m["name"] for m in render.catalog("models")["models"]]
    if name == "kserve_version":
        return list(render.catalog("releases")["kserve"])
    choices = spec["choices"]
    assert not isinstance(choices, str), f"{name}: templated choices: read them from the catalog they come from"
    values = choices.values() if isinstance(choices, dict) else choices
    return [v["value"] if isinstance(v, dict) else v for v in values]


CHOICES = [
    (name, value) for name, spec in ASKED.items() if "choices" in spec for value in choice_values(name, spec)
]


@pytest.fixture(scope="module")
def template():
    with render.template_snapshot() as snapshot:
        yield snapshot


def answers(repo: Path) -> dict:
    return yaml.safe_load((repo / ".copier-answers.yml").read_text())


def test_the_walk_covers_every_choice_question():
    walked = {name for name, _ in CHOICES}
    assert {"deployment_mode", "runtimes", "catalog_models", "s3_auth", "secrets_provider", "gitops_engine"} <= walked
    assert ("secrets_provider", "sops") in CHOICES


@pytest.mark.slow
@pytest.mark.parametrize("name,value", CHOICES, ids=[f"{n}={v}" for n, v in CHOICES])
def test_every_choice_renders_with_the_other_defaults(template, tmp_path, name, value):
    """`copier copy --defaults -d <question>=<choice>`: whatever a user picks, every later default fits it."""
    multiselect = QUESTIONS[name].get("multiselect")
    data = {**ASKED_WITH.get(name, {}), name: [value] if multiselect else value}
    if name == "runtimes":  # the catalog offers only models of the chosen runtime: take its sample, if any
        data["catalog_models"] = [m["name"] for m in render.catalog("models")["models"]
                                  if m["runtime"] == value and m.get("sample")]
    repo = render.render(tmp_path / "repo", data, template=template, vcs_ref=None)
    assert answers(repo)[name] == data[name]


def test_sops_through_the_copier_cli_picks_flux(template, tmp_path):
    """The command from the issue: no traceback, and the engine that can decrypt SOPS."""
    dst = tmp_path / "repo"
    result = subprocess.run(
        [str(COPIER), "copy", "--defaults", "-d", "secrets_provider=sops", "-d", "catalog_models=[llama-70b]",
         str(template), str(dst)], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert answers(dst)["gitops_engine"] == "flux"
    assert (dst / ".sops.yaml").is_file() and not (dst / "clusters" / "argocd").exists()


def test_sops_with_argo_cd_is_refused_naming_the_engine(template, tmp_path):
    with pytest.raises(ValueError, match="needs gitops_engine flux"):
        render.render(tmp_path / "repo", {**GATED, "secrets_provider": "sops", "gitops_engine": "argocd"},
                      template=template, vcs_ref=None)
    assert not (tmp_path / "repo").exists()


def help_lines(spec: dict) -> list[str]:
    text = re.sub(r"{%.*?%}", "", spec.get("help", ""), flags=re.S)
    text = re.sub(r"{{.*?}}", "x" * JINJA_WIDTH, text, flags=re.S)
    return text.split("\n")


@pytest.mark.parametrize("name", list(ASKED))
def test_help_fits_the_terminal(name):
    spec = ASKED[name]
    assert spec.get("help"), f"{name} has no help"
    too_long = [line for line in help_lines(spec) if len(line) > HELP_WIDTH]
    assert not too_long, f"{name}: help lines wider than {HELP_WIDTH} columns (details go to the README): {too_long}"
    assert len(help_lines(spec)) <= 4, f"{name}: help longer than 4 lines: move the details to the README"
    labels = spec.get("choices") if isinstance(spec.get("choices"), dict) else {}
    assert all(len(label) <= HELP_WIDTH for label in labels), labels


def test_the_readme_explains_what_the_short_helps_leave_out(template, tmp_path):
    repo = render.render(tmp_path / "repo", {}, template=template, vcs_ref=None)
    readme = (repo / "README.md").read_text()
    section = readme.split("## Answers", 1)[1].split("\n## ", 1)[0]
    for question in ("deployment_mode", "s3_auth", "secrets_provider", "environments", "custom_models"):
        assert f"`{question}`" in section
    for field in render.catalog("models")["fields"]:
        assert f"| `{field}` |" in section


ENGINES = {"argocd": "Argo CD", "flux": "Flux"}


@pytest.mark.parametrize("engine", ["argocd", "flux"])
def test_questions_asked_after_the_engine_name_only_that_engine(engine):
    """gitops_engine comes first, so no later help names the engine the user did not choose."""
    order = list(ASKED)
    assert order[0] == "gitops_engine"
    other = ENGINES["flux" if engine == "argocd" else "argocd"]
    for name in order[1:]:
        spec = ASKED[name]
        when = str(spec.get("when", ""))
        if f"'{engine}'" not in when and when:  # asked only for the other engine
            continue
        rendered = render_help(spec["help"], engine)
        assert other not in rendered, f"{name} help names {other} when {ENGINES[engine]} is chosen: {rendered!r}"


def render_help(help_text: str, engine: str) -> str:
    """The engine-dependent parts of a help, rendered the way copier does (other expressions dropped)."""
    import jinja2

    env = jinja2.Environment()
    titles = {"argocd": "Argo CD", "flux": "Flux", "both": "Argo CD or Flux"}
    parts = []
    for piece in re.split(r"({{.*?}}|{%.*?%})", help_text, flags=re.S):
        if piece.startswith("{{") and ("gitops_engine" in piece or "engine_title" in piece):
            piece = env.from_string(piece).render(gitops_engine=engine, engine_title=titles[engine])
        elif piece.startswith(("{{", "{%")):
            piece = ""
        parts.append(piece)
    return "".join(parts)


def test_sops_choice_does_not_assume_the_engine_before_it_is_asked():
    labels = ASKED["secrets_provider"]["choices"]
    sops = next(label for label, value in labels.items() if (value.get("value") if isinstance(value, dict) else value) == "sops")
    # Asked after gitops_engine: the label may say Flux decrypts, and the choice is refused without Flux.
    assert list(ASKED).index("gitops_engine") < list(ASKED).index("secrets_provider")
    assert "gitops_engine" in labels[sops]["validator"]


def test_repo_url_default_follows_the_project_name(template, tmp_path):
    repo = render.render(tmp_path / "repo", {"project_name": "acme-llm"}, template=template, vcs_ref=None)
    assert answers(repo)["repo_url"] == "https://github.com/example-org/acme-llm.git"


def isvc(repo: Path, model: str) -> dict:
    return yaml.safe_load((repo / "models" / model / "inferenceservice.yaml").read_text())


def test_the_s3_catalog_model_reads_the_bucket_asked_for(template, tmp_path):
    repo = render.render(tmp_path / "repo", {**S3, "s3_bucket": "acme-llm-models"}, template=template, vcs_ref=None)
    uri = isvc(repo, "qwen-7b-gguf")["spec"]["predictor"]["model"]["storageUri"]
    assert uri == "s3://acme-llm-models/qwen2.5-7b-instruct-q4_k_m.gguf"


def test_a_bad_bucket_name_is_refused(template, tmp_path):
    with pytest.raises(ValueError, match="s3_bucket: \"My_Bucket\" is not a bucket name"):
        render.render(tmp_path / "repo", {**S3, "s3_bucket": "My_Bucket"}, template=template, vcs_ref=None)


def test_llamacpp_cpu_follows_its_threads(template, tmp_path):
    repo = render.render(tmp_path / "repo", {**S3, "llamacpp_threads": 8}, template=template, vcs_ref=None)
    model = isvc(repo, "qwen-7b-gguf")["spec"]["predictor"]["model"]
    assert model["resources"]["requests"]["cpu"] == "8" and model["resources"]["limits"]["cpu"] == "8"
    assert "--threads=8" in " ".join(model.get("args", [])) or "8" in str(model)


# --- what a user sees when a manifest is wrong (item 10) and polish (item 12) ------------------------------


def servingops(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("servingops")), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def pooled_repo(template, tmp_path_factory) -> Path:
    """The Quick Start model on vLLM behind an InferencePool (the default environment gives it one)."""
    return render.render(tmp_path_factory.mktemp("pool") / "repo", {"catalog_models": ["qwen25-7b"]},
                         template=template, vcs_ref=None)


def test_a_runtime_typo_is_reported_as_such_and_not_as_a_non_vllm_pool_member(pooled_repo, tmp_path):
    import shutil

    repo = shutil.copytree(pooled_repo, tmp_path / "repo", symlinks=True)
    isvc = repo / "models" / "qwen25-7b" / "inferenceservice.yaml"
    assert isvc.read_text().count("runtime: kserve-vllm") == 1
    isvc.write_text(isvc.read_text().replace("runtime: kserve-vllm", "runtime: kserve-vlm"))
    result = servingops("lint", ".", cwd=repo)
    assert result.returncode == 1
    assert "[ref-runtime]" in result.stdout and "kserve-vlm" in result.stdout, result.stdout
    assert "[pool-non-vllm]" not in result.stdout, result.stdout


def test_a_yaml_syntax_error_names_file_and_line_once_per_overlay(pooled_repo, tmp_path):
    import shutil

    repo = shutil.copytree(pooled_repo, tmp_path / "repo", symlinks=True)
    isvc = repo / "models" / "qwen25-7b" / "inferenceservice.yaml"
    lines = isvc.read_text().splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines, 1) if line.startswith("  name:"))
    lines[number - 1] = "  name: [qwen25-7b\n"
    isvc.write_text("".join(lines))
    result = servingops("validate", ".", cwd=repo)
    assert result.returncode == 1
    failures = result.stdout.splitlines()[:-1]
    expected = f"models/qwen25-7b/inferenceservice.yaml:{number}: not valid YAML"
    broken = [line for line in failures if expected in line]
    assert broken, result.stdout
    # Once per overlay that includes the file (the model's base and the environment's models layer), never
    # again by lint.
    overlays = [line.split(": ", 1)[0] for line in failures if "inferenceservice.yaml" in line]
    assert sorted(overlays) == sorted(set(overlays)) and "[build]" not in result.stdout, result.stdout


def test_help_names_no_internal_exception_class():
    result = subprocess.run([str(Path(sys.executable).with_name("servingops")), "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "Error" not in result.stdout, result.stdout


def test_fuzz_long_help_agrees_with_the_readme():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    claim = re.search(r"^fuzz-long:.*## .*about (\d+) minutes", makefile, re.M)
    measured = re.search(r"Last long run \(.*?(\d+) min\)", (PROJECT_ROOT / "README.md").read_text())
    assert claim and measured, "the Makefile help and the README each state the long run's time"
    assert int(measured.group(1)) <= int(claim.group(1)) <= 2 * int(measured.group(1))


def test_the_sops_age_key_step_is_a_command(template, tmp_path):
    repo = render.render(tmp_path / "repo", {**GATED, "secrets_provider": "sops"}, template=template, vcs_ref=None)
    readme = (repo / "README.md").read_text()
    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", readme, re.S))
    assert re.search(r"^kubectl create secret generic sops-age --namespace flux-system "
                     r"--from-file=age\.agekey=\S+", blocks, re.M), blocks


def test_make_update_check_states_what_its_exit_codes_mean(tmp_path, template):
    repo = render.render(tmp_path / "repo", {}, template=template, vcs_ref=None)
    help_line = next(line for line in (repo / "Makefile").read_text().splitlines() if line.startswith("update-check:"))
    for meaning in ("0 up to date", "1 newer release", "2 cannot tell"):
        assert meaning in help_line, help_line


def test_make_test_fast_runs_no_test_that_renders_the_template():
    """`make test-fast` is what its help says: the tests that render the template (seconds each, hundreds of
    them) are left to `make test`."""
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    recipe = re.search(r"^test-fast:.*\n\t(.*)$", makefile, re.M).group(1)
    listed = re.search(r"^FAST_TESTS := (.*)$", makefile, re.M)
    assert "$(FAST_TESTS)" in recipe and listed, recipe
    modules = listed.group(1).split()
    assert modules and all((PROJECT_ROOT / m).is_file() for m in modules)
    for module in modules:
        source = (PROJECT_ROOT / module).read_text()
        assert not re.search(r"\brender\b|copier|matrix", source), f"{module} renders the template"
