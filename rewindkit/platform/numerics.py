"""Portable CPU numerics: the same kernels on every x86-64 CPU, so runs agree across machines.

PyTorch picks its CPU kernels by the machine it runs on: ATen's vectorised kernels take the widest
instruction set the CPU has (AVX-512 on recent Intel Xeon and AMD EPYC), oneDNN's convolutions are
JIT-compiled for the best ISA it finds with blocking fitted to the CPU's caches, and MKL's GEMM
dispatches by vendor and ISA. Each choice changes how sums are blocked and rounded, and training
amplifies the difference: the same laptop grid on an Intel and an AMD machine differed by a median
0.6 accuracy points per run. Importing rewindkit therefore (unless the environment already says
otherwise, or ``REWINDKIT_PORTABLE_NUMERICS=0``):

* sets ``ATEN_CPU_CAPABILITY=avx2``: ATen's elementwise, reduction and im2col kernels use AVX2 on
  every CPU (read lazily, at the first CPU op);
* sets ``MKL_CBWR=COMPATIBLE,STRICT``: MKL's conditional-numerical-reproducibility branch that Intel
  documents as giving the same results on Intel and non-Intel CPUs, aligned or not;
* turns oneDNN (``torch.backends.mkldnn``) and NNPACK off, so convolutions run as ATen's im2col +
  MKL GEMM. oneDNN documents bitwise reproducibility only on one platform (its kernels follow the
  cache sizes), and pinning its ISA instead (``ONEDNN_MAX_CPU_ISA=AVX2``) crashed torch 2.13's
  channels-last convolutions with 4 channels on one thread (double free), so it is not an option.

One kernel the kit used differs by CPU vendor even so: MKL's vector square root (``torch.sqrt`` on the
CPU), not correctly rounded and rounded differently on an Intel and an AMD CPU in the ``COMPATIBLE``
branch too. The kit's only square root in training is Adam's, which therefore takes torch's fused
update, whose square root is the processor's correctly rounded one
(:data:`rewindkit.core.optimizers.ADAM_UPDATE`). Other vector-math functions (``sin``, ``lgamma``, …)
have not been compared across vendors yet.
With a fixed thread count (every run trains with one intra-op thread: ``hardware.RUN_THREADS``)
the remaining kernels have no vendor- or ISA-dependent choice that we know of
(``benchmarks/cross_cpu_probe.py`` compares every kernel family across machines). The
speed cost on the laptop profile is measured by ``benchmarks/run.py --only numerics``; docs/reproducibility.md
("What reproduces exactly") says what was verified. GPUs are unaffected. The switch is process-wide:
it also applies to other CPU code in a process that imports rewindkit, and the environment variables
pass to subprocesses. Set ``REWINDKIT_PORTABLE_NUMERICS=0`` before importing rewindkit to keep
PyTorch's own kernels (faster: ×0.68 per laptop epoch; needed for fast bf16 on AVX512-BF16/AMX
CPUs, which runs through oneDNN); CPUs without AVX2 are left alone.
"""

from __future__ import annotations

import os
import platform
import warnings

PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE,STRICT"}
SWITCH = "REWINDKIT_PORTABLE_NUMERICS"


def portable_requested() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def pin_portable_cpu_numerics() -> None:
    """Set :data:`PORTABLE_ENV` (where not already set) before PyTorch picks its CPU kernels, turn
    oneDNN and NNPACK off, and warn if PyTorch had already run a CPU op with another instruction set."""
    if not portable_requested() or platform.machine().lower() not in ("x86_64", "amd64") or not _has_avx2():
        return  # a CPU without AVX2/FMA would die on an illegal instruction: leave PyTorch's choice
    for key, value in PORTABLE_ENV.items():
        os.environ.setdefault(key, value)
    import torch
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    capability = torch.backends.cpu.get_cpu_capability()
    wanted = os.environ["ATEN_CPU_CAPABILITY"].upper()
    if capability not in (wanted, "DEFAULT"):
        warnings.warn(f"PyTorch already runs its CPU kernels with {capability}, not {wanted}: something ran "
                      f"a torch operation before rewindkit was imported. Results are still correct but may "
                      f"differ in the last digits from other CPUs; import rewindkit first (or set "
                      f"ATEN_CPU_CAPABILITY={os.environ['ATEN_CPU_CAPABILITY']} before starting Python).",
                      RuntimeWarning, stacklevel=3)


def _has_avx2() -> bool:
    """Whether the CPU has AVX2 and FMA (``/proc/cpuinfo``; elsewhere assumed, as on every x86-64
    CPU sold since 2015)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return {"avx2", "fma"} <= flags
    except OSError:
        pass
    return True


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_numerics() -> dict:
    """What decides CPU float results, for a run's provenance."""
    import torch
    return {"cpu": cpu_model(), "aten_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
            "mkl_cbwr": os.environ.get("MKL_CBWR"), "threads": torch.get_num_threads()}
