"""What a grid costs before it starts (paper §4's grids are thousands of runs): how many runs of
which kind, how many training epochs, how many already finished in a results folder, and, from a
throughput, how long the rest takes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .grids import grid_specs
from .profiles import Profile
from .runs import RunStore


def training_hours(epochs: float, examples_per_epoch: int, examples_per_second: float) -> float:
    """Wall hours of ``epochs`` training epochs at ``examples_per_second`` (evaluation not counted)."""
    return epochs * examples_per_epoch / examples_per_second / 3600


@dataclass(frozen=True)
class GridCost:
    """The runs of one grid, each counted once (runs shared by grids, like the dense runs, too)."""

    kind: str
    runs: int
    dense: int
    retraining: dict[str, int] = field(default_factory=dict)  # technique → runs
    epochs: float = 0.0  # training epochs of every run: T per dense run, t or T + t per retraining run
    finished: int = 0  # runs already finished in the results folder
    remaining_epochs: float = 0.0

    def hours(self, examples_per_epoch: int, examples_per_second: float, remaining: bool = True) -> float:
        """Wall hours of the remaining (or all) runs at ``examples_per_second`` (:func:`training_hours`)."""
        return training_hours(self.remaining_epochs if remaining else self.epochs, examples_per_epoch,
                              examples_per_second)


def grid_cost(profile: Profile, kind: str, out=None) -> GridCost:
    """Count the runs and epochs of ``profile``'s ``kind`` grid; with ``out``, also what is finished there."""
    specs = list({s.id: s for s in grid_specs(profile, kind)}.values())
    done = set()
    if out is not None:
        store = RunStore(out)
        done = {s.id for s in specs if store.is_done(s.id)}
    techniques = Counter(s.technique for s in specs if not s.is_dense)
    return GridCost(kind, len(specs), sum(s.is_dense for s in specs), dict(techniques),
                    sum(s.epochs for s in specs), len(done), sum(s.epochs for s in specs if s.id not in done))


def cost_rows(profile: Profile, kinds, examples_per_epoch: int, examples_per_second: float) -> list[dict]:
    """One row per grid kind: runs, training epochs and hours at the given throughput."""
    rows = []
    for kind in kinds:
        cost = grid_cost(profile, kind)
        rows.append({"grid": kind, "runs": cost.runs, "training epochs": cost.epochs,
                     "hours": cost.hours(examples_per_epoch, examples_per_second, remaining=False)})
    return rows
