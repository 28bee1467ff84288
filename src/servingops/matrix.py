"""Render and validate every overlay combination: the proof that whatever users answer builds and validates.

A *cell* is one environment: a non-empty set of runtimes x an allowed set of catalog components (both
enumerated from overlays-catalog/, never from a hand-kept list). Cells are packed into few renders: one
`copier copy` per (runtime set, storage variant) carries one environment per cell, so an answer set is
rendered once and all its component combinations are built from it. The remaining answers (GitOps engine,
secrets provider, deployment mode, ...) are covered by an all-pairs set across those renders.
Disallowed cells and answer pairs are part of the matrix too: each must be rejected by copier with a message.

The pipeline is designed for the floor (one kustomize build per distinct overlay, one schema validation per
distinct resource): renders run in a process pool, builds in a thread pool as renders finish, overlays with
identical inputs are built once, and a single kubeconform process validates each distinct resource once.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures import wait as futures_wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import lint, releases, render
from .errors import CommandError, ServingOpsError
from .schemas import DEFAULT_STORE, release_store
from .build import default_jobs, kustomization_refs, kustomize_build, split_documents
from .validate import INVALID, VALID, kubeconform_verdicts

# --- the catalog's combinations ------------------------------------------------------------------------

RUNTIMES: dict[str, dict] = render.catalog("runtimes")
COMPONENTS: dict[str, dict] = render.catalog("components")

COPIER = yaml.safe_load((render.TEMPLATE_ROOT / "copier.yml").read_text())
MODELS = render.catalog("models")["models"]
# Components that exist for a kind of model storage (s3, gated HuggingFace): selected exactly when a deployed
# model uses that storage, so the matrix varies the models to cover them.
STORAGE_COMPONENTS = tuple(c for c, spec in COMPONENTS.items() if spec.get("storage"))


def model_storage(model: dict) -> str:
    scheme = str(model.get("storageUri", "")).split("://")[0]
    return "hf-gated" if scheme == "hf" and model.get("gated") else scheme


def plain_models(runtime: str) -> list[str]:
    """The catalog's sample model of a runtime, plus a GPU one for runtimes that run on CPU or GPU."""
    models = [m for m in MODELS if m["runtime"] == runtime]
    chosen = [m["name"] for m in models if m.get("sample")]
    if RUNTIMES[runtime]["hardware"] == "any":
        chosen += [m["name"] for m in models if m.get("gpus", 0) > 0][:1]
    return chosen


def storage_model(component: str, runtime: str) -> dict[str, Any]:
    """A model of `runtime` using `component`'s storage: from the catalog, else the sample model moved there."""
    storage = COMPONENTS[component]["storage"]
    for model in MODELS:
        if model["runtime"] == runtime and model_storage(model) == storage:
            return {"catalog": model["name"]}
    sample = next(m for m in MODELS if m["runtime"] == runtime and m.get("sample"))
    # (The catalog's HuggingFace revision pins its hf:// source; a copy moved to s3:// drops it.)
    custom = {k: v for k, v in sample.items() if k not in ("title", "sample") and not (k == "revision" and storage == "s3")}
    custom["name"] = f"{sample['name'][:38]}-{component}"
    if storage == "s3":
        custom["storageUri"] = f"s3://models/{sample['name']}" + (f"/{sample['file']}" if sample.get("file") else "")
    else:
        custom["gated"] = True
    return {"custom": custom}


def question_values(name: str) -> list[Any]:
    """An answer's possible values from copier.yml, its default first."""
    question = COPIER[name]
    if question.get("type") == "bool":
        return [question["default"], not question["default"]]
    choices = question["choices"]
    values = list(choices.values()) if isinstance(choices, dict) else list(choices)
    # A choice may carry its own validator ({value: ..., validator: ...}): the value is what the answer holds.
    values = [v["value"] if isinstance(v, dict) else v for v in values]
    return sorted(values, key=lambda v: v != question["default"])


# Answers besides runtimes/models/environments that change the output, with their values (default first).
AXES: dict[str, list[Any]] = {
    name: question_values(name)
    for name in ("gitops_engine", "secrets_provider", "deployment_mode", "s3_auth", "priority_classes")
}
# A free-text answer: what changes the output is whether it is set (multi-tenant Flux) or not.
AXES["flux_service_account"] = ["", "llm-reconciler"]
# The KServe release: crossed with every runtime set (release_groups), not paired like the AXES.
RELEASE_AXIS = "kserve_version"
# What pairwise coverage counts besides the answers: the InferencePool API the release renders (v1alpha2 only
# with KServe v0.16), counted only where an InferencePool is rendered.
DERIVED_AXES: dict[str, list[Any]] = {"inference_pool_api": ["v1", "v1alpha2"]}


def axis_pair_allowed(a: str, va: Any, b: str, vb: Any) -> bool:
    """Answer pairs copier rejects (the matrix asserts that separately): SOPS needs Flux alone."""
    pair = {a: va, b: vb}
    return not (pair.get("secrets_provider") == "sops" and pair.get("gitops_engine", "flux") != "flux")


def runtime_sets() -> list[tuple[str, ...]]:
    names = list(RUNTIMES)
    return [combo for n in range(1, len(names) + 1) for combo in itertools.combinations(names, n)]


