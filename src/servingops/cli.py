"""`servingops`: one verb per job. An error is one line on stderr and exit status 1."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from . import __version__, cluster_check, controlplane, helm_import, lint, manifest_diff, releases, render, schemas, tools, validate
from .build import default_jobs, print_report
from .errors import ServingOpsError


def _add_schema_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubernetes-version",
        default=schemas.DEFAULT_KUBERNETES_VERSION,
        help="Kubernetes version of the core schemas (default: %(default)s)",
    )
    parser.add_argument(
        "--crds",
        type=Path,
        action="append",
        metavar="DIR",
        help="folder or file of CRDs, e.g. your cluster's (repeatable; later ones win). Default: $SERVINGOPS_CRDS, "
             "else the KServe release's CRD set (../shared, else the pinned upstream files, fetched once)",
    )
    parser.add_argument(
        "--kserve-version", choices=releases.versions(), metavar="RELEASE",
        help=f"KServe release whose CRDs to use ({', '.join(releases.versions())}). Default: the kserve_version in "
             f"the repository's .copier-answers.yml, else {releases.default_version()}",
    )
    parser.add_argument(
        "--schemas", type=Path, default=schemas.DEFAULT_STORE, metavar="DIR",
        help="schema store folder (default: %(default)s)",
    )


CONTROL_PLANE = "kube-control-plane"


def cmd_tools(args: argparse.Namespace) -> int:
    # The control plane is installed only when named: building it takes about 20 minutes the first time.
    known = [*tools.pinned_tools(), CONTROL_PLANE]
    names = args.names or list(tools.pinned_tools())
    for name in names:
        if name not in known:
            raise ServingOpsError(f"unknown tool {name!r}: choose from {', '.join(known)}")
        if name == CONTROL_PLANE:
            if args.action == "install" and not args.no_go:
                plane = controlplane.install(all_binaries=True, log=lambda m: print(m, file=sys.stderr))
            else:
                plane = controlplane.control_plane()
            print(f"{name} {controlplane.pin().version}: {plane.source}")
            continue
        if args.action == "install":
            path = tools.install(name, allow_go=not args.no_go, allow_download=not args.no_download)
        else:
            path = tools.tool_path(name)
        print(f"{name} {tools.pinned_tools()[name].version}: {path}")
    return 0


def _crd_root(args: argparse.Namespace) -> Path | None:
    """--download: the pinned upstream files, fetched now (sha256-checked) instead of ../shared."""
    return schemas.download_pinned_crds() if getattr(args, "download", False) else None


def cmd_schemas_build(args: argparse.Namespace) -> int:
    store = schemas.release_store(args.kserve_version, args.schemas, args.kubernetes_version, args.crds,
                                  root=_crd_root(args), force=args.force)
    state = "built" if store.rebuilt else "up to date"
    print(f"{store.schema_count} schemas for Kubernetes {store.kubernetes_version} {state} in {store.path}")
    print(f"kubeconform -schema-location '{store.location}'")
    return 0


def cmd_schemas_fetch(args: argparse.Namespace) -> int:
    """Make sure every release's pinned CRDs are at hand: ../shared, or fetched into the cache."""
    if os.environ.get("SERVINGOPS_CRDS"):
        print(f"CRDs from SERVINGOPS_CRDS={os.environ['SERVINGOPS_CRDS']}: nothing to fetch")
        return 0
    root = schemas.release_files_root(fetch=True)
    print(f"pinned CRDs of KServe {', '.join(releases.versions())} and their dependencies: {root}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    report = validate.validate(
        args.paths,
        kubernetes_version=args.kubernetes_version,
        crd_dirs=args.crds,
        crd_root=_crd_root(args),
        kserve_version=args.kserve_version,
        store_dir=args.schemas,
        online=args.online,
        jobs=args.jobs,
        lint=not args.no_lint,
        prebuilt_store=args.prebuilt_schemas,
        server=args.server,
    )
    return print_report(report, args.output)


def print_tree(root: Path, prefix: str = "") -> None:
    """A `tree`-like listing (folders first), so the demo shows what was generated."""
    entries = sorted(root.iterdir(), key=lambda p: (p.is_file(), p.name))
    for index, path in enumerate(entries):
        last = index == len(entries) - 1
        print(f"{prefix}{'└── ' if last else '├── '}{path.name}{'/' if path.is_dir() else ''}")
        if path.is_dir():
            print_tree(path, prefix + ("    " if last else "│   "))


# Written into every demo output: `demo --out` only ever replaces a folder that carries it.
DEMO_MARKER = ".servingops-demo"


