"""`servingops diff BASE`: what a change does to the cluster - the unified diff of the BUILT manifests.

Every overlay of the repository (each kustomization under PATH) is built with kustomize at the git revision BASE
(checked out into a temporary worktree) and in the working tree; the report is one unified diff per overlay
whose output changed, in Markdown for a pull-request comment. Reviewers then see the Deployment, InferenceService
or Secret reference that changes, not only the answer or patch that changed it.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path

from .command import Command
from .errors import CommandError, InputError
from .build import default_jobs, find_targets, kustomization_refs, render_targets

# GitHub refuses comments over 65,536 characters; leave room for the heading and the fences.
MAX_CHARS = 60_000


def built_overlays(root: Path, jobs: int) -> dict[str, str]:
    """Overlay path (relative to root) -> its kustomize build, or the build error as text.

    Only the overlays nothing else includes (what Argo CD / Flux sync): a base's change shows where it lands."""
    targets = [t for t in find_targets([root]) if t.is_kustomization]
    included = {ref for t in targets for ref in kustomization_refs(t.path)}
    targets = [t for t in targets if t.path.resolve() not in included]
    outputs = render_targets(targets, jobs)
    return {
        str(t.path.relative_to(root)): (f"# kustomize build failed: {out}\n" if isinstance(out, CommandError) else out)
        for t, out in zip(targets, outputs)
    }


def git_root(path: Path) -> Path:
    try:
        return Path(Command(("git", "rev-parse", "--show-toplevel"), cwd=path, timeout=60).run().stdout.strip())
    except CommandError as exc:
        raise InputError(f"{path} is not in a git repository: `servingops diff` compares a git revision") from exc


def diff(base: str, path: Path = Path("."), *, jobs: int | None = None) -> dict[str, str]:
    """Overlay -> unified diff of its built manifests from BASE to the working tree (only overlays that changed)."""
    jobs = jobs or default_jobs()
    path = path.resolve()
    repo = git_root(path)
    sub = path.relative_to(repo)
    try:
        Command(("git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"), cwd=repo, timeout=60).run()
    except CommandError as exc:
        raise InputError(f"{base!r} is not a commit here: fetch it first (actions/checkout fetch-depth: 0)") from exc
    head = built_overlays(path, jobs)
    with tempfile.TemporaryDirectory(prefix="servingops-diff-") as tmp:
        tree = Path(tmp) / "base"
        Command(("git", "worktree", "add", "--detach", "--quiet", str(tree), base), cwd=repo, timeout=300).run()
        try:
            before = built_overlays(tree / sub, jobs) if (tree / sub).is_dir() else {}
        finally:
            Command(("git", "worktree", "remove", "--force", str(tree)), cwd=repo, timeout=300).run(check=False)
    changed: dict[str, str] = {}
    for overlay in sorted(set(head) | set(before)):
        old, new = before.get(overlay, ""), head.get(overlay, "")
        if old != new:
            changed[overlay] = "".join(difflib.unified_diff(
                old.splitlines(keepends=True), new.splitlines(keepends=True),
                fromfile=f"a/{overlay} ({base})" if overlay in before else "/dev/null",
                tofile=f"b/{overlay}" if overlay in head else "/dev/null",
            ))
    return changed


def markdown(changed: dict[str, str], base: str, limit: int = MAX_CHARS) -> str:
    if not changed:
        return f"### Built manifests\n\nNo overlay's built manifests change against `{base}`.\n"
    count = "1 overlay changes" if len(changed) == 1 else f"{len(changed)} overlays change"
    parts = [f"### Built manifests: {count} against `{base}`\n"]
    used = len(parts[0])
    for overlay, text in changed.items():
        block = f"\n<details><summary><code>{overlay}</code></summary>\n\n```diff\n{text}```\n</details>\n"
        if used + len(block) > limit:
            parts.append(f"\n(cut here: the full diff is in the job log, `servingops diff {base}`)\n")
            break
        parts.append(block)
        used += len(block)
    return "".join(parts)


def cmd_diff(args: argparse.Namespace) -> int:
    changed = diff(args.base, args.path, jobs=args.jobs)
    if args.output == "markdown":
        sys.stdout.write(markdown(changed, args.base))
    else:
        sys.stdout.write("".join(changed.values()) if changed else f"no built manifest changes against {args.base}\n")
    return 0


def add_parser(verbs) -> None:
    parser = verbs.add_parser(
        "diff", help="diff of the built manifests of every overlay between a git revision and the working tree",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("base", metavar="BASE", help="git revision to compare with, e.g. origin/main or a commit")
    parser.add_argument("path", nargs="?", type=Path, default=Path("."), help="repository folder (default: .)")
    parser.add_argument("--output", choices=["diff", "markdown"], default="diff",
                        help="a plain unified diff, or Markdown for a pull-request comment (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="parallel builds (default: %(default)s)")
    parser.set_defaults(func=cmd_diff)
