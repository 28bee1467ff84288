"""Helpers for scripts/mutation that work on a cosmic-ray session database (build/mutation/*.sqlite).

  annotations SESSION      mark the mutants inside type annotations skipped: the modules start with
                           `from __future__ import annotations`, so Python never evaluates them (equivalent mutants)
  sample SESSION N SEED    keep a uniform random sample of N pending mutants, mark the others skipped
  rerun SESSION            make the survivors pending again (after new tests: `cosmic-ray exec` runs only them)
  summary SESSION [SECS]   mutants run, killed, survived, score (with a 95 % interval when sampled), survivors

The sample is reproducible: the mutants are sorted by where and how they mutate (cosmic-ray's job ids are random
uuids) before `random.Random(SEED)` draws from them.
"""

from __future__ import annotations

import ast
import math
import random
import sys

from cosmic_ray.work_db import WorkDB, WorkResultStorage, use_db
from pathlib import Path

from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

SKIPPED_BY_SAMPLE = "not in the sample"
SKIPPED_ANNOTATION = "in a type annotation, never evaluated"


def _key(item):
    return [(str(m.module_path), m.start_pos, m.end_pos, m.operator_name, m.occurrence) for m in item.mutations]


def _annotation_spans(tree: ast.AST):
    for node in ast.walk(tree):
        notes = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            notes.append(node.returns)
        elif isinstance(node, ast.arg):
            notes.append(node.annotation)
        elif isinstance(node, ast.AnnAssign):
            notes.append(node.annotation)
        for note in notes:
            if note is not None:
                yield (note.lineno, note.col_offset), (note.end_lineno, note.end_col_offset)


def annotations(session: str) -> None:
    with use_db(session, WorkDB.Mode.open) as db:
        pending = db.pending_work_items
        spans: dict[Path, list] = {}
        inside = []
        for item in pending:
            spec = item.mutations[0]
            if spec.module_path not in spans:
                source = spec.module_path.read_text()
                tree = ast.parse(source)
                future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                             and any(a.name == "annotations" for a in n.names) for n in tree.body)
                spans[spec.module_path] = list(_annotation_spans(tree)) if future else []
            if any(start <= tuple(spec.start_pos) and tuple(spec.end_pos) <= end
                   for start, end in spans[spec.module_path]):
                inside.append(item.job_id)
        db.set_multiple_results(inside, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output=SKIPPED_ANNOTATION))
        print(f"annotations: {len(inside)} of {len(pending)} pending mutants are in type annotations, skipped")


def sample(session: str, size: int, seed: int) -> None:
    with use_db(session, WorkDB.Mode.open) as db:
        pending = sorted(db.pending_work_items, key=_key)
        if size >= len(pending):
            print(f"sample: all {len(pending)} pending mutants run (MUTATION_SAMPLE={size})")
            return
        chosen = {item.job_id for item in random.Random(seed).sample(pending, size)}
        left_out = [item.job_id for item in pending if item.job_id not in chosen]
        db.set_multiple_results(left_out, WorkResult(
            worker_outcome=WorkerOutcome.SKIPPED, output=f"{SKIPPED_BY_SAMPLE} (N={size}, seed={seed})"))
        print(f"sample: {size} of {len(pending)} pending mutants (seed {seed}); {len(left_out)} marked skipped")


def rerun(session: str) -> None:
    with use_db(session, WorkDB.Mode.open) as db:
        with db._session_maker.begin() as s:  # cosmic-ray has no public "forget a result"
            count = s.query(WorkResultStorage).filter(
                WorkResultStorage.test_outcome == TestOutcome.SURVIVED).delete(synchronize_session=False)
        print(f"rerun: {count} survivors pending again")


def wilson(killed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sound for small samples and scores near 100 %)."""
    if n == 0:
        return 0.0, 1.0
    p = killed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summary(session: str, seconds: int | None = None) -> None:
    with use_db(session, WorkDB.Mode.open) as db:
        total = db.num_work_items
        done = db.completed_work_items
    outcomes = [result for _, result in done]
    sampled = any(r.worker_outcome == WorkerOutcome.SKIPPED and (r.output or "").startswith(SKIPPED_BY_SAMPLE)
                  for r in outcomes)
    skipped = sum(r.worker_outcome == WorkerOutcome.SKIPPED for r in outcomes)
    in_annotations = sum(r.output == SKIPPED_ANNOTATION for r in outcomes)
    run = [r for r in outcomes if r.worker_outcome == WorkerOutcome.NORMAL]
    errors = [r for r in outcomes if r.worker_outcome not in (WorkerOutcome.NORMAL, WorkerOutcome.SKIPPED)]
    survived = [(item, r) for item, r in done if r.test_outcome == TestOutcome.SURVIVED]
    incompetent = sum(r.test_outcome == TestOutcome.INCOMPETENT for r in run)
    killed = len(run) - len(survived)
    pending = total - len(outcomes)
    score = killed / len(run) if run else 0.0
    line = (f"{total} mutants, {len(run)} run, {killed} killed ({incompetent} incompetent), {len(survived)} survived, "
            f"{skipped} skipped ({in_annotations} in type annotations), {pending} pending, {len(errors)} worker errors; score {score:.1%}")
    if sampled and run:
        low, high = wilson(killed, len(run))
        line += f" (95 % CI {low:.1%}-{high:.1%}, sample of {len(run)})"
    if seconds is not None and run:
        line += f"; {seconds} s, {seconds / len(run):.1f} s a mutant"
    print(line)
    for item, result in sorted(survived, key=lambda pair: _key(pair[0])):
        spec = item.mutations[0]
        print(f"\nSURVIVED {spec.module_path}:{spec.start_pos[0]} {spec.operator_name} #{spec.occurrence} "
              f"(job {item.job_id})\n{result.diff}")


if __name__ == "__main__":
    command, session, *rest = sys.argv[1:]
    if command == "annotations":
        annotations(session)
    elif command == "sample":
        sample(session, int(rest[0]), int(rest[1]))
    elif command == "rerun":
        rerun(session)
    elif command == "summary":
        summary(session, int(rest[0]) if rest else None)
    else:
        sys.exit(f"unknown command {command}: sample, rerun or summary")