def replaceable_demo(out: Path) -> bool:
    """May `demo --out` delete this folder? Only an earlier demo (its marker), and never a Git repository."""
    if (out / ".git").exists():
        raise ServingOpsError(f"{out} is a Git repository: servingops demo never deletes one; pass a new or empty folder to --out")
    if not (out / DEMO_MARKER).is_file():
        raise ServingOpsError(f"{out} exists and is not an earlier demo (no {DEMO_MARKER}): pass a new or empty folder to --out")
    return True


def cmd_demo(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and any(out.iterdir()) and replaceable_demo(out):
        shutil.rmtree(out)
    print(f"==> copier copy --defaults (this template, working tree) -> {out}")
    render.render(out)
    (out / DEMO_MARKER).write_text("Written by `servingops demo`: the next demo may replace this folder.\n")
    answers = render.load_answers(out / ".copier-answers.yml")
    print_tree(out)
    print(f"\n==> servingops validate {out}  (kustomize build + kubeconform -strict, offline)")
    report = validate.validate([out], jobs=args.jobs)
    for line in report.failures():
        print(line)
    for target in report.targets:
        print(f"  {target.status:8} {target.resources:3} resources  {target.target}")
    print(report.summary())
    if report.ok:
        print(
            f"\nA GitOps repo for {len(answers['runtimes'])} runtimes and "
            f"{len(answers['environments'])} environments is in {out}: read its README.md, then commit it and "
            "point Argo CD or Flux at it."
        )
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="servingops", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    tool = verbs.add_parser("tools", help="install or locate the pinned kustomize and kubeconform (and kube-control-plane)")
    tool.add_argument("action", choices=["install", "path"])
    tool.add_argument("names", nargs="*", help=f"tools to act on (default: all but {CONTROL_PLANE})")
    tool.add_argument("--no-go", action="store_true", help="do not try `go install`")
    tool.add_argument("--no-download", action="store_true", help="do not try the GitHub release download")
    tool.set_defaults(func=cmd_tools)

    schema = verbs.add_parser("schemas", help="the offline schema store")
    schema_verbs = schema.add_subparsers(dest="schema_verb", required=True, metavar="VERB")
    build = schema_verbs.add_parser("build", help="write a kubeconform-ready schema folder (only when inputs changed)")
    _add_schema_options(build)
    build.add_argument("--out", dest="schemas", type=Path, default=schemas.DEFAULT_STORE, help="same as --schemas")
    build.add_argument("--download", action="store_true", help="use the pinned upstream CRDs, fetched now (sha256-checked)")
    build.add_argument("--force", action="store_true", help="rebuild even when the inputs are unchanged")
    build.set_defaults(func=cmd_schemas_build)

    fetch = schema_verbs.add_parser(
        "fetch", help="fetch every KServe release's pinned upstream CRDs into .cache/upstream unless ../shared has them")
    fetch.set_defaults(func=cmd_schemas_fetch)

    check = verbs.add_parser("validate", help="kustomize build + strict offline kubeconform for every overlay under PATH")
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                       help="kustomization folder, folder to search for kustomizations, or YAML file")
    _add_schema_options(check)
    check.add_argument("--download", action="store_true", help="use the pinned upstream CRDs, fetched now (sha256-checked)")
    check.add_argument("--prebuilt-schemas", type=Path, metavar="DIR",
                       help="use this schema store as is (offline; built by `servingops schemas build --out DIR`)")
    check.add_argument("--online", action="store_true", help="also try kubeconform's upstream schema registry")
    check.add_argument("--no-lint", action="store_true", help="skip servingops lint (the cross-object checks)")
    check.add_argument(
        "--server", action="store_true",
        help="also server-side dry-run every resource on a real kube-apiserver started offline on 127.0.0.1 "
             "(CEL rules, strict fields, defaulting, admission; built once with Go, see README)",
    )
    check.add_argument("--output", choices=["text", "json"], default="text", help="report format (default: %(default)s)")
    check.add_argument("--jobs", type=int, default=default_jobs(), help="parallel builds (default: %(default)s)")
    check.set_defaults(func=cmd_validate)

    demo = verbs.add_parser("demo", help="generate a repo from the default answers and validate every overlay")
    demo.add_argument("--out", type=Path, default=Path("build/demo"), help="where to generate (default: %(default)s; replaced)")
    demo.add_argument("--jobs", type=int, default=default_jobs(), help="parallel builds (default: %(default)s)")
    demo.set_defaults(func=cmd_demo)

    # Verbs owned by their modules: each registers its parser and sets `func`.
    modules = [lint, helm_import, manifest_diff, cluster_check]
    if tools.is_checkout():  # the matrix renders this checkout's template: not part of an installed servingops
        from . import matrix

        modules.append(matrix)
    for module in modules:
        module.add_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ServingOpsError as exc:
        print(f"servingops: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
