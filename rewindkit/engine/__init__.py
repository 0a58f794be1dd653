"""The experiment engine (paper §4's grids as cached, resumable runs): :mod:`profiles`, a run's identity
and folder (:mod:`runs`), executing one run (:mod:`runner`), the grids (:mod:`grids`, the file to edit
for another grid), local and Ray executors (:mod:`executors`), what a grid costs (:mod:`costs`) and the
results tables (:mod:`tables`)."""
