"""What cutting the laptop grids could save in `make reproduce` (issue 24, "only then the grid itself").

Counts the training epochs each grid notebook runs (each run once: notebook 12's step-decay runs are
notebook 03's) for the laptop profile as shipped and with each cut below, and estimates the
notebooks' time in reference workloads by scaling each notebook's measured references per epoch
(from a ``benchmarks/run.py --only reproduce`` log) by its epochs. The estimate scales a notebook's
fixed costs too (kernel start, plotting), so it is a lower bound on what a cut profile would take.

    python benchmarks/grid_cuts.py benchmarks/logs/reproduce-at-once-2026-12-05-cpu.log
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rewindkit.engine.grids import grid_specs  # noqa: E402
from rewindkit.engine.profiles import get_profile  # noqa: E402
from rewindkit.notebook import after_paper  # noqa: E402
from run import ISSUE_DAY_KIT_EPOCH_SECONDS, REPRODUCE_BUDGET_SECONDS  # noqa: E402

# the logs of 2026-12-05 count references in kit laptop epochs (the reference until 2026-12-06), so
# the budget is counted in the same unit here
BUDGET_KIT_EPOCHS = REPRODUCE_BUDGET_SECONDS / ISSUE_DAY_KIT_EPOCH_SECONDS

# notebook 06's chains at today's budgets (FT and LRR at T = 8, WR at 6) whatever the t grid
_CHAINS = {"iterative_retrain_times": {"fine_tuning": 8, "weight_rewinding": 6, "lr_rewinding": 8}}
CUTS = {  # name → (laptop overrides, translation overrides)
    "as shipped": ({}, {}),
    "laptop t ∈ {2, 4, 8}": ({"retrain_times": (2, 4, 8), **_CHAINS}, {}),
    "laptop t ∈ {2, 8}; translation t ∈ {8, 32}": ({"retrain_times": (2, 8), **_CHAINS}, {"retrain_times": (8, 32)}),
    "laptop t ∈ {2, 4, 8}, 2 seeds; translation t ∈ {8, 32}, 2 seeds": (
        {"retrain_times": (2, 4, 8), "seeds": (1, 2), **_CHAINS}, {"retrain_times": (8, 32), "seeds": (1, 2)}),
}
GRID_NOTEBOOKS = ("03_accuracy_vs_retraining_time", "05_structured_pruning", "06_pruning_algorithm",
                  "11_beyond_vision", "12_after_the_paper")


def notebook_epochs(laptop, translation) -> dict[str, float]:
    """Training epochs per grid notebook, each run counted once, in the order ``make reproduce`` runs them."""
    seen = set()

    def new(specs):
        fresh = {s.id: s for s in specs if s.id not in seen}
        seen.update(fresh)
        return sum(s.epochs for s in fresh.values())
    return {"03_accuracy_vs_retraining_time": new(grid_specs(laptop, "one_shot")),
            "05_structured_pruning": new(grid_specs(laptop, "structured")),
            "06_pruning_algorithm": new(grid_specs(laptop, "iterative")),
            "11_beyond_vision": new(grid_specs(translation, "one_shot")),
            "12_after_the_paper": sum(new(grid_specs(p, "one_shot")) for p in after_paper.grid_profiles(laptop).values())}


def measured_references(log: str) -> dict[str, float]:
    """Each notebook's references from the first run in a ``--only reproduce`` log."""
    first = Path(log).read_text().split("notebooks:")[0]
    return {m[1]: float(m[2]) for m in re.finditer(r"^\s+(\d\d_\w+)\s+\d+ s\s+([\d.]+) × reference", first, re.M)}


def main(log: str) -> None:
    refs, budget = measured_references(log), BUDGET_KIT_EPOCHS
    shipped = notebook_epochs(get_profile("laptop"), get_profile("translation"))
    rate = {nb: refs[nb] / shipped[nb] for nb in GRID_NOTEBOOKS}
    rest = sum(v for nb, v in refs.items() if nb not in GRID_NOTEBOOKS)
    print(f"notebooks without a grid: {rest:.0f} references; budget {budget:.0f}")
    for name, (lo, to) in CUTS.items():
        epochs = notebook_epochs(get_profile("laptop", **lo), get_profile("translation", **to))
        total = rest + sum(rate[nb] * epochs[nb] for nb in GRID_NOTEBOOKS)
        cells = ", ".join(f"{nb[:2]} {epochs[nb]:,.0f}" for nb in GRID_NOTEBOOKS)
        print(f"{name}: epochs {cells}; ≥ {total:,.0f} references ({total / budget:.2f}× the budget)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent / "logs/reproduce-at-once-2026-12-05-cpu.log"))
