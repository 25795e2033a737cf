#!/usr/bin/env bash
# The CUDA measurements of docs/benchmarks.md, in one run on one GPU: parity with the authors'
# code (the CPU setting with more seeds, and a longer setting), the protocol study, and the
# Fashion-MNIST IPC 10 accuracy-vs-wall-clock curve on the paper's config.
#
#   ACC_DD_DIR=/path/to/Acc-DD bash benchmarks/gpu_suite.sh RESULTS_DIR [CURVE_MINUTES]
#
# Needs Fashion-MNIST where our reader finds it (the Debian package dataset-fashion-mnist) and a
# checkout of github.com/ncsu-dk-lab/Acc-DD. The three studies share the GPU (their kernels are
# small, so they interleave); each result says so. Everything lands in RESULTS_DIR: the results
# files, the docs sections (sections-*.md, to be merged into docs/benchmarks.md), and the curve's CSV/Markdown/PNG, packed into
# results.tar.gz as they are, also when a study is cut short by its time limit.
set -u
results=${1:?usage: gpu_suite.sh RESULTS_DIR [CURVE_MINUTES]}
curve_minutes=${2:-2.5}
authors=${ACC_DD_DIR:?set ACC_DD_DIR to a checkout of github.com/ncsu-dk-lab/Acc-DD}
mkdir -p "$results/work"
export PYTHONUNBUFFERED=1 LIGHTNING_DD_QUIET=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
limit=${SUITE_SECONDS:-420}  # each study is stopped after this many seconds; what it wrote is kept
studies=" ${STUDIES:-parity-short parity-long protocol curve} "  # which studies to run

pack() {  # results files, logs, the docs sections and the curve's CSV/Markdown/PNG; no snapshots, checkpoints or pools
  tar -czf "$results/results.tar.gz" -C "$results" --exclude='*.pt' --exclude='*.ckpt' --exclude='init.png' --exclude='aug.png' --exclude='pool' --exclude='pools' --exclude='authors_pool' work docs_curves 2>/dev/null
}
trap pack EXIT

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$python -c "import torch, lightning, lightning_dd; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())" || exit 1

w=$results/work
parity() {  # NAME SEEDS SETTINGS...: distil and evaluate both sides, then write the table from what finished
  local name=$1 seeds=$2
  shift 2
  local args=(--device cuda --authors_dir "$authors" --seeds "$seeds" --eval_repeats 3 --jobs 3 --threads 1 "$@"
              --out "$w/parity-$name.json" --section "parity-fashion_mnist-cuda-$name" --output "$w/sections-parity-$name.md")
  timeout "$limit" $python benchmarks/parity.py "${args[@]}" > "$w/parity-$name.log" 2>&1
  timeout 60 $python benchmarks/parity.py "${args[@]}" --report_only >> "$w/parity-$name.log" 2>&1
}
[[ $studies == *" parity-short "* ]] && parity short 0,1,2,3,4 --outer 4 --inner 6 --width 32 --eval_epochs 40 &
[[ $studies == *" parity-long "* ]] && parity long 0,1,2,3 --outer 20 --inner 10 --width 64 --eval_epochs 300 &
[[ $studies == *" protocol "* ]] && ( timeout "$limit" $python benchmarks/protocol.py --device cuda --config configs/fashion_mnist/ipc10_cpu.yaml --outer 20 \
    --seeds 0 1 2 3 4 --eval_epochs 200 --jobs 4 --threads 1 --results "$w/protocol-runs-cuda.jsonl" --pool_cache "$w/pools" --output "$w/sections-protocol.md" \
    > "$w/protocol.log" 2>&1 ) &
[[ $studies == *" curve "* ]] && ( timeout "$limit" $python benchmarks/curve.py --device cuda --config configs/fashion_mnist/ipc10.yaml --modes accdd idc --seeds 0 1 \
    --budget_minutes "$curve_minutes" --first_checkpoint 10 --threads 1 --jobs 4 --repeats 2 --eval_epochs 300 \
    --paper_epochs 1000 --paper_repeats 3 --name fashion_mnist-ipc10-cuda --study_dir "$w/curve" --results_dir "$results/docs_curves" --output "$w/sections-curve.md" \
    --note "Run on one GPU next to the parity and protocol studies of benchmarks/gpu_suite.sh (they share the GPU)." \
    > "$w/curve.log" 2>&1 ) &
wait