def component_sets(*, allowed: bool = True) -> list[tuple[str, ...]]:
    """Every subset of the catalog's components that respects (allowed=True) or breaks its requires/conflicts."""
    names = list(COMPONENTS)
    subsets = [combo for n in range(len(names) + 1) for combo in itertools.combinations(names, n)]
    return [s for s in subsets if (component_set_problem(s) is None) == allowed]


def component_set_problem(components: Sequence[str]) -> str | None:
    for c in components:
        for other in COMPONENTS[c]["conflicts"]:
            if other in components:
                return f"{c} and {other} conflict"
        for needed in COMPONENTS[c]["requires"]:
            if needed not in components:
                return f"{c} requires {needed}"
    return None


def deployable(runtimes: Iterable[str], components: Sequence[str]) -> set[str]:
    """Runtimes an environment can run: GPU runtimes only with the gpu component."""
    return {r for r in runtimes if RUNTIMES[r]["hardware"] != "gpu" or "gpu" in components}


def cell_problems(runtimes: Sequence[str], components: Sequence[str]) -> list[str]:
    """Every reason an environment (runtimes x components) cannot exist, by the catalog's rules."""
    problems = [p for p in [component_set_problem(components)] if p]
    here = deployable(runtimes, components)
    if not here:
        problems.append("deploys nothing")
    problems += [f"{c} acts on none of the deployed runtimes" for c in components
                 if not set(COMPONENTS[c]["runtimes"]) & here]
    return problems


def mode_allows(components: Sequence[str], mode: str) -> bool:
    """Every component works in deployment mode `mode` (the catalog's `modes`, when a component lists them)."""
    return all(mode in COMPONENTS[c].get("modes", [mode]) for c in components)


def cell_problem(runtimes: Sequence[str], components: Sequence[str]) -> str | None:
    problems = cell_problems(runtimes, components)
    return problems[0] if problems else None


def storage_runtime(component: str, runtimes: Sequence[str]) -> str | None:
    """The runtime that carries the model a storage component needs: one it acts on, deployable in the most
    environments (CPU runtimes first)."""
    candidates = [r for r in runtimes if r in COMPONENTS[component]["runtimes"]]
    return min(candidates, key=lambda r: RUNTIMES[r]["hardware"] == "gpu", default=None)


def model_hardware(runtime: str, gpus: int) -> str:
    return "gpu" if RUNTIMES[runtime]["hardware"] == "gpu" or gpus > 0 else "cpu"


# --- the plan ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    runtimes: tuple[str, ...]
    components: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{'+'.join(self.runtimes)}/{'+'.join(self.components) or 'none'}"


@dataclass
class RenderSpec:
    """One `copier copy`: a runtime set, a storage variant, other answers, and one environment per cell."""

    name: str
    runtimes: tuple[str, ...]
    storage: tuple[str, ...]
    axes: dict[str, Any]
    cells: list[Cell] = field(default_factory=list)

    def env_name(self, cell: Cell) -> str:
        return f"e{self.cells.index(cell):02d}"

    def answers(self) -> dict[str, Any]:
        catalog_models, custom = models_for(self.runtimes, self.storage)
        return {
            **self.axes,
            "runtimes": list(self.runtimes),
            "catalog_models": catalog_models,
            "custom_models": custom,
            "environments": [
                {"name": self.env_name(c), "cluster": self.env_name(c), "components": list(c.components)} for c in self.cells
            ],
        }


@dataclass
class Rejection:
    """Answers copier must refuse: the question whose validator must say so, and words its message must hold
    (the components at fault and the rule, for one of the reasons that apply), so that a refusal for some
    other reason does not count."""

    id: str
    answers: dict[str, Any]
    question: str
    why: str
    expect: list[list[str]] = field(default_factory=list)


def models_for(runtimes: Sequence[str], storage: Sequence[str]) -> tuple[list[str], list[dict]]:
    catalog_models = [m for r in runtimes for m in plain_models(r)]
    custom: list[dict] = []
    for component in storage:
        choice = storage_model(component, storage_runtime(component, runtimes))
        if "catalog" in choice:
            catalog_models.append(choice["catalog"])
        else:
            custom.append(dict(choice["custom"]))
    return catalog_models, custom


def storage_needed(runtimes: Sequence[str], storage: Sequence[str], components: Sequence[str]) -> set[str]:
    """Storage components an environment must select for the storage models it deploys."""
    here = deployable(runtimes, components)
    needed = set()
    for component in storage:
        runtime = storage_runtime(component, runtimes)
        choice = storage_model(component, runtime)
        model = choice.get("custom") or next(m for m in MODELS if m["name"] == choice["catalog"])
        gpus = model.get("gpus", 0)
        if runtime in here and (model_hardware(runtime, gpus) == "cpu" or "gpu" in components):
            needed.add(component)
    return needed


def storage_variants(runtimes: Sequence[str]) -> list[tuple[str, ...]]:
    possible = [c for c in STORAGE_COMPONENTS if storage_runtime(c, runtimes)]
    return [combo for n in range(len(possible) + 1) for combo in itertools.combinations(possible, n)]


