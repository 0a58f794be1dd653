"""rewindkit: rewinding vs fine-tuning in neural network pruning (Renda, Frankle & Carbin, ICLR 2020)."""

from .numerics import pin_portable_cpu_numerics as _pin

_pin()  # before any torch op picks its CPU kernels (rewindkit.numerics)

__version__ = "0.1.0"
