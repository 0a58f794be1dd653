"""The ``rewindkit`` command.

``rewindkit grid PROFILE --kind one_shot|iterative|structured [--set key=value ...] [--out DIR]``
    runs one of the paper's grids without Jupyter; writes ``DIR/results.csv``, ``DIR/base_results.csv``
    and ``DIR/runs/<id>/`` (default DIR: ``runs/<PROFILE>``, under ``$REWINDKIT_OUT`` if set). With ``--plan [--probe]`` it trains
    nothing and prints what the grid costs (:func:`rewindkit.engine.costs.plan_report`). With
    ``--plugin my_plugins.py`` it first imports the file that registers your own network, dataset,
    metric or schedule (:func:`rewindkit.plugins.load_module`), so ``--set network=…`` can name them.
``rewindkit notebooks [NAME ...] [--profile P] [-p name value ...]``
    executes notebooks through papermill (all of them by default).
``rewindkit profiles [NAME]``
    lists the profiles, or shows one resolved.

``torchrun --nproc_per_node=N -m rewindkit.cli grid ...`` runs every training run of a grid
data-parallel over N processes (gloo on the CPU, NCCL on GPUs); only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _workers(text: str):
    """--workers N or --workers auto; anything else is refused naming the valid values."""
    import argparse
    from .platform.cores import MAX_WORKERS, check_workers
    try:
        return check_workers("auto" if text == "auto" else int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"workers must be a whole number from 1 to {MAX_WORKERS} or 'auto' (every available core); "
                                         f"got {text!r}") from None


def _at_once(text: str):
    """--at-once N or --at-once auto; anything else is refused naming the valid values."""
    import argparse
    from .platform.cores import notebooks_at_once
    try:
        value = "auto" if text == "auto" else int(text)
        notebooks_at_once(value)  # checked here; "auto" is resolved when the notebooks start
        return value
    except ValueError:
        raise argparse.ArgumentTypeError(f"notebooks at once must be a whole number ≥ 1 or 'auto' (two where two "
                                         f"cores and the memory allow); got {text!r}") from None


def _grid(args) -> int:
    from .experiments import run_grid
    from .engine.profiles import get_profile, parse_overrides
    from .engine.runs import results_dir

    _load_plugins(args.plugin or ())  # their registrations, before --set names them
    profile = get_profile(args.profile, **parse_overrides(args.set))
    if args.workers is not None:
        from dataclasses import replace
        profile = replace(profile, workers=args.workers)
    out = Path(args.out) if args.out else results_dir(profile.name, os.environ.get("REWINDKIT_OUT") or None)
    if args.plan or args.probe:  # the cost of the grid; nothing is trained or written
        from .engine.costs import plan_report
        print(plan_report(profile, args.kind, out, probe_device=args.probe))
        return 0
    from .platform import distributed
    distributed.init_from_env(profile.hardware.device)  # torchrun --nproc_per_node=N: data-parallel runs
    log = None if args.quiet or not distributed.is_primary() else (lambda line: print(line, flush=True))
    result = run_grid(profile, args.kind, out, progress=False if args.no_progress else None, log=log,
                      log_epochs=not args.quiet, executor=args.executor, ray_address=args.ray_address)
    if not distributed.is_primary():
        return 0
    print(f"{len(result.run_ids)} runs of the {args.kind} grid ({profile.name}) are in {out / 'runs'}")
    print(f"results table: {out / 'results.csv'}  dense runs: {out / 'base_results.csv'}")
    import pandas as pd
    from .engine.grids import grid_specs
    from .engine.tables import experiment_of
    experiments = pd.read_csv(out / "base_results.csv")["experiment"].dropna().unique()
    signs = pd.read_csv(out / "results.csv")["signs"].unique() if (out / "results.csv").exists() else ()
    if len(signs) > 1:
        print(f"note: {out} holds runs with imposed signs beside plain ones (results.csv's signs column); "
              f"they share their experiment, so select by signs too when you read the tables back")
    if len(experiments) > 1:
        mine = experiment_of({"setup": grid_specs(profile, args.kind)[0].setup})
        print(f"note: {out} holds the runs of {len(experiments)} experiments (another recipe, data or network in "
              f"the same --out); both tables hold them all, told apart by their experiment column: this "
              f"grid's is {mine}")
    if len(result.results):
        from .core.metrics import delta_label
        from .paper.reference import aggregate, best_achievable
        best = best_achievable(aggregate(result.results, result.base))
        index = ["pruning", "density"] if best["pruning"].nunique() > 1 else "density"  # structured: A and B apart
        table = best.pivot(index=index, columns="technique", values="delta_median").sort_index(
            ascending=[True, False] if isinstance(index, list) else False)
        print(f"best achievable {delta_label(profile.network)} (median over seeds):")
        print(table.round(2).to_string())
    return 0


def _notebooks(args) -> int:
    from .notebook import workspace as nb

    params = {name: value for name, value in (args.parameter or [])}
    if args.profile:
        if "profile" in params and params["profile"] != args.profile:
            raise ValueError(f"--profile {args.profile} and -p profile {params['profile']} name two profiles; give one")
        params["profile"] = args.profile
    forced = os.environ.get("REWINDKIT_PROFILE")
    from .engine.profiles import PROFILES
    if params.get("profile", "laptop") not in PROFILES:
        raise ValueError(f"unknown profile {params['profile']!r}; valid profiles: {', '.join(PROFILES)}")
    if forced and params.get("profile", forced) != forced:  # workspace.current_profile: the variable wins
        raise ValueError(f"REWINDKIT_PROFILE={forced} is set, and it makes every notebook run profile {forced!r}, not "
                         f"{params['profile']!r}; unset it or ask for {forced!r}")
    paths = nb.resolve(args.names)
    from .platform.cores import notebooks_at_once
    outputs = nb.run_notebooks(paths, params, executed_dir=args.executed_dir, timeout=args.timeout,
                               at_once=notebooks_at_once(args.at_once))
    from .notebook.workspace import out_root
    profile = forced or params.get("profile", "laptop")
    figures = out_root() / "figures"  # where the notebooks write them ($REWINDKIT_OUT if set)
    print(f"executed notebooks: {Path(outputs[0]).parent if outputs else '-'}")
    print(f"figures: {figures / str(profile)} (and {figures / 'paper'} for the reference notebook)")
    return 0


def _profiles(args) -> int:
    from .engine.profiles import PROFILES, get_profile

    if args.name:
        print(json.dumps(get_profile(args.name).to_dict(), indent=2, default=list))
    else:
        for name, p in PROFILES.items():
            print(f"{name:{max(map(len, PROFILES))}s} {p.network} on {p.dataset}, T={p.epochs}, {len(p.densities)} densities, "
                  f"t grid {list(p.retrain_times)}, seeds {list(p.seeds)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .engine.costs import PROBE_STEPS
    from .engine.executors import EXECUTORS
    from .engine.profiles import GRID_KINDS, PROFILES
    from .notebook.workspace import DEFAULT_TIMEOUT

    parser = argparse.ArgumentParser(prog="rewindkit", description="Rewinding vs fine-tuning in pruning "
                                     "(Renda, Frankle & Carbin, ICLR 2020): experiments and notebooks.")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grid", help="run one of the paper's grids")
    g.add_argument("profile", help=f"one of {', '.join(PROFILES)}")
    g.add_argument("--kind", required=True, choices=GRID_KINDS)
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a profile field (repeatable)")
    g.add_argument("--plugin", action="append", metavar="MODULE", help="a .py file or module name that registers "
                   "your own network, dataset, metric or schedule (rewindkit.plugins), imported first; repeatable")
    g.add_argument("--out", help="results folder (default runs/PROFILE, under $REWINDKIT_OUT if set)")
    g.add_argument("--workers", type=_workers, help="parallel worker processes, or 'auto': every core available "
                   "to this process, capped by memory (default: the profile's, auto for the CPU profiles)")
    g.add_argument("--executor", default=EXECUTORS[0], choices=EXECUTORS,
                   help="run here (default) or as Ray tasks (pip install 'rewindkit[ray]')")
    g.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (also REWINDKIT_PROGRESS=0)")
    g.add_argument("--quiet", action="store_true", help="no per-run/per-epoch lines")
    g.add_argument("--plan", action="store_true", help="train nothing: print the grid's runs, epochs, what is "
                   "finished in --out and the estimated time on this device (from the shipped throughput table)")
    g.add_argument("--probe", action="store_true", help=f"with --plan: time {PROBE_STEPS} training steps here instead of "
                   "using the throughput table (for a device not in it)")
    g.set_defaults(func=_grid)
    n = sub.add_parser("notebooks", help="execute notebooks with papermill")
    n.add_argument("names", nargs="*", help="notebooks by number or name (default: all)")
    n.add_argument("--profile", help=f"profile parameter ({', '.join(PROFILES)})")
    n.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"))
    n.add_argument("--executed-dir", help="where executed copies go (default executed/)")
    n.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="per-cell execution timeout in seconds")
    n.add_argument("--at-once", type=_at_once, default=1,
                   help="notebooks run at the same time (default 1): N, or 'auto': two where two cores and the "
                        "memory allow; a run two notebooks ask for is trained once. On 2 cores two at once "
                        "were not faster (benchmarks/RESULTS.md)")
    n.set_defaults(func=_notebooks)
    p = sub.add_parser("profiles", help="list profiles or show one")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=_profiles)
    return parser


def _load_plugins(modules) -> None:
    """Import each ``--plugin`` module; a name two of them register is refused, naming both (the
    last would otherwise replace the first without a word)."""
    from .core import pruning
    from .platform import registry
    from .plugins import load_module

    def registered() -> dict[tuple[str, str], object]:
        plugins = {(k, n): registry.get(k, n) for k in registry.KINDS for n in registry.user_names(k)}
        configs = {("filter configuration", n): pruning.filter_config(n) for n in pruning.filter_config_names()
                   if n not in pruning.FILTER_CONFIGS}
        return plugins | configs

    owner: dict[tuple[str, str], str] = {}
    for module in modules:
        before = registered()
        load_module(module)
        for (kind, name), plugin in registered().items():
            if plugin is before.get((kind, name)):
                continue
            if (kind, name) in owner:
                raise ValueError(f"--plugin {module} registers {kind} {name!r}, which --plugin "
                                 f"{owner[kind, name]} registered already; rename one of them")
            owner[kind, name] = module


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"rewindkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # finished runs and each run's last epoch are kept: the same command resumes
        print("rewindkit: interrupted; finished runs and each unfinished run's last checkpoint are kept, and "
              "the same command resumes where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
