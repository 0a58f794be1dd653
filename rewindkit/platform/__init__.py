"""Where and how the kit computes — never what: devices, bf16, CUDA graphs and packing (:mod:`hardware`),
portable CPU numerics (:mod:`numerics`), atomic files (:mod:`storage`), data parallelism
(:mod:`distributed`), the registry of named components (:mod:`registry`) and the fingerprints of
the user's own (:mod:`fingerprint`). Imports nothing of the kit above it."""