def all_pairs(rows: int, axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """At least `rows` assignments of the axes that together cover every allowed pair of values (greedy)."""
    names = list(axes)
    uncovered = {
        (a, va, b, vb)
        for a, b in itertools.combinations(names, 2)
        for va in axes[a]
        for vb in axes[b]
        if axis_pair_allowed(a, va, b, vb)
    }
    candidates = [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]
    candidates = [c for c in candidates if all(axis_pair_allowed(a, c[a], b, c[b]) for a, b in itertools.combinations(names, 2))]

    def gain(row: dict[str, Any]) -> int:
        return sum((a, row[a], b, row[b]) in uncovered for a, b in itertools.combinations(names, 2))

    chosen: list[dict[str, Any]] = []
    while uncovered or len(chosen) < rows:
        best = max(candidates, key=lambda c: (gain(c), -candidates.index(c)))
        chosen.append(best)
        uncovered -= {(a, best[a], b, best[b]) for a, b in itertools.combinations(names, 2)}
    return chosen


def effective_axes(spec: RenderSpec) -> dict[str, Any]:
    """The answers of a render that reach its output: a pair of answers is covered only where both shape what is
    rendered (inference_pool_api with no InferencePool rendered covers nothing, however it was answered).
    `rendered_features` reads the same from the generated files, and the matrix checks that the two agree."""
    components = {c for cell in spec.cells for c in cell.components}
    axes = spec.axes
    effective = {name: axes[name] for name in ("gitops_engine", "deployment_mode", "priority_classes") if name in axes}
    if "inference-pool" in components:
        pool_api = releases.release(axes.get(RELEASE_AXIS) or releases.default_version())["inference_pool_api"]
        effective["inference_pool_api"] = pool_api.split("/")[1]
    if "s3" in components:
        effective["s3_auth"] = axes["s3_auth"]
    if "gated-hf" in components or ("s3" in components and axes["s3_auth"] == "static"):
        effective["secrets_provider"] = axes["secrets_provider"]
    if axes["gitops_engine"] in ("flux", "both"):
        effective["flux_service_account"] = axes["flux_service_account"]
    return effective


def rendered_features(repo: Path) -> dict[str, Any]:
    """What a generated repository shows of each axis, read from its files (the ground truth effective_axes
    predicts)."""
    argocd, flux = (repo / "clusters" / "argocd").is_dir(), (repo / "clusters" / "flux").is_dir()
    isvcs = "".join(p.read_text() for p in sorted(repo.glob("models/*/inferenceservice.yaml")))
    features: dict[str, Any] = {
        "gitops_engine": "both" if argocd and flux else ("flux" if flux else "argocd"),
        "deployment_mode": "Standard" if "deploymentMode: Standard" in isvcs else "Knative",
        "priority_classes": (repo / "platform" / "priorityclasses.yaml").is_file(),
    }
    pool = repo / "components" / "inference-pool" / "inferencepool.yaml"
    if pool.is_file():
        features["inference_pool_api"] = "v1" if "inference.networking.k8s.io/v1" in pool.read_text() else "v1alpha2"
    s3_account = repo / "components" / "s3" / "serviceaccount-s3.yaml"
    if s3_account.is_file():
        features["s3_auth"] = "static" if "secrets:" in s3_account.read_text() else "keyless"
    if list(repo.glob("components/*/externalsecret-*.yaml")):
        features["secrets_provider"] = "external-secrets"
    elif (repo / ".sops.yaml").is_file():
        features["secrets_provider"] = "sops"
    elif (repo / "secrets").is_dir():
        features["secrets_provider"] = "sealed-secrets"
    elif ((yaml.safe_load((repo / ".servingops.yaml").read_text()) or {}).get("lint") or {}).get("externalSecrets"):
        features["secrets_provider"] = "manual"  # secrets the repo references but never holds
    if flux:
        accounts = sorted({line.split(":", 1)[1].strip() for f in repo.glob("clusters/flux/*/*/platform.yaml")
                           for line in f.read_text().splitlines() if line.strip().startswith("serviceAccountName:")})
        features["flux_service_account"] = accounts[0] if accounts else ""
    return {name: value for name, value in features.items() if name in AXES or name in DERIVED_AXES}


def uncovered_pairs(renders: Sequence[RenderSpec], axes: dict[str, list[Any]]) -> set[tuple[str, Any, str, Any]]:
    """Allowed pairs of answer values that no render renders together."""
    rows = [effective_axes(spec) for spec in renders]
    return {
        (a, va, b, vb)
        for a, b in itertools.combinations(axes, 2)
        for va in axes[a]
        for vb in axes[b]
        if axis_pair_allowed(a, va, b, vb) and pair_renderable(a, va, b, vb)
        and not any(row.get(a, object()) == va and row.get(b, object()) == vb for row in rows)
    }


def covered_pairs(spec: RenderSpec) -> set[tuple[str, Any, str, Any]]:
    row = effective_axes(spec)
    names = [name for name in {**AXES, **DERIVED_AXES} if name in row]
    return {(a, row[a], b, row[b]) for a, b in itertools.combinations(names, 2)}


def pair_renderable(a: str, va: Any, b: str, vb: Any) -> bool:
    """Can any render show both values? (flux_service_account only exists with a Flux engine.)"""
    pair = {a: va, b: vb}
    return not ("flux_service_account" in pair and pair.get("gitops_engine") == "argocd")


def release_groups(releases_axis: Sequence[str]) -> list[tuple[tuple[str, ...], tuple[str, ...], str]]:
    """(runtime set, storage variant, KServe release) for every render: every runtime set meets every release
    (its storage variants take the releases in turn; a set with fewer variants than releases repeats its plain
    one), and every storage variant is rendered."""
    groups = []
    for runtimes in runtime_sets():
        variants = storage_variants(runtimes)
        variants += [variants[0]] * (len(releases_axis) - len(variants))
        groups += [(runtimes, storage, releases_axis[i % len(releases_axis)]) for i, storage in enumerate(variants)]
    return groups


def plan(axes: Sequence[str] | None = None, *, exhaustive: bool = False) -> tuple[list[RenderSpec], list[Rejection]]:
    """Every render (with its cells) and every rejection the matrix runs."""
    varied = {name: values for name, values in AXES.items() if axes is None or name in axes}
    fixed = {name: values[0] for name, values in AXES.items() if name not in varied}
    # The KServe release is the one answer crossed with every runtime set (what it changes: the vLLM image, the
    # InferencePool API, the CRDs to validate against); `--axes` without kserve_version keeps the default.
    releases_axis = releases.versions() if axes is None or RELEASE_AXIS in axes else [releases.default_version()]
    groups = release_groups(releases_axis)
    if exhaustive:
        keys = list(varied)
        rows = [dict(zip(keys, v)) for v in itertools.product(*varied.values())]
        rows = [r for r in rows if all(axis_pair_allowed(a, r[a], b, r[b]) for a, b in itertools.combinations(keys, 2))]
        assignments = [(g, row) for g in groups for row in rows]
    else:
        rows = all_pairs(len(groups), varied) if varied else [{}] * len(groups)
        assignments = [(groups[i % len(groups)], row) for i, row in enumerate(rows)]
    renders = []
    for index, ((runtimes, storage, release), row) in enumerate(assignments):
        renders.append(render_spec(f"r{index:03d}", runtimes, storage, {**fixed, **row, RELEASE_AXIS: release}))
    coverage = {**varied, **DERIVED_AXES}
    renders += mode_bound_renders(renders, groups, coverage, {**fixed, **rows[0], RELEASE_AXIS: releases_axis[0]})
    # Pairs whose answers were given where they render nothing: more renders (every runtime and storage, one
    # environment with the most components the render's mode allows, so every answer renders), chosen greedily
    # until each allowed pair is rendered somewhere.
    runtimes, storage = tuple(RUNTIMES), storage_variants(tuple(RUNTIMES))[-1]
    richest = {mode: max((c for c in group_cells(runtimes, storage) if mode_allows(c.components, mode)),
                         key=lambda c: len(c.components)) for mode in AXES["deployment_mode"]}
    candidates = [{**fixed, **row, RELEASE_AXIS: release} for row in
                  (dict(zip(varied, values)) for values in itertools.product(*varied.values()))
                  if all(axis_pair_allowed(a, row[a], b, row[b]) for a, b in itertools.combinations(row, 2))
                  for release in releases_axis]
    while missing_pairs := uncovered_pairs(renders, coverage):
        def gain(row: dict[str, Any]) -> int:
            trial = RenderSpec("", runtimes, storage, row, [richest[row["deployment_mode"]]])
            return len(missing_pairs & covered_pairs(trial))
        best = max(candidates, key=gain)
        renders.append(RenderSpec(f"r{len(renders):03d}", runtimes, storage, best, [richest[best["deployment_mode"]]]))
    return renders, rejections()


def mode_bound_renders(renders: list[RenderSpec], groups, coverage: dict[str, list[Any]],
                       default_axes: dict[str, Any]) -> list[RenderSpec]:
    """Cells of mode-bound components (keda: Standard only) whose runtime set and storage got no render in a mode
    that allows them. A render of theirs switches to such a mode when it keeps every cell it carried and every
    answer pair it covered (renders[] is updated in place); otherwise they get one more render of their own."""
    extra: list[RenderSpec] = []
    for runtimes, storage in dict.fromkeys((g[0], g[1]) for g in groups):
        built = {cell for spec in renders + extra if (spec.runtimes, spec.storage) == (runtimes, storage)
                 for cell in spec.cells}
        missing = [cell for cell in group_cells(runtimes, storage) if cell not in built]
        for mode in AXES["deployment_mode"]:
            cells = [cell for cell in missing if mode_allows(cell.components, mode)]
            if not cells:
                continue
            missing = [cell for cell in missing if cell not in cells]
            uncovered = uncovered_pairs(renders, coverage)
            for i, spec in enumerate(renders):
                if (spec.runtimes, spec.storage) != (runtimes, storage) or spec.axes["deployment_mode"] == mode:
                    continue
                switched = render_spec(spec.name, runtimes, storage, {**spec.axes, "deployment_mode": mode})
                trial = renders[:i] + [switched] + renders[i + 1:]
                if set(spec.cells) <= set(switched.cells) and uncovered_pairs(trial, coverage) <= uncovered:
                    renders[i] = switched
                    break
            else:
                extra.append(RenderSpec(f"r{len(renders) + len(extra):03d}", runtimes, storage,
                                        {**default_axes, "deployment_mode": mode}, cells))
    return extra


def render_spec(name: str, runtimes: tuple[str, ...], storage: tuple[str, ...], axes: dict[str, Any]) -> RenderSpec:
    """A render of (runtimes, storage) with every allowed cell its deployment mode allows."""
    cells = [c for c in group_cells(runtimes, storage) if mode_allows(c.components, axes["deployment_mode"])]
    return RenderSpec(name, runtimes, storage, axes, cells)


def group_cells(runtimes: tuple[str, ...], storage: tuple[str, ...]) -> list[Cell]:
    """The allowed cells of (runtimes, storage): every component set the catalog allows whose storage components
    are exactly those the storage variant's models need."""
    return [Cell(runtimes, components) for components in component_sets()
            if cell_problem(runtimes, components) is None
            and storage_needed(runtimes, storage, components) == set(components) & set(STORAGE_COMPONENTS)]


def rejections() -> list[Rejection]:
    """Every disallowed cell and answer pair, as answers copier must refuse."""
    out = []
    everything = tuple(RUNTIMES)
    for runtimes in runtime_sets():
        for components in component_sets():
            if problems := cell_problems(runtimes, components):
                out.append(_rejected_cell(runtimes, components, problems))
    for components in component_sets(allowed=False):
        out.append(_rejected_cell(everything, components, cell_problems(everything, components)))
    for component, spec in COMPONENTS.items():  # a mode-bound component in every other mode
        for mode in [m for m in AXES["deployment_mode"] if m not in spec.get("modes", AXES["deployment_mode"])]:
            cell = next(Cell(r, c) for r in runtime_sets() for c in component_sets()
                        if component in c and cell_problem(r, c) is None)
            storage = tuple(c for c in STORAGE_COMPONENTS if c in cell.components and storage_runtime(c, cell.runtimes))
            catalog_models, custom = models_for(cell.runtimes, storage)
            out.append(Rejection(
                f"{cell.id}/{mode}",
                {"runtimes": list(cell.runtimes), "catalog_models": catalog_models, "custom_models": custom,
                 "deployment_mode": mode,
                 "environments": [{"name": "env", "cluster": "env", "components": list(cell.components)}]},
                "environments", f"{component} works in deployment_mode {'/'.join(spec['modes'])} only",
                [[component, "deployment_mode"]],
            ))
    sops = {"secrets_provider": "sops", "catalog_models": ["llama-70b"], "runtimes": ["vllm"],
            "environments": [{"name": "gpu", "cluster": "gpu", "components": ["gpu", "gated-hf"]}]}
    for engine in AXES["gitops_engine"]:
        if not axis_pair_allowed("secrets_provider", "sops", "gitops_engine", engine):
            # Refused by the sops choice's own validator (gitops_engine is asked first).
            out.append(Rejection(f"sops/{engine}", {**sops, "gitops_engine": engine}, "secrets_provider",
                                 "SOPS needs Flux", [["gitops_engine", "flux", "SOPS"]]))
    return out


def _rejected_cell(runtimes: tuple[str, ...], components: tuple[str, ...], problems: list[str]) -> Rejection:
    storage = tuple(c for c in STORAGE_COMPONENTS if c in components and storage_runtime(c, runtimes))
    catalog_models, custom = models_for(runtimes, storage)
    def words(problem: str) -> list[str]:
        rule = next(word for word in ("conflict", "requires", "acts on", "deploys nothing") if word in problem)
        return [c for c in COMPONENTS if c in problem.split()] + [rule]

    # A deployment mode the components work in (keda: Standard), so that copier refuses the cell for its own fault.
    mode = next((m for m in AXES["deployment_mode"] if mode_allows(components, m)), AXES["deployment_mode"][0])
    return Rejection(
        Cell(runtimes, components).id,
        {"runtimes": list(runtimes), "catalog_models": catalog_models, "custom_models": custom,
         "deployment_mode": mode,
         "environments": [{"name": "env", "cluster": "env", "components": list(components)}]},
        "environments",
        "; ".join(problems),
        [words(p) for p in problems],
    )


# --- running it ----------------------------------------------------------------------------------------


@dataclass
class CellResult:
    id: str
    render: str
    environment: str
    overlays: int = 0
    resources: int = 0
    result: str = "pending"
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


@dataclass
class MatrixReport:
    cells: list[CellResult] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    renders: list[dict[str, Any]] = field(default_factory=list)
    overlays_built: int = 0
    overlays_distinct: int = 0
    resources: int = 0
    resources_distinct: int = 0
    wall_seconds: float = 0.0
    coverage: str = ""
    workdir: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and all(c.result == VALID for c in self.cells) and all(r["ok"] for r in self.rejections)

    def summary(self) -> str:
        head = f"{len(self.cells)} combinations, {self.overlays_built} overlays, {self.resources} resources"
        if self.ok:
            return f"{head}: all valid"
        bad = sum(c.result != VALID for c in self.cells) + sum(not r["ok"] for r in self.rejections) + len(self.failures)
        return f"{head}: {bad} failed"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "summary": self.summary()}


