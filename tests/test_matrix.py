"""The overlay matrix: every allowed runtime set x component set builds, validates and lints; every disallowed
combination is refused by copier. One pipeline run (session fixture) feeds one test per combination."""

from __future__ import annotations

import itertools

import pytest
import yaml

from servingops import matrix, releases, render
from servingops.errors import ServingOpsError

RENDERS, REJECTIONS = matrix.plan()
CELLS = {f"{cell.id}/{spec.axes['gitops_engine']}/{spec.axes['kserve_version']}/{spec.name}": cell
         for spec in RENDERS for cell in spec.cells}


@pytest.fixture(scope="session")
def report() -> matrix.MatrixReport:
    return matrix.run(RENDERS, REJECTIONS)


def test_plan_enumerates_the_catalog():
    runtimes = list(render.catalog("runtimes"))
    components = render.catalog("components")
    assert set(matrix.runtime_sets()) == {
        combo for n in range(1, len(runtimes) + 1) for combo in itertools.combinations(runtimes, n)
    }
    allowed = matrix.component_sets()
    # The catalog's constraints, read independently of matrix.component_set_problem:
    for combo in allowed:
        for c in combo:
            assert set(components[c]["requires"]) <= set(combo) and not set(components[c]["conflicts"]) & set(combo)
    assert ("gpu", "cpu") in matrix.component_sets(allowed=False)
    assert ("inference-pool",) in matrix.component_sets(allowed=False) and ("gpu", "inference-pool") in allowed
    # The other answers come from copier.yml's own choices.
    copier = yaml.safe_load((render.TEMPLATE_ROOT / "copier.yml").read_text())
    assert set(matrix.AXES["gitops_engine"]) == set(copier["gitops_engine"]["choices"].values())
    # A choice may carry its own validator ({value: ..., validator: ...}): its value is the answer.
    providers = {c["value"] if isinstance(c, dict) else c for c in copier["secrets_provider"]["choices"].values()}
    assert set(matrix.AXES["secrets_provider"]) == providers == {"external-secrets", "sealed-secrets", "sops", "manual"}


def test_plan_builds_every_allowed_cell_and_rejects_every_other_one():
    every = {matrix.Cell(r, c) for r in matrix.runtime_sets() for c in matrix.component_sets()}
    allowed = {cell for cell in every if matrix.cell_problem(cell.runtimes, cell.components) is None}
    built = {cell for spec in RENDERS for cell in spec.cells}
    assert built == allowed
    rejected = {rejection.id for rejection in REJECTIONS}
    assert {cell.id for cell in every - allowed} <= rejected
    assert len(rejected) == len(REJECTIONS)  # one refusal per disallowed combination, no duplicates


def test_every_kserve_release_meets_every_runtime_set():
    met = {(spec.axes["kserve_version"], spec.runtimes) for spec in RENDERS}
    assert met == set(itertools.product(releases.versions(), matrix.runtime_sets()))
    # ... and every release renders the inference-pool component (the InferencePool API is what moves).
    pooled = {spec.axes["kserve_version"] for spec in RENDERS for cell in spec.cells if "inference-pool" in cell.components}
    assert pooled == set(releases.versions())
    # Every storage variant of every runtime set is still rendered.
    assert {(s.runtimes, s.storage) for s in RENDERS} == {
        (r, v) for r in matrix.runtime_sets() for v in matrix.storage_variants(r)}


def test_each_render_carries_only_the_cells_its_deployment_mode_allows():
    """keda works in Standard mode only (components.yml `modes`): its cells ride on Standard renders, and a runtime
    set whose rows all answered Knative gets one of its renders switched (when no answer pair is lost) rather than
    a render more per cell."""
    for spec in RENDERS:
        for cell in spec.cells:
            for c in cell.components:
                assert spec.axes["deployment_mode"] in matrix.COMPONENTS[c].get("modes", [spec.axes["deployment_mode"]])
    keda = {cell for spec in RENDERS for cell in spec.cells if "keda" in cell.components}
    assert keda and {spec.axes["deployment_mode"] for spec in RENDERS for cell in spec.cells if cell in keda} == {"Standard"}


def test_a_mode_bound_cell_switches_a_render_unless_that_loses_a_pair():
    knative = {name: values[0] for name, values in matrix.AXES.items()} | {"deployment_mode": "Knative",
                                                                          "kserve_version": "v0.20"}
    groups = [(("vllm",), (), "v0.20")]
    keda_cells = {c for c in matrix.group_cells(("vllm",), ()) if "keda" in c.components}
    # Nothing else counted: the Knative render switches to Standard and carries the keda cells too.
    renders = [matrix.render_spec("a", ("vllm",), (), knative)]
    before = set(renders[0].cells)
    assert not keda_cells & before
    assert matrix.mode_bound_renders(renders, groups, {"deployment_mode": matrix.AXES["deployment_mode"]}, knative) == []
    assert renders[0].axes["deployment_mode"] == "Standard" and set(renders[0].cells) == before | keda_cells
    # The render is the only one covering (argocd, Knative): it stays, and the keda cells get a render of their own.
    renders = [matrix.render_spec("a", ("vllm",), (), knative)]
    coverage = {"deployment_mode": matrix.AXES["deployment_mode"], "gitops_engine": matrix.AXES["gitops_engine"]}
    [extra] = matrix.mode_bound_renders(renders, groups, coverage, knative)
    assert renders[0].axes["deployment_mode"] == "Knative"
    assert extra.axes["deployment_mode"] == "Standard" and set(extra.cells) == keda_cells


