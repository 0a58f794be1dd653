"""What the notebooks use and nothing else does: papermill execution and the workspace
(:mod:`workspace`), the teaching figures (:mod:`teaching_plots`) and views of runs and plans
(:mod:`views`)."""