def _render_one(template: str, spec_answers: dict[str, Any], dst: str) -> float:
    render.batch_mode()  # this worker renders many times
    start = time.perf_counter()
    render.render(Path(dst), spec_answers, template=template, vcs_ref=None)
    return time.perf_counter() - start


def _reject_one(template: str, answers: dict[str, Any], question: str, expect: list[list[str]]) -> tuple[bool, str]:
    """Run copier; True when it refused in one line naming `question` and one of the `expect`ed reasons (all of
    its words), writing nothing."""
    render.batch_mode()
    with tempfile.TemporaryDirectory(prefix="servingops-reject-") as tmp:
        dst = Path(tmp) / "repo"
        try:
            render.render(dst, answers, template=template, vcs_ref=None)
        except ValueError as exc:
            message = str(exc)
            written = dst.exists()
            # copier names the question ("question 'X'"), or the answer for a choice's own validator ("for 'X'")
            named = f"question '{question}'" in message or f"Invalid choice for '{question}'" in message
            ok = named and "\n" not in message and not written
            ok = ok and any(all(word in message for word in reason) for reason in expect)
            return ok, message + (" (and the destination was written)" if written else "")
        return False, "copier accepted the answers"


def overlay_digest(folder: Path, root: Path) -> str:
    """Hash of everything a kustomize build of `folder` reads (paths relative to the repo `root`):
    overlays with equal digests build to equal output, so each distinct one is built once."""
    digest = hashlib.sha256()
    root, seen, todo = root.resolve(), set(), [folder.resolve()]
    while todo:
        current = todo.pop()
        if current in seen or not current.exists():
            continue
        seen.add(current)
        if current.is_file():
            digest.update(f"{current.relative_to(root)}\0".encode() + current.read_bytes())
            continue
        todo.extend(p for p in current.iterdir() if p.is_file())
        todo.extend(kustomization_refs(current))
    return digest.hexdigest()


