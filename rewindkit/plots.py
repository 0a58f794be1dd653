"""Every figure the notebooks draw, under one name: the paper's figure families
(:mod:`rewindkit.paper.figures`), the teaching figures (:mod:`rewindkit.notebook.teaching_plots`), notebook
08's measured speed-ups (:mod:`rewindkit.notebook.speed_plots`), notebook
12's (:mod:`rewindkit.notebook.after_paper_plots`) and the style they all use (:mod:`rewindkit.paper.style`:
colours, markers, labels, :func:`save_figure`).
Each returns ``(figure, data)``, the data being the exact table drawn."""

from .notebook.after_paper_plots import random_masks, schedule_lrs, schedules_vs_time, sign_flips  # noqa: F401
from .notebook.speed_plots import measured_vs_flops, speedup_bars  # noqa: F401
from .notebook.teaching_plots import (filter_norms, layer_densities, lr_schedules, mask_heatmap,  # noqa: F401
                                      retraining_curves, run_curve, technique_deltas)
from .paper.figures import (accuracy_vs_compression, accuracy_vs_time, compression_beside_paper,  # noqa: F401
                            delta_heatmap, flop_speedup, iterative, structured)
from .paper.style import (ALL, COLORS, CORE, MARKERS, NETWORK_TITLES, check_techniques, delta_label,  # noqa: F401
                          metric_word, network_title, paper_style, save_figure)
