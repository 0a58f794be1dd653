"""The paper's logic (Renda, Frankle & Carbin, ICLR 2020): masks and pruning (§3), schedules and the
recipe (§2), the plan table of fine-tuning, weight rewinding and learning-rate rewinding (§1), the
one masked training loop, optimizers, metrics, FLOPs (Appendix F), seeds and the training-data
protocol the loop consumes. Depends only on :mod:`rewindkit.platform`."""