def synced_overlays(repo: Path) -> list[Path]:
    """What a generated repo syncs: every environment layer overlay and every GitOps entry point."""
    found = sorted(p.parent for p in repo.glob("environments/*/*/kustomization.yaml"))
    found += sorted(p.parent for p in repo.glob("clusters/argocd/kustomization.yaml"))
    found += sorted(p.parent for p in repo.glob("clusters/flux/*/*/kustomization.yaml"))
    return found


class Progress:
    """A progress bar on a terminal, a plain line every 10% in logs (CI)."""

    def __init__(self, label: str, total: int, stream=sys.stderr) -> None:
        self.label, self.total, self.done, self.stream = label, total, 0, stream
        self.tty = stream.isatty()
        self.last_decile = -1

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.tty:
            filled = int(30 * self.done / max(1, self.total))
            self.stream.write(f"\r{self.label:9} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}")
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif (decile := 10 * self.done // max(1, self.total)) != self.last_decile:
            self.last_decile = decile
            print(f"{self.label}: {self.done}/{self.total}", file=self.stream, flush=True)


def run(
    renders: Sequence[RenderSpec],
    rejects: Sequence[Rejection] = (),
    *,
    jobs: int | None = None,
    workdir: Path | None = None,
    store_dir: Path = DEFAULT_STORE,
    lint: bool = True,
    progress_stream=sys.stderr,
) -> MatrixReport:
    jobs = jobs or default_jobs()
    if lint:
        lint_entry_point()  # before any work: a matrix that cannot lint must not pass as one that did
    started = time.perf_counter()
    report = MatrixReport()
    # One schema store per KServe release: each render validates against its release's CRDs.
    used = sorted({spec.axes.get(RELEASE_AXIS) or releases.default_version() for spec in renders})
    store = {version: release_store(version, store_dir) for version in used}
    own_workdir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="servingops-matrix-")) if own_workdir else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    with render.template_snapshot() as template:
        _run(renders, rejects, report, str(template), workdir, store, jobs, lint, progress_stream)
    report.wall_seconds = round(time.perf_counter() - started, 2)
    if own_workdir and report.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        report.workdir = str(workdir)
    return report


