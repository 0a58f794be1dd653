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


def test_the_kits_adam_takes_a_correctly_rounded_square_root():
    """Adam's update divides by √v. MKL's vector square root (what torch.sqrt and the foreach update
    call on the CPU) is not correctly rounded, and rounds differently on an Intel and an AMD CPU (its
    COMPATIBLE branch included: benchmarks/cross_cpu_probe.py), which made notebook 11's translation
    figures CPU-dependent. The kit's Adam must use the IEEE square root, the same bits on every CPU.

    From a state with m = 2, v = 2w, step 60, a zero gradient and β = (0.5, 0.5), one step gives
    m = 1 and v = w exactly, bias corrections of exactly 1 in double (0.5⁶¹ is below half an ulp of
    1), so with lr 1 and p = 0 the step is exactly p = −1 / (√w + ε), each operation rounded once in
    float32 (ε = 1e-30 is far below half an ulp of √w ≥ 0.03, so adding it rounds back): numpy's
    float32 arithmetic is that reference. A square root one ulp off changes the quotient."""
    import numpy as np
    import torch
    from rewindkit.core.optimizers import make_optimizer
    from rewindkit.recipe import Recipe
    n = (1 << 14) + 5  # a vector loop and a scalar tail
    w = torch.randn(n, generator=torch.Generator().manual_seed(0)).abs() * 3 + 1e-3  # many binades
    model = torch.nn.Linear(1, n, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    model.weight.grad = torch.zeros_like(model.weight)
    recipe = Recipe(optimizer="adam", adam_betas=(0.5, 0.5), adam_eps=1e-30, lr=1.0, weight_decay=0.0)
    optimizer = make_optimizer(model, recipe)
    optimizer.state[model.weight] = {"step": torch.tensor(60.0), "exp_avg": torch.full((n, 1), 2.0),
                                     "exp_avg_sq": (2 * w).view(n, 1).clone()}
    optimizer.step()
    assert torch.equal(optimizer.state[model.weight]["exp_avg_sq"].view(-1), w)
    wn = w.numpy()
    expected = -(np.float32(1) / (np.sqrt(wn) + np.float32(1e-30)))
    assert expected.dtype == np.float32
    got = model.weight.detach().view(-1).numpy()
    assert np.array_equal(got, expected), f"{np.count_nonzero(got != expected)} of {n} entries differ"
