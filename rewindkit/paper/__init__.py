"""The paper itself: the authors' 23,770 released runs and the paper's aggregation rules
(:mod:`reference`), the figure functions (:mod:`figures`) and their style (:mod:`style`)."""