def _run(renders, rejects, report, template, workdir, store, jobs, lint_enabled, stream) -> None:
    built: dict[str, Future] = {}  # overlay digest -> build future (identical inputs are built once)
    digests: dict[tuple[str, Path], str] = {}  # (render, overlay) -> digest
    build_seconds: dict[str, float] = {}
    checked = Checked(release_of={spec.name: spec.axes.get(RELEASE_AXIS) or releases.default_version() for spec in renders})
    render_progress = Progress("render", len(renders) + len(rejects), stream)
    check_progress = Progress("check", len(renders), stream)  # built, parsed, scanned and linted
    with ProcessPoolExecutor(max_workers=jobs) as processes, ThreadPoolExecutor(max_workers=jobs) as threads:
        pending: dict[Future, RenderSpec] = {
            processes.submit(_render_one, template, spec.answers(), str(workdir / spec.name)): spec for spec in renders
        }
        reject_futures = {processes.submit(_reject_one, template, r.answers, r.question, r.expect): r for r in rejects}
        # A render's overlays, (render, overlay) keys: parsed, scanned and linted once all of them are built.
        waiting: dict[str, tuple[RenderSpec, list[tuple[str, Path]]]] = {}
        while pending or waiting:
            for future in [f for f in pending if f.done()]:
                spec = pending.pop(future)
                render_progress.step()
                if (keys := _rendered(spec, future, report, workdir, built, digests, build_seconds, threads)) is not None:
                    waiting[spec.name] = (spec, keys)
            # A render whose builds are all done is checked here, while the other renders and builds go on.
            for name in [n for n, (_, keys) in waiting.items() if all(built[digests[k]].done() for k in keys)]:
                spec, keys = waiting.pop(name)
                checked.add(spec, {k: built[digests[k]].result() for k in keys}, workdir, lint_enabled)
                check_progress.step()
            running = [f for f in [*pending, *(built[digests[k]] for _, keys in waiting.values() for k in keys)]
                       if not f.done()]
            if running:
                futures_wait(running, return_when=FIRST_COMPLETED)
        for future in as_completed(reject_futures):
            rejection = reject_futures[future]
            render_progress.step()
            ok, message = future.result()
            report.rejections.append({"id": rejection.id, "why": rejection.why, "ok": ok, "message": message,
                                      "answers": rejection.answers})
    report.overlays_built = len(digests)
    report.overlays_distinct = len(built)
    report.failures += checked.secret_hits
    outputs = {key: built[digest].result() for key, digest in digests.items()}
    _validate_and_collect(renders, report, outputs, digests, build_seconds, workdir, store, jobs, checked)


