"""Every figure the notebooks draw, under one name: the paper's figure families
(:mod:`rewindkit.paper.figures`), the teaching figures (:mod:`rewindkit.notebook.teaching_plots`) and
the style both use (:mod:`rewindkit.paper.style`: colours, markers, labels, :func:`save_figure`).
Each returns ``(figure, data)``, the data being the exact table drawn."""

from .notebook.teaching_plots import (filter_norms, layer_densities, lr_schedules, mask_heatmap,  # noqa: F401
                                      retraining_curves, run_curve, technique_deltas)
from .paper.figures import (accuracy_vs_compression, accuracy_vs_time, compression_beside_paper,  # noqa: F401
                            delta_heatmap, flop_speedup, iterative, structured)
from .paper.style import (ALL, COLORS, CORE, MARKERS, NETWORK_TITLES, check_techniques, delta_label,  # noqa: F401
                          metric_word, network_title, paper_style, save_figure)
