#!/usr/bin/env bash
# Prepared for the next GPU lease (issue 12; RESULTS.md section 14b measured the CPU side): a reference with less noise
# for the low fidelity's Kendall tau. Section 14b's 20 searched points (their level-0 and seed-0 last-level values:
# results/search_quality_width_ranking.jsonl, trained on the CPU) re-trained at the last level (4,000 x 1 epoch) at
# seeds 1-5, WORKERS at once on one GPU; benchmarks/fidelity_noise.py then reports level 0 against each seed and
# against the mean of the six (the last level agreed with itself at tau 0.15 between two seeds, which bounds any
# tau against one seed). Same packing as rt_gpu.sh (.whl/, .devpack/minilm); the journals come back in fn.tgz, so an
# interrupted call is finished here with the same command (resumable) or read as it is.
#   there: bash benchmarks/device/fidelity_noise_gpu.sh SECONDS      (results under OUT)
source benchmarks/device/common.sh "${1:-450}"
device_setup "peft_autoconfig.search datasets fidelity_noise"
mkdir -p /tmp/fn/ranking && cp benchmarks/results/search_quality_width_ranking.jsonl /tmp/fn/ranking/journal.jsonl
step noise python3 benchmarks/fidelity_noise.py --recipe benchmarks/results/rotten_tomatoes_gpu.yaml --run /tmp/fn \
    --seeds 1 2 3 4 5 --workers "${WORKERS:-12}"
pack fn
echo "=== done $(date -u +%T)"
