#!/usr/bin/env bash
# The CUDA measurements of docs/benchmarks.md in one run on one GPU (needs Fashion-MNIST and a
# checkout of github.com/ncsu-dk-lab/Acc-DD):
#
#   ACC_DD_DIR=/path/to/Acc-DD [PAPER_STUDY=study_dir] bash benchmarks/gpu_suite.sh RESULTS_DIR [CURVE_MINUTES]
#
# STUDIES picks among paper parity-short parity-long protocol curve eval-parity; SUITE_SECONDS (or
# PAPER_/SHORT_/LONG_SECONDS) limits each. The H100 results came from STUDIES=paper PAPER_SECONDS=110
# and STUDIES="parity-short parity-long" SHORT_SECONDS=115 LONG_SECONDS=120 LONG_SEEDS=0,1 LONG_OUTER=8.
# Paper and parity studies run alone on the GPU, the others share it; everything lands in
# RESULTS_DIR (sections-*.md to merge into docs/benchmarks.md), packed into results.tar.gz.
set -u
results=${1:?usage: gpu_suite.sh RESULTS_DIR [CURVE_MINUTES]}
curve_minutes=${2:-2.5}
authors=${ACC_DD_DIR:?set ACC_DD_DIR to a checkout of github.com/ncsu-dk-lab/Acc-DD}
mkdir -p "$results/work"
export PYTHONUNBUFFERED=1 LIGHTNING_DD_QUIET=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
limit=${SUITE_SECONDS:-420}  # each study is stopped after this many seconds (PAPER_, SHORT_, LONG_SECONDS: per study); what it wrote is kept
studies=" ${STUDIES:-paper parity-short parity-long protocol curve} "  # which studies to run (also: eval-parity)

pack() {  # results files, logs, stacks, the docs sections and the curves' CSV/Markdown/PNG; no snapshots, checkpoints or pools
  tar -czf "$results/results.tar.gz" -C "$results" --exclude='*.pt' --exclude='*.ckpt' --exclude='init.png' --exclude='aug.png' --exclude='pool' \
    --exclude='pools' --exclude='authors_pool' work docs_curves 2>/dev/null
  find "$results" -maxdepth 4 -name '*.txt' -path '*stacks*' -exec sh -c 'echo "== $1"; tail -40 "$1"' _ {} \;
}
trap pack EXIT

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$python -c "import torch, lightning, lightning_dd; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())" || exit 1

w=$results/work
if [[ $studies == *" paper "* ]]; then  # the best final set of a CPU study (PAPER_STUDY), ConvNet-3 w128 for 1000 epochs, on the GPU
  study=${PAPER_STUDY:?set PAPER_STUDY to the folder of the CPU curve study to evaluate}
  timeout "${PAPER_SECONDS:-$limit}" $python -m benchmarks.curve --config "${PAPER_CONFIG:-configs/fashion_mnist/ipc10_cpu_mix.yaml}" --modes accdd idc --seeds 0 1 \
    --budget_minutes "${PAPER_BUDGET_MINUTES:-30}" --threads 1 --jobs 3 --repeats 1 --eval_epochs 100 --full_epochs 0 --paper_epochs 1000 --paper_repeats 3 \
    --paper_device cuda --phase evaluate --name "${PAPER_NAME:-fashion_mnist-ipc10}" --study_dir "$study" --results_dir "$results/docs_curves" \
    --output "$w/sections-paper.md" > "$w/paper.log" 2>&1
  mkdir -p "$w/paper-evals" && cp -r "$study/evals/." "$w/paper-evals/"
  tail -3 "$w/paper.log"
fi

parity() {  # NAME SEEDS SECONDS JOBS SETTINGS...: distil and evaluate both sides, then write the table from what finished
  local name=$1 seeds=$2 seconds=$3 jobs=$4
  shift 4
  local args=(--device cuda --authors_dir "$authors" --seeds "$seeds" --eval_repeats 3 --jobs "$jobs" --threads 1 --stack_dump_s 30 "$@"
              --out "$w/parity-$name.json" --section "parity-fashion_mnist-cuda-$name" --output "$w/sections-parity-$name.md")
  timeout "$seconds" $python -m benchmarks.parity "${args[@]}" > "$w/parity-$name.log" 2>&1
  timeout 60 $python -m benchmarks.parity "${args[@]}" --report_only >> "$w/parity-$name.log" 2>&1
  grep -E "^(first-step|parity:|idc/|accdd/)" "$w/parity-$name.log"
}
[[ $studies == *" parity-short "* ]] && parity short "${SHORT_SEEDS:-0,1,2}" "${SHORT_SECONDS:-$limit}" "${SHORT_JOBS:-3}" --outer 4 --inner 6 --width 32 --eval_epochs 40
[[ $studies == *" parity-long "* ]] && parity long "${LONG_SEEDS:-0,1,2}" "${LONG_SECONDS:-$limit}" "${LONG_JOBS:-4}" --outer "${LONG_OUTER:-10}" --inner 10 --width 64 --eval_epochs "${LONG_EVAL_EPOCHS:-100}"

[[ $studies == *" protocol "* ]] && ( timeout "$limit" $python -m benchmarks.protocol --device cuda --config configs/fashion_mnist/ipc10_cpu_mix.yaml --outer 20 \
    --seeds 0 1 2 3 4 --eval_epochs 200 --jobs 4 --threads 1 --results "$w/protocol-runs-cuda.jsonl" --pool_cache "$w/pools" --output "$w/sections-protocol.md" \
    > "$w/protocol.log" 2>&1 ) &
[[ $studies == *" curve "* ]] && ( timeout "$limit" $python -m benchmarks.curve --device cuda --config configs/fashion_mnist/ipc10.yaml --modes accdd idc --seeds 0 1 \
    --budget_minutes "$curve_minutes" --first_checkpoint 10 --threads 1 --jobs 4 --repeats 2 --eval_epochs 300 \
    --paper_epochs 1000 --paper_repeats 3 --name fashion_mnist-ipc10-cuda --study_dir "$w/curve" --results_dir "$results/docs_curves" --output "$w/sections-curve.md" \
    --note "Run on one GPU next to the protocol study of benchmarks/gpu_suite.sh (they share the GPU)." \
    > "$w/curve.log" 2>&1 ) &

[[ $studies == *" eval-parity "* ]] && ( timeout "${EVAL_SECONDS:-$limit}" $python -m benchmarks.eval_parity --device cuda --authors_dir "$authors" \
    --distilled "${EVAL_DISTILLED:?set EVAL_DISTILLED to an exported Fashion-MNIST set}" --epochs 100 300 1000 --nets 2 --jobs "${EVAL_JOBS:-4}" \
    --work "$w/eval-parity" --out "$w/eval-parity-runs-cuda.jsonl" --section eval-parity-cuda --output "$w/sections-eval-parity.md" \
    > "$w/eval-parity.log" 2>&1 ) &
wait
for log in "$w"/eval-parity.log; do [[ -f $log ]] && { echo "== $log"; tail -25 "$log"; }; done
