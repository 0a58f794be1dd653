#!/usr/bin/env bash
# Every GPU measurement of the kit in one go, on one GPU, in about 7 minutes (issue 25): the GPU
# tests, the throughput table's rows for this GPU (ResNet-20 / ResNet-56 with K = 1…16 runs at once
# on streams), the same K as one vmapped batch and as K processes, seconds per graphed epoch, where
# a step's time goes (profiler), what the paper's grids then cost (--plan), and measured speed-ups of
# compacted and 2:4-sparse networks (issue 22).
#
#   bash benchmarks/gpu_check.sh [OUTDIR]      # default benchmarks/gpu-out; logs and CSVs land there
#
# Runs from the repository root with the machine's own python3 and torch (the package need not be
# installed). Packages the machine lacks (mnist1d, num2words) can sit as wheels in .whl/. Each part
# has its own time limit, so one that hangs does not cost the others; the throughput table
# (rewindkit/engine/throughput.csv) is updated in place (commit it with the logs).
set -u
OUT=${1:-${OUT:-benchmarks/gpu-out}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 REWINDKIT_PROGRESS=0
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PACKING="1 2 4 8 16"

part() {  # part NAME LIMIT_SECONDS COMMAND...: run, log to $OUT/NAME.log, say how long it took
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name: $*" | tee -a "$OUT/$name.log"
  timeout "$limit" "$@" >>"$OUT/$name.log" 2>&1
  echo "== $name: exit $? after $((SECONDS - start)) s" | tee -a "$OUT/$name.log"
}

{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv;
  python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version())";
  nproc; git rev-parse HEAD 2>/dev/null; } >"$OUT/tests.log" 2>&1
part tests 130 python3 -m pytest tests/test_cuda.py -n 4 -q -p no:cacheprovider --timeout 120 -rA
part throughput 230 python3 benchmarks/run.py --device cuda --only throughput mechanisms \
  --profiles cifar_short paper --packing $PACKING --csv "$OUT/packing.csv"
cp rewindkit/engine/throughput.csv "$OUT/throughput.csv"
part epoch 100 python3 benchmarks/run.py --device cuda --only epoch profile --networks resnet20 resnet56 \
  --variants graphs-fp32 graphs --profiles cifar_short paper --csv "$OUT/epoch.csv"
# issue 22: compacted ResNet-56 A/B levels 1-5 against dense and masked on the GPU, and 2:4
# semi-structured linear layers (rewindkit/engine/speedups-cuda.csv, semi_structured-cuda.csv)
part speedup 150 python3 benchmarks/run.py --device cuda --only speedup --quick
cp rewindkit/engine/speedups-cuda.csv rewindkit/engine/semi_structured-cuda.csv "$OUT/" 2>/dev/null
part plan 40 bash -c "for k in $PACKING; do python3 -m rewindkit.cli grid paper --kind one_shot --plan --set packing=\$k; done;
  python3 -c 'import torch; from rewindkit import costs; print(costs.device_costs(torch.cuda.get_device_name()).to_string())'"
ls -la "$OUT"
