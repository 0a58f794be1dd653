"""benchmarks/run.py's table: a partial run (``--only X``) replaces its own rows, never the others."""
import csv
import importlib.util
import time
from pathlib import Path


def load_run():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
    spec = importlib.util.spec_from_file_location("benchmarks_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_partial_benchmark_run_keeps_the_rows_it_did_not_measure(tmp_path):
    run = load_run()
    table = tmp_path / "results-cpu.csv"
    first = [{"benchmark": "throughput", "variant": "packing 1", "value": "1.0"},
             {"benchmark": "reference", "variant": "median", "value": "0.989"}]
    run.write_table(table, first, "2026-12-05 AMD EPYC")
    run.write_table(table, [{"benchmark": "reference", "variant": "median", "value": "0.974", "unit": "ratio"}])
    with open(table, newline="") as f:
        got = list(csv.DictReader(f))
    assert [(r["benchmark"], r["value"]) for r in got] == [("throughput", "1.0"), ("reference", "0.974")]
    assert got[0]["unit"] == "" and got[1]["unit"] == "ratio"
    assert got[0]["measured_on"] == "2026-12-05 AMD EPYC" and got[1]["measured_on"].startswith(time.strftime("%Y-"))
    assert not list(tmp_path.glob("*.tmp"))