def _rendered(spec, future, report, workdir, built, digests, build_seconds, threads) -> list[tuple[str, Path]] | None:
    """A finished render: recorded, its coverage checked, and each overlay it syncs built (once per digest); its
    (render, overlay) keys, None when copier failed."""
    try:
        seconds = future.result()
    except Exception as exc:  # a render that fails is a matrix failure, with the answers to reproduce it
        report.failures.append(f"{spec.name}: copier failed: {str(exc).splitlines()[-1]}; answers: {json.dumps(spec.answers())}")
        return None
    report.renders.append({"name": spec.name, "runtimes": list(spec.runtimes), "storage": list(spec.storage),
                           "axes": spec.axes, "environments": len(spec.cells), "seconds": round(seconds, 2)})
    # Pairwise coverage counts what renders: the files must show exactly the answers the plan counted.
    shown, counted = rendered_features(workdir / spec.name), effective_axes(spec)
    if shown != counted:
        report.failures.append(f"{spec.name}: the rendered repo shows {shown}, the coverage counted {counted}")
    keys = []
    for overlay in synced_overlays(workdir / spec.name):
        key = overlay_digest(overlay, workdir / spec.name)
        if key not in built:
            built[key] = threads.submit(_timed_build, overlay, build_seconds, key)
        digests[(spec.name, overlay)] = key
        keys.append((spec.name, overlay))
    return keys


@dataclass
class Checked:
    """What the matrix learns from each render once its builds are done: its distinct resources (for one
    kubeconform pass per release at the end), each overlay's parsed documents, lint findings, secret hits."""

    release_of: dict[str, str]
    documents: dict[tuple[str, str], str] = field(default_factory=dict)  # (release, sha256) -> document text
    per_overlay: dict[tuple[str, Path], list[tuple[tuple[str, str], dict]]] = field(default_factory=dict)
    lint_findings: dict[tuple[str, Path], list[str]] = field(default_factory=lambda: defaultdict(list))
    secret_hits: list[str] = field(default_factory=list)
    parsed: dict[str, Any] = field(default_factory=dict)  # document text -> parsed: each distinct one constructed once

    def add(self, spec: RenderSpec, outputs: dict[tuple[str, Path], str | CommandError], workdir: Path,
            lint_enabled: bool) -> None:
        for key, output in outputs.items():
            if isinstance(output, CommandError):
                continue
            self.per_overlay[key] = []
            for parsed, text in split_documents(output, self.parsed):
                d = (self.release_of[spec.name], hashlib.sha256(text.encode()).hexdigest())
                self.documents.setdefault(d, text)
                self.per_overlay[key].append((d, parsed))
        self.secret_hits += secret_hits([workdir / spec.name])
        if lint_enabled:
            docs = {str(overlay): [doc for _, doc in self.per_overlay[(name, overlay)]]
                    for name, overlay in outputs if (name, overlay) in self.per_overlay}
            for finding in lint_entry_point()(docs, workdir / spec.name).findings:
                self.lint_findings[(spec.name, Path(finding.target))].append(f"{finding.rule}: {finding.message}")


SECRET_PATTERNS = render.secret_patterns()


def secret_hits(repos: Iterable[Path]) -> list[str]:
    """Every file of every rendered repo scanned for anything that looks like a secret: there must be none."""
    hits = []
    for repo in repos:
        for path in sorted(p for p in repo.rglob("*") if p.is_file()):
            text = path.read_text(errors="replace")
            hits += [f"{path}: looks like {what}" for pattern, what in SECRET_PATTERNS if pattern.search(text)]
    return hits


def _timed_build(overlay: Path, seconds: dict[str, float], key: str) -> str | CommandError:
    start = time.perf_counter()
    try:
        return kustomize_build(overlay)
    except CommandError as exc:
        return exc
    finally:
        seconds[key] = time.perf_counter() - start


