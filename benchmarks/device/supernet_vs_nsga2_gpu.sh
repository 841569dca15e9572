#!/usr/bin/env bash
# RESULTS.md section 16: the cheaper batched `supernet` search against NSGA-II's trial-by-trial search at equal wall
# time on one lent GPU (issue 17), both one run at a time (--workers 1), with a LoRA r=8 final-budget run timed alone
# in the same call as the cost unit. Same packing as rt_gpu.sh (.whl/, .devpack/minilm).
#   there: bash benchmarks/device/supernet_vs_nsga2_gpu.sh SECONDS      (results under OUT)
source benchmarks/device/common.sh "${1:-400}"
device_setup "peft_autoconfig.search.strategies.supernet supernet_vs_search search_quality"
lora_alone
step supernet python3 -m peft_autoconfig.cli search benchmarks/results/rotten_tomatoes_supernet_cheap_gpu.yaml \
    --out /tmp/gpu_sbc --workers 1
pack gpu_sbc
step nsga2 python3 -m peft_autoconfig.cli search benchmarks/results/rotten_tomatoes_gpu_search_only.yaml \
    --out /tmp/gpu_nsga2 --workers 1
pack gpu_nsga2
step compare python3 benchmarks/supernet_vs_search.py --supernet /tmp/gpu_sbc --search /tmp/gpu_nsga2 --out /tmp/svs
pack svs
# issue 12: UniPELT and the searched 81,864-parameter point at seeds 0-2 (lost from RESULTS 15's call), all at once
[ "$(left)" -gt 90 ] && NAMES="unipelt supernet_81864" SEEDS="0 1 2" bash benchmarks/device/paired_gpu.sh $(( $(left) - 15 ))
echo "=== done $(date -u +%T)"
