#!/usr/bin/env bash
# RESULTS.md section 16: the `supernet` search's cost on one lent GPU, in units of a final-budget LoRA r=8 run timed
# alone on the same machine in the same call (issue 17). Same packing as rt_gpu.sh (.whl/, .devpack/minilm).
#   there: bash benchmarks/device/superpet_cost_gpu.sh SECONDS      (results under OUT)
# 1. benchmarks/superpet_steptime.py: LoRA r=8 step vs super-PET step (one pass per student / students in one pass),
#    slice scoring alone vs 8 side by side; 2. one LoRA r=8 final-budget run alone; 3. the batched `supernet` search
#    (results/rotten_tomatoes_supernet_batched_gpu.yaml) with its final stage; 4. its super-PET's scores of the 20
#    seeded points of RESULTS 13b (Kendall tau against the committed stand-alone runs is computed afterwards).
source benchmarks/device/common.sh "${1:-500}"
device_setup "peft_autoconfig.search.strategies.supernet datasets supernet_rank superpet_steptime"
recipe=benchmarks/results/rotten_tomatoes_supernet_batched_gpu.yaml
step steptime python3 benchmarks/superpet_steptime.py --recipe "$recipe" --steps 40 --repeats 2 --score-slices 24 \
    --slices-per-pass 8 --json "$OUT/steptime.json"
# the 2-epoch, 5-student shape (RESULTS 16: ranks like the 3-epoch one on the CPU); its batched step not yet timed
step steptime5 python3 benchmarks/superpet_steptime.py --model /tmp/minilm --steps 40 --repeats 2 --score-slices 8 \
    --recipe benchmarks/results/superpet_students_only/students_only_2ep_r4.yaml --json "$OUT/steptime_5students.json"
lora_alone
[ "$(left)" -gt 60 ] && step search python3 -m peft_autoconfig.cli search "$recipe" --out /tmp/gpu_sb --workers 1
pack gpu_sb
rank_superpet gpu_sb "$recipe"
echo "=== done $(date -u +%T)"
