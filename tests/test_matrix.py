"""The overlay matrix: every allowed runtime set x component set builds, validates and lints; every disallowed
combination is refused by copier. One pipeline run (session fixture) feeds one test per combination."""

from __future__ import annotations

import itertools

import pytest
import yaml

from servingops import matrix, render
from servingops.errors import ServingOpsError

RENDERS, REJECTIONS = matrix.plan()
CELLS = {f"{cell.id}/{spec.axes['gitops_engine']}/{spec.name}": cell for spec in RENDERS for cell in spec.cells}


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
    assert set(matrix.AXES["secrets_provider"]) == set(copier["secrets_provider"]["choices"].values())


def test_plan_builds_every_allowed_cell_and_rejects_every_other_one():
    every = {matrix.Cell(r, c) for r in matrix.runtime_sets() for c in matrix.component_sets()}
    allowed = {cell for cell in every if matrix.cell_problem(cell.runtimes, cell.components) is None}
    built = {cell for spec in RENDERS for cell in spec.cells}
    assert built == allowed
    rejected = {rejection.id for rejection in REJECTIONS}
    assert {cell.id for cell in every - allowed} <= rejected
    assert len(rejected) == len(REJECTIONS)  # one refusal per disallowed combination, no duplicates


def test_other_answers_are_covered_pairwise_where_they_render():
    """A pair counts only where both answers shape the output: v1alpha2 answered in a render without an
    InferencePool covers nothing (the Knative-only v1alpha2 bug hid there)."""
    rows = [matrix.effective_axes(spec) for spec in RENDERS]
    for a, b in itertools.combinations(matrix.AXES, 2):
        for va, vb in itertools.product(matrix.AXES[a], matrix.AXES[b]):
            if matrix.axis_pair_allowed(a, va, b, vb) and matrix.pair_renderable(a, va, b, vb):
                assert any(row.get(a) == va and row.get(b) == vb for row in rows if a in row and b in row), (a, va, b, vb)
    assert matrix.uncovered_pairs(RENDERS, matrix.AXES) == set()


def test_an_answer_that_renders_nothing_covers_nothing():
    axes = {name: values[0] for name, values in matrix.AXES.items()}
    keyless = matrix.RenderSpec("x", ("llamacpp",), (), {**axes, "s3_auth": "keyless"},
                                [matrix.Cell(("llamacpp",), ("cpu",))])
    assert "s3_auth" not in matrix.effective_axes(keyless)
    assert ("deployment_mode", axes["deployment_mode"], "s3_auth", "keyless") in matrix.uncovered_pairs(
        [keyless], matrix.AXES)
    s3 = matrix.RenderSpec("y", ("llamacpp",), ("s3",), {**axes, "s3_auth": "keyless"},
                           [matrix.Cell(("llamacpp",), ("cpu", "s3"))])
    assert matrix.effective_axes(s3)["s3_auth"] == "keyless"


def test_the_coverage_model_matches_what_renders(tmp_path):
    """effective_axes (what the plan counts) against rendered_features (what the files show), on the render
    that carries every feature."""
    spec = next(s for s in RENDERS if len(matrix.effective_axes(s)) == len(matrix.AXES))
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
