"""The overlay matrix: every allowed runtime set x component set builds, validates and lints; every disallowed
combination is refused by copier. One pipeline run (session fixture) feeds one test per combination."""

from __future__ import annotations

import itertools

import pytest
import yaml

from servingops import matrix, releases, render

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
    assert set(matrix.AXES["secrets_provider"]) == set(copier["secrets_provider"]["choices"].values())


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


def test_other_answers_are_covered_pairwise():
    rows = [spec.axes for spec in RENDERS]
    for a, b in itertools.combinations(matrix.AXES, 2):
        for va, vb in itertools.product(matrix.AXES[a], matrix.AXES[b]):
            if matrix.axis_pair_allowed(a, va, b, vb):
                assert any(row[a] == va and row[b] == vb for row in rows), (a, va, b, vb)


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
    (tmp_path / "repo" / "ok.yaml").write_text("name: hf-secret\nkey: HF_TOKEN\n")
    assert matrix.secret_hits([tmp_path / "repo"]) == []
    (tmp_path / "repo" / "leak.yaml").write_text("token: hf_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3\n")
    (tmp_path / "repo" / "keys.env").write_text("AWS_ACCESS_KEY_ID=AKIA" + "ABCDEFGHIJKLMNOP\n")
    hits = matrix.secret_hits([tmp_path / "repo"])
    assert len(hits) == 2 and any("HuggingFace token" in h for h in hits) and any("AWS access key" in h for h in hits)
