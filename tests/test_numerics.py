"""Portable CPU numerics (rewindkit.platform.numerics): pinned in every process that imports rewindkit."""
import json
import os
import platform
import subprocess
import sys

import pytest

PROBE = ("import json, os, torch, rewindkit; print(json.dumps({'cap': torch.backends.cpu.get_cpu_capability(), "
         "'onednn': torch.backends.mkldnn.enabled, 'nnpack': torch._C._get_nnpack_enabled(), "
         "'cbwr': os.environ.get('MKL_CBWR')}))")
x86 = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only")


def probe(code=PROBE, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR",
                                                              "REWINDKIT_PORTABLE_NUMERICS")}
    proc = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


@x86
def test_importing_rewindkit_pins_the_portable_kernels():
    got = json.loads(probe().stdout)
    assert got == {"cap": "AVX2", "onednn": False, "nnpack": False, "cbwr": "COMPATIBLE,STRICT"}


@x86
def test_portable_numerics_can_be_switched_off():
    got = json.loads(probe(REWINDKIT_PORTABLE_NUMERICS="0").stdout)
    assert got["onednn"] is True and got["cbwr"] is None


@x86
def test_a_torch_op_before_the_import_is_reported():
    native = json.loads(probe(REWINDKIT_PORTABLE_NUMERICS="0").stdout)["cap"]
    if native == "AVX2":
        pytest.skip("this CPU's own capability is AVX2: nothing to report")
    proc = probe("import torch; torch.ones(2) + 1; import rewindkit", PYTHONWARNINGS="always")
    assert f"PyTorch already runs its CPU kernels with {native}, not AVX2" in proc.stderr


def test_the_budgets_reference_workload_does_not_depend_on_the_kit():
    """benchmarks/reference_workload.py is what `make reproduce`'s budget is counted in (issue 24): it
    must not import rewindkit (a faster kit would make the reference faster too, hiding the gain), and
    it sets the kit's portable kernel settings by value (if the kit's change, recalibrate the budget:
    benchmarks/RESULTS.md)."""
    import ast
    from pathlib import Path
    from rewindkit.platform.numerics import PORTABLE_ENV
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "reference_workload.py"
    tree = ast.parse(path.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "os", "sys", "time", "torch"}, imported
    settings = {node.args[0].value: node.args[1].value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "setdefault"
                and len(node.args) == 2 and all(isinstance(a, ast.Constant) for a in node.args)}
    assert settings == PORTABLE_ENV
