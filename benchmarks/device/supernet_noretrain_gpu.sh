#!/usr/bin/env bash
# RESULTS.md section 17 (prepared, issue 17): the cheapest `supernet` search on one lent GPU, whole cost in final-budget
# LoRA r=8 runs: the 5-student step timed against a LoRA r=8 step, a LoRA r=8 run timed alone, then
# results/rotten_tomatoes_supernet_2ep5_gpu.yaml (super-PET 2 epochs x 5 students in one pass, 100 slices 20 side by
# side, `retrain: false`) with its final stage (front and LoRA r=8 at seed 0, one run at a time), then its super-PET's
# scores of the 20 seeded points of RESULTS 13b (Kendall tau against the committed stand-alone runs is computed
# afterwards). Same packing as rt_gpu.sh (.whl/, .devpack/minilm).
#   there: bash benchmarks/device/supernet_noretrain_gpu.sh SECONDS      (results under OUT)
source benchmarks/device/common.sh "${1:-450}"
device_setup "peft_autoconfig.search.strategies.supernet datasets supernet_rank superpet_steptime"
recipe=benchmarks/results/rotten_tomatoes_supernet_2ep5_gpu.yaml
step steptime5 python3 benchmarks/superpet_steptime.py --recipe "$recipe" --steps 40 --repeats 2 --score-slices 20 \
    --slices-per-pass 20 --json "$OUT/steptime_5students.json"
lora_alone
step search python3 -m peft_autoconfig.cli search "$recipe" --out /tmp/gpu_nr --workers 1
pack gpu_nr
rank_superpet gpu_nr "$recipe"
echo "=== done $(date -u +%T)"
