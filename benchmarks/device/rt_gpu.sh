#!/usr/bin/env bash
# RESULTS.md section 15: the search-quality benchmark and the `supernet` search on one lent GPU machine, in one call
# of the `device` tool (no network there: wheels in .whl/ and MiniLM packed in .devpack/minilm travel with the tree).
#   here:  pip download ... -d .whl (the packages the machine lacks); python benchmarks/device/pack_minilm.py pack .devpack/minilm
#   there: bash benchmarks/device/rt_gpu.sh SECONDS      (OUT: where the results go, as tarballs without weights)
# Steps run in order of value until SECONDS have passed; each is resumable from its journal and is packed as it ends.
set -uo pipefail
budget=${1:-500}
deadline=$(( $(date +%s) + budget ))
left() { echo $(( deadline - $(date +%s) )); }
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/benchmarks:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false
python3 benchmarks/device/pack_minilm.py unpack .devpack/minilm /tmp/minilm || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, transformers, peft, pymoo, peft_autoconfig, peft_autoconfig.search, distributed, datasets, search_quality; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'peft', peft.__version__)" || exit 1
pack() { tar czf "$OUT/$1.tgz" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' --exclude='*.pth' -C /tmp "$1"; }
workers=${WORKERS:-8}
step() { local name=$1; shift; echo "=== $name ($(left) s left) $(date -u +%T)"; timeout --signal=INT --kill-after=10 "$(left)" "$@"; echo "=== $name rc=$? $(date -u +%T)"; }
# 1. the 20-trial NSGA-II search, its front and every named baseline at the final budget, three seeds
step quality python3 benchmarks/search_quality.py --recipe benchmarks/results/rotten_tomatoes_gpu.yaml \
    --out /tmp/gpu_quality --workers "$workers" --pool-final-runs
pack gpu_quality
# 2. the weight-sharing `supernet` search on the same protocol (its wall time against step 1's search)
[ "$(left)" -gt 60 ] && step supernet python3 -m peft_autoconfig.cli search benchmarks/results/rotten_tomatoes_supernet_gpu.yaml \
    --out /tmp/gpu_supernet --workers "$workers"
pack gpu_supernet
# 3. NSGA-II against random search at the first level, three seeds each (step 1's run is nsga2-s0)
[ "$(left)" -gt 60 ] && step seeds python3 benchmarks/search_quality.py --recipe benchmarks/results/rotten_tomatoes_gpu.yaml \
    --out /tmp/gpu_quality --workers "$workers" --pool-final-runs --algorithms nsga2 random --seeds 0 1 2 --first-level-only
pack gpu_quality
echo "=== done $(date -u +%T)"
