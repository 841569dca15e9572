#!/usr/bin/env bash
# RESULTS.md section 15: the search-quality benchmark and the `supernet` search on one lent GPU machine, in one call
# of the `device` tool (no network there: wheels in .whl/ and MiniLM packed in .devpack/minilm travel with the tree).
#   here:  pip download ... -d .whl (the packages the machine lacks); python benchmarks/device/pack_minilm.py pack .devpack/minilm
#   there: bash benchmarks/device/rt_gpu.sh SECONDS      (OUT: where the results go, as tarballs without weights)
# Steps run in order of value until SECONDS have passed; each is resumable from its journal and is packed as it ends.
source benchmarks/device/common.sh "${1:-500}"
device_setup "peft_autoconfig.search distributed datasets search_quality"
workers=${WORKERS:-8}
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
