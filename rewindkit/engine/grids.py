"""The paper's grids as lists of runs (paper §4) — the file to edit to run another grid.

* **one-shot** — per seed one dense run of T epochs saving every rewind point needed; then for each
  density × technique × t, prune the dense final weights once and retrain (§4);
* **iterative** — prune 20% of the remaining weights, retrain with a technique at its chain's t (its
  fixed budget, and every t of ``iterative_retrain_grid``), repeat; weight rewinding rewinds every
  level to the same iteration T−t of the dense run (§3.1);
* **structured** — L1 filter configurations at levels 1–5, one-shot (§3.2).

Beyond the paper (notebook 12), a profile's ``pruning`` swaps the one-shot and iterative grids'
global magnitude pruning for a random mask, and its ``signs="dense"`` imposes the dense network's
final signs on every retraining start; both are part of each run's id.
"""

from __future__ import annotations

from .profiles import GRID_KINDS, Profile, plain_time
from ..core.pruning import ITERATIVE_DIGITS, FilterPruning, geometric_density, unstructured_pruning
from .runs import RunSpec, setup_from_profile
from ..core.techniques import StartFrom, starts_from


def dense_specs(profile: Profile) -> list[RunSpec]:
    setup = setup_from_profile(profile)
    return [RunSpec(setup, seed) for seed in profile.seeds]


def _retrain_times(profile: Profile, technique: str, times) -> tuple:
    """The t grid of ``technique``: every t, except that a profile may run a technique that starts
    from initialisation (reinitialization, which trains T + t epochs) once per cell, at the smallest
    t — the laptop's documented economy (``reinit_every_t=False``)."""
    if starts_from(technique) is StartFrom.INIT and not profile.reinit_every_t:
        return (min(times),)
    return tuple(times)


def one_shot_specs(profile: Profile, techniques=None) -> list[RunSpec]:
    techniques = tuple(techniques or profile.techniques)
    for name, values in (("densities", profile.densities), ("techniques", techniques),
                         ("retrain_times", profile.retrain_times)):
        if not values:
            raise ValueError(f"the one-shot grid needs at least one of {name}; got {name}=()")
    specs = []
    for dense in dense_specs(profile):
        specs.append(dense)
        for density in profile.densities:
            for tech in techniques:
                for t in _retrain_times(profile, tech, profile.retrain_times):
                    specs.append(RunSpec(dense.setup, dense.seed, tech, t,
                                         unstructured_pruning(profile.pruning, density, dense.seed),
                                         "one_shot", dense.id, dense.id, 1, signs=profile.signs))
    return specs


def iterative_chain_times(profile: Profile) -> dict[str, tuple]:
    """The t of every iterative chain per technique: its fixed budget (the paper's force_all curves,
    §5.3) plus, where the profile sets ``iterative_retrain_grid``, every t of that grid (the
    authors' best-validated iterative curves pick among them, as for one-shot)."""
    return {tech: tuple(sorted({float(t), *map(float, profile.iterative_retrain_grid)}))
            for tech, t in profile.iterative_retrain_times.items()}


def iterative_specs(profile: Profile, techniques=None) -> list[RunSpec]:
    """One chain of ``iterative_levels`` levels per seed, technique and t; a chain keeps its t at
    every level, as the authors' ``iterative.py`` does. The techniques are those of
    ``iterative_retrain_times`` that ``techniques`` (default: the profile's) names."""
    chosen = tuple(techniques or profile.techniques)
    chains = iterative_chain_times(profile)
    missing = [t for t in techniques or () if t not in chains]
    if missing:
        raise ValueError(f"no iterative budget for {', '.join(map(repr, missing))}: the iterative grid runs the "
                         f"techniques of iterative_retrain_times ({', '.join(chains)}); add a t for it there")
    specs = []
    for dense in dense_specs(profile):
        specs.append(dense)
        for tech, times in chains.items():
            if tech not in chosen:
                continue
            for t in times:
                parent = dense.id
                for level in range(1, profile.iterative_levels + 1):
                    spec = RunSpec(dense.setup, dense.seed, tech, plain_time(t),
                                   unstructured_pruning(profile.pruning, geometric_density(level, ITERATIVE_DIGITS),
                                                        dense.seed),
                                   "iterative", parent, dense.id, level, signs=profile.signs)
                    specs.append(spec)
                    parent = spec.id
    return specs




def structured_specs(profile: Profile, techniques=None) -> list[RunSpec]:
    if profile.pruning != "global_magnitude":
        raise ValueError(f"pruning={profile.pruning!r} chooses the one-shot and iterative grids' unstructured masks; "
                         f"the structured grid prunes filters by their L1 norms (§3.2): leave pruning at "
                         f"'global_magnitude'")
    techniques = tuple(techniques or profile.structured_techniques or profile.techniques)
    times = profile.structured_retrain_times or profile.retrain_times
    if not times:
        raise ValueError("the structured grid needs at least one retraining time t; got retrain_times=() and "
                         "structured_retrain_times=None")
    specs = []
    for dense in dense_specs(profile):
        specs.append(dense)
        for config in profile.structured_configs:
            for level in profile.structured_levels:
                for tech in techniques:
                    for t in _retrain_times(profile, tech, times):
                        specs.append(RunSpec(dense.setup, dense.seed, tech, t,
                                             FilterPruning(config, level),
                                             "one_shot", dense.id, dense.id, level, signs=profile.signs))
    return specs


def grid_specs(profile: Profile, kind: str, techniques=None) -> list[RunSpec]:
    if kind not in GRID_KINDS:
        raise ValueError(f"unknown grid kind {kind!r}; valid kinds: {', '.join(GRID_KINDS)}")
    profile.check_retrain_times(kind)
    return {"one_shot": one_shot_specs, "iterative": iterative_specs, "structured": structured_specs}[kind](
        profile, techniques)


def needed_rewinds(specs: list[RunSpec]) -> dict[str, set[tuple[str, float]]]:
    """For each dense run, the (technique, t) of the runs that will rewind to it; the dense run turns
    them into checkpoints T − t with its own schedule (which techniques rewind is the plan table's
    knowledge: :func:`techniques.rewind_steps_needed`). Nothing is loaded here."""
    need: dict[str, set[tuple[str, float]]] = {}
    for spec in specs:
        if not spec.is_dense and starts_from(spec.technique) is StartFrom.REWIND:
            need.setdefault(spec.dense, set()).add((spec.technique, float(spec.retrain_time)))
    return need
