"""The Ray executor: same table as the local executor; a worker killed mid-run is recovered."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import one_thread
from rewindkit import experiments as E
from rewindkit import profiles as P

ray = pytest.importorskip("ray")

SMALL = dict(epochs=4, milestones=(2, 3), batch_size=16, n_train=128, n_eval=40, densities=(0.3,),
             retrain_times=(2, 4), techniques=("fine_tuning", "weight_rewinding", "lr_rewinding"), seeds=(1,))


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    with one_thread():
        return E.run_grid(P.get_profile("smoke", **SMALL), "one_shot", tmp_path_factory.mktemp("serial"),
                          progress=False)


def test_ray_grid_equals_local_executor(serial, tmp_path):
    got = E.run_grid(P.get_profile("smoke", **SMALL), "one_shot", tmp_path, executor="ray", workers=2)
    pd.testing.assert_frame_equal(got.results, serial.results)
    assert (tmp_path / "results.csv").read_text() == (serial.out / "results.csv").read_text()


def _ray_task_pids():
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(b"ray::_ray_task"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def test_worker_killed_mid_run_is_recovered(serial, tmp_path):
    code = ("from rewindkit import experiments as E, profiles as P\n"
            f"E.run_grid(P.get_profile('smoke', **{SMALL!r}), 'one_shot', {str(tmp_path)!r}, executor='ray', workers=2)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "REWINDKIT_PROGRESS": "0"})
    killed = 0
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not killed:
        pids = _ray_task_pids()
        if pids and list(tmp_path.glob("runs/*/checkpoint.pt")):
            os.kill(pids[0], signal.SIGKILL)
            killed += 1
        time.sleep(0.02)
    proc.wait(timeout=300)
    assert killed == 1
    rerun = E.run_grid(P.get_profile("smoke", **SMALL), "one_shot", tmp_path, executor="ray", workers=2)
    pd.testing.assert_frame_equal(rerun.results, serial.results)


def test_unknown_executor(tmp_path):
    with pytest.raises(ValueError, match="unknown executor 'dask'; valid executors: local, ray"):
        E.run_grid(P.get_profile("smoke"), "one_shot", tmp_path, executor="dask")