def test_other_answers_are_covered_pairwise_where_they_render():
    """A pair counts only where both answers shape the output: v1alpha2 answered in a render without an
    InferencePool covers nothing (the Knative-only v1alpha2 bug hid there)."""
    rows = [matrix.effective_axes(spec) for spec in RENDERS]
    axes = {**matrix.AXES, **matrix.DERIVED_AXES}
    for a, b in itertools.combinations(axes, 2):
        for va, vb in itertools.product(axes[a], axes[b]):
            if matrix.axis_pair_allowed(a, va, b, vb) and matrix.pair_renderable(a, va, b, vb):
                assert any(row.get(a) == va and row.get(b) == vb for row in rows if a in row and b in row), (a, va, b, vb)
    assert matrix.uncovered_pairs(RENDERS, axes) == set()


def test_an_answer_that_renders_nothing_covers_nothing():
    # KServe v0.16 renders v1alpha2 pools: only where an InferencePool is rendered.
    axes = {name: values[0] for name, values in matrix.AXES.items()} | {"kserve_version": "v0.16"}
    no_pool = matrix.RenderSpec("x", ("llamacpp",), (), axes,
                                [matrix.Cell(("llamacpp",), ("cpu",))])
    assert "inference_pool_api" not in matrix.effective_axes(no_pool)
    assert ("deployment_mode", "Knative", "inference_pool_api", "v1alpha2") in matrix.uncovered_pairs(
        [no_pool], {**matrix.AXES, **matrix.DERIVED_AXES})
    pool = matrix.RenderSpec("y", ("vllm",), (), axes,
                             [matrix.Cell(("vllm",), ("gpu", "inference-pool"))])
    assert matrix.effective_axes(pool)["inference_pool_api"] == "v1alpha2"


def test_the_coverage_model_matches_what_renders(tmp_path):
    """effective_axes (what the plan counts) against rendered_features (what the files show), on the render
    that carries every feature."""
    spec = next(s for s in RENDERS if s.axes["kserve_version"] == "v0.16" and
                s.axes["deployment_mode"] == "Knative" and "inference-pool" in {c for cell in s.cells for c in cell.components})
    repo = render.render(tmp_path / "repo", spec.answers())
    assert matrix.rendered_features(repo) == matrix.effective_axes(spec)


def test_the_matrix_refuses_to_run_without_its_lint_entry_point(monkeypatch):
    monkeypatch.delattr(matrix.lint, "lint_built")
    with pytest.raises(ServingOpsError, match="no lint_built"):
        matrix.run(RENDERS[:1], [])


@pytest.mark.slow
@pytest.mark.xdist_group("matrix")
@pytest.mark.parametrize("combination", list(CELLS))
def test_combination_builds_validates_and_lints(report, combination):
    [result] = [c for c in report.cells if c.id == combination]
    assert result.overlays >= 2 and result.resources > 0
    assert result.result == "valid", "\n".join(result.failures)


@pytest.mark.slow
@pytest.mark.xdist_group("matrix")
@pytest.mark.parametrize("rejection", [r.id for r in REJECTIONS])
def test_disallowed_combination_is_rejected_at_copy_time(report, rejection):
    [result] = [r for r in report.rejections if r["id"] == rejection]
    assert result["ok"], result["message"]


@pytest.mark.slow
@pytest.mark.xdist_group("matrix")
def test_matrix_summary(report):
    assert report.ok, report.failures
    assert report.summary().endswith(": all valid") and report.summary().startswith(f"{len(CELLS)} combinations, ")
    # Identical inputs were built and validated once.
    assert report.overlays_distinct < report.overlays_built and report.resources_distinct < report.resources


def test_secret_scan_finds_planted_secrets(tmp_path):
    # The matrix scans every generated file with the catalog's secret patterns; make sure the scan can fail.
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "ok.yaml").write_text("name: hf-secret\nkey: HF_TOKEN\nimage: x/y:v1@sha256:abc\n")
    assert matrix.secret_hits([tmp_path / "repo"]) == []
    (tmp_path / "repo" / "leak.yaml").write_text("token: hf_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3\n")
    (tmp_path / "repo" / "keys.env").write_text("AWS_ACCESS_KEY_ID=AKIA" + "ABCDEFGHIJKLMNOP\n")
    hits = matrix.secret_hits([tmp_path / "repo"])
    assert len(hits) == 2 and any("HuggingFace token" in h for h in hits) and any("AWS access key" in h for h in hits)


# One sample of each secret shape (assembled here, so this file holds none), planted in hidden files and folders:
# .copier-answers.yml, .sops.yaml and .github/ are generated too, and a scan that skips dot-files misses them.
PLANTED = {
    ".copier-answers.yml": ("s3_key: ASIA" + "Y3FDSNDKFHW7EXAM\n", "an AWS access key id"),
    ".sops.yaml": ("age: AGE-SECRET-KEY-1" + "QYWZ2R3LMNQ4X9" * 4 + "\n", "a private age key"),
    ".github/workflows/ci.yml": ("env: {KEY: sk-proj-" + "T3BlbkFJ" * 5 + "}\n", "an API key (sk-...)"),
    ".hidden/token.txt": ("eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiJzZXJ2aW5nIn0" + ".c2lnbmF0dXJlLXNpZ25hdHVyZQ\n",
                          "a JSON Web Token"),
    ".env": ("S3=https://admin:" + "Sup3rS3cret!@minio.example.com\n", "credentials in a URL (user:password@host)"),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_secret_scan_reads_hidden_files_and_every_shape(tmp_path, name):
    text, what = PLANTED[name]
    path = tmp_path / "repo" / name
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert matrix.secret_hits([tmp_path / "repo"]) == [f"{path}: looks like {what}"]