def _validate_and_collect(renders, report, outputs, digests, build_seconds, workdir, stores, jobs, checked) -> None:
    documents, per_overlay, lint_findings = checked.documents, checked.per_overlay, checked.lint_findings
    verdicts = {}
    with ThreadPoolExecutor(max_workers=max(1, len(stores))) as threads:  # one kubeconform per release, at once
        ordered = {version: [d for d in documents if d[0] == version] for version in stores}
        results = {version: threads.submit(kubeconform_verdicts, [documents[d] for d in ordered[version]], store,
                                           jobs=jobs) for version, store in stores.items()}
        for version, future in results.items():
            verdicts.update(zip(ordered[version], future.result()))
    report.resources = sum(len(v) for v in per_overlay.values())
    report.resources_distinct = len(documents)
    for spec in renders:
        repo = workdir / spec.name
        for cell in spec.cells:
            env = spec.env_name(cell)
            result = CellResult(f"{cell.id}/{spec.axes.get('gitops_engine', 'argocd')}/"
                                f"{spec.axes.get(RELEASE_AXIS, releases.default_version())}/{spec.name}", spec.name, env)
            mine = [repo / "environments" / env / "platform", repo / "environments" / env / "models",
                    repo / "clusters" / "argocd"]
            mine += [k.parent for k in (repo / "clusters" / "flux" / env).glob("*/kustomization.yaml")]
            for overlay in mine:
                key = (spec.name, overlay)
                if key not in outputs:
                    if overlay.parent.name == "environments" or "environments" in overlay.parts:
                        result.failures.append(f"{overlay.relative_to(workdir)}: not generated")
                    continue
                result.overlays += 1
                result.seconds += build_seconds.get(digests[key], 0.0)
                where = overlay.relative_to(workdir)
                if isinstance(outputs[key], CommandError):
                    result.failures.append(f"{where}: {outputs[key]}")
                    continue
                for doc_digest, doc in per_overlay[key]:
                    result.resources += 1
                    verdict = verdicts[doc_digest]
                    if verdict.status != VALID:
                        meta = doc.get("metadata") or {}
                        result.failures.append(f"{where}: {doc.get('kind')} {meta.get('name')}: {verdict.message}")
                result.failures += [f"{where}: lint {finding}" for finding in lint_findings.get(key, [])]
            result.result = VALID if not result.failures else INVALID
            result.seconds = round(result.seconds, 3)
            if result.failures:
                result.failures.append(f"reproduce with copier copy --defaults --data-file answers.yml, answers: {json.dumps(spec.answers())}")
            report.cells.append(result)


def lint_entry_point() -> Any:
    """lint's entry point for built output. A renamed or missing one is an error, never a matrix without lint."""
    entry = getattr(lint, "lint_built", None)
    if not callable(entry):
        raise ServingOpsError("servingops.lint has no lint_built(outputs, repo): the matrix cannot lint what it "
                              "builds; restore the entry point (or run with --no-lint to skip lint on purpose)")
    return entry


# --- CLI -------------------------------------------------------------------------------------------------


def print_table(report: MatrixReport, stream=sys.stdout) -> None:
    width = max((len(c.id) for c in report.cells), default=20)
    print(f"{'combination':{width}}  overlays  resources  result   build s", file=stream)
    for cell in sorted(report.cells, key=lambda c: c.id):
        print(f"{cell.id:{width}}  {cell.overlays:8}  {cell.resources:9}  {cell.result:7}  {cell.seconds:7.2f}", file=stream)
    rejected = sum(r["ok"] for r in report.rejections)
    print(f"{rejected}/{len(report.rejections)} disallowed combinations rejected by copier with a message", file=stream)


def cmd_matrix(args: argparse.Namespace) -> int:
    axes = args.axes.split(",") if args.axes else None
    unknown = set(axes or []) - set(AXES) - {RELEASE_AXIS}
    if unknown:
        raise ServingOpsError(f"--axes: unknown axis {', '.join(sorted(unknown))}: choose from "
                              f"{', '.join([RELEASE_AXIS, *AXES])}")
    renders, rejects = plan(axes, exhaustive=args.exhaustive)
    coverage = "exhaustive" if args.exhaustive else "all-pairs"
    used = sorted({r.axes[RELEASE_AXIS] for r in renders}, reverse=True)
    print(f"matrix: {sum(len(r.cells) for r in renders)} combinations in {len(renders)} renders "
          f"(runtime sets x component sets exhaustive, each runtime set at KServe {', '.join(used)}; other "
          f"answers {coverage} over {', '.join(a for a in (axes or AXES) if a != RELEASE_AXIS)}), "
          f"{len(rejects)} disallowed combinations", file=sys.stderr)
    report = run(renders, rejects, jobs=args.jobs, lint=not args.no_lint)
    report.coverage = coverage
    print_table(report)
    for cell in report.cells:
        for line in cell.failures:
            print(f"FAIL {cell.id}: {line}")
    for rejection in report.rejections:
        if not rejection["ok"]:
            print(f"FAIL {rejection['id']}: expected a rejection ({rejection['why']}): {rejection['message']}; "
                  f"answers: {json.dumps(rejection['answers'])}")
    for line in report.failures:
        print(f"FAIL {line}")
    if args.report:
        args.report.write_text(json.dumps(report.to_json(), indent=1, default=str))
    print(report.summary())
    return 0 if report.ok else 1


def add_parser(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser("matrix", help="render, build and validate every overlay combination")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="parallel workers (default: %(default)s)")
    parser.add_argument("--axes", help="answers to vary besides runtimes x components (default: all of "
                        f"{','.join([RELEASE_AXIS, *AXES])}; without {RELEASE_AXIS}: the default release only)")
    parser.add_argument("--exhaustive", action="store_true", help="every combination of the axes instead of all-pairs")
    parser.add_argument("--report", type=Path, help="write the full report as JSON")
    parser.add_argument("--no-lint", action="store_true", help="skip servingops lint on the built overlays")
    parser.set_defaults(func=cmd_matrix)
