"""rewindkit: rewinding vs fine-tuning in neural network pruning (Renda, Frankle & Carbin, ICLR 2020)."""

__version__ = "0.1.0"
