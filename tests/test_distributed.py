"""DistributedDataParallel on the CPU with gloo: 2 processes = 1 process with the same global batch."""
import os
import socket

import torch
import torch.multiprocessing as mp

from helpers import assert_close_across_kernels, kernel_path_tolerance, one_thread
from rewindkit import data, models, pruning
from rewindkit.platform import distributed
from rewindkit.platform.hardware import Hardware, prepare_model
from rewindkit.recipe import Recipe
from rewindkit.training import make_optimizer, train_steps

RECIPE = Recipe(epochs=3, batch_size=32, lr=0.1, milestones=(2,), weight_decay=2e-4)


def _train():
    ds = data.make_synthetic(n_train=128, n_test=32, shape=(1, 16), num_classes=4, seed=3)
    torch.manual_seed(0)
    model = prepare_model(models.vision_network("mnist1d_resnet", depth=8, width=4, num_classes=4), Hardware())
    optimizer = make_optimizer(model, RECIPE)
    mask = pruning.global_magnitude(model, 0.5)
    train_steps(model, optimizer, ds, RECIPE.schedule(ds.n_train), 0, 12, seed=1, batch_size=RECIPE.batch_size,
                mask=mask, progress=False)
    bn_kinds = sorted({type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)})
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, mask, bn_kinds


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert distributed.init_from_env("cpu")
    state, mask, bn_kinds = _train()
    torch.save({"state": state, "mask": dict(mask), "primary": distributed.is_primary(), "bn": bn_kinds},
               f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["primary"] for r in ranks] == [True, False]
    assert ranks[0]["bn"] == ["SyncBatchNorm2d"]
    # masks identical on every rank, pruned weights exactly zero, weights kept in sync by DDP
    for name, keep in ranks[0]["mask"].items():
        assert torch.equal(keep, ranks[1]["mask"][name])
        assert torch.count_nonzero(ranks[0]["state"][name][~keep]) == 0
    for k, v in ranks[0]["state"].items():
        assert torch.equal(v, ranks[1]["state"][k]), k
    # one process with the same global batch of 32 computes the same function (up to rounding)
    with one_thread():
        single, _, bn_kinds = _train()
    assert bn_kinds == ["BatchNorm2d"]
    # 12 steps; longest reduction: a weight gradient over the global batch × 16 positions (helpers.py)
    assert_close_across_kernels(ranks[0]["state"], single, kernel_path_tolerance(12, RECIPE.batch_size * 16))


def test_shard_needs_divisible_batches(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    import pytest
    with pytest.raises(ValueError, match="global batch size 32 is not divisible by 3 processes"):
        distributed.shard(torch.zeros(32))
    assert distributed.shard(torch.arange(33)).tolist() == list(range(11, 22))


def test_torchrun_grid_matches_single_process(tmp_path):
    """``torchrun --nproc_per_node=2 -m rewindkit.cli grid``: one writer, same runs, same weights."""
    import subprocess
    import sys

    import pandas as pd

    from rewindkit import experiments as E
    from rewindkit import profiles as P

    # LR 0.01: at 0.1 the 4-wide net amplifies the rounding of per-rank partial sums to ~1% in 24 steps
    sets = ["epochs=2", "milestones=(1,)", "retrain_times=(1, 2)", "lr=0.01", "batch_size=32", "n_train=128", "n_eval=40", "iterative_levels=2",
            "iterative_retrain_times={'lr_rewinding': 2, 'weight_rewinding': 1}", "seeds=(1,)",
            "channels_last=False"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "rewindkit.cli", "grid", "smoke", "--kind", "iterative", "--out", str(tmp_path / "ddp"),
           "--quiet", "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REWINDKIT_PROGRESS": "0"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results table:") == 1  # printed by rank 0 only
    profile = P.get_profile("smoke", **P.parse_overrides(sets))
    with one_thread():
        single = E.run_grid(profile, "iterative", tmp_path / "single", progress=False)
    ddp = pd.read_csv(tmp_path / "ddp" / "results.csv")
    assert sorted(ddp.run_id) == sorted(single.results.run_id)
    assert not list((tmp_path / "ddp").rglob("*.tmp")) and not list((tmp_path / "ddp").rglob("checkpoint.pt"))
    # longest chain of steps: dense (2 epochs) + 2 levels of LR rewinding (2 epochs each), 4 steps an
    # epoch; longest reduction: a weight gradient over batch 32 × 40 positions (helpers.py)
    tol = kernel_path_tolerance(3 * 2 * 4, 32 * 40)
    for run_id in single.results.run_id:
        a = torch.load(tmp_path / "ddp" / "runs" / run_id / "final.pt", weights_only=True)
        b = torch.load(tmp_path / "single" / "runs" / run_id / "final.pt", weights_only=True)
        assert_close_across_kernels(a, b, tol, run_id)
        mask_a = torch.load(tmp_path / "ddp" / "runs" / run_id / "mask.pt", weights_only=True)
        mask_b = torch.load(tmp_path / "single" / "runs" / run_id / "mask.pt", weights_only=True)
        assert sum(int((mask_a[k] != mask_b[k]).sum()) for k in mask_b) <= 2  # ties at the threshold only
