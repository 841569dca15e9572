#!/usr/bin/env bash
# Prepared for the next GPU lease (issue 12; RESULTS.md section 14b measured the CPU side): a reference with less noise
# for the low fidelity's Kendall tau. Section 14b's 20 searched points (their level-0 and seed-0 last-level values:
# results/search_quality_width_ranking.jsonl, trained on the CPU) re-trained at the last level (4,000 x 1 epoch) at
# seeds 1-5, WORKERS at once on one GPU; benchmarks/fidelity_noise.py then reports level 0 against each seed and
# against the mean of the six (the last level agreed with itself at tau 0.15 between two seeds, which bounds any
# tau against one seed). Same packing as rt_gpu.sh (.whl/, .devpack/minilm); the journals come back in fn.tgz, so an
# interrupted call is finished here with the same command (resumable) or read as it is.
# Then, while time is left, the same for RESULTS section 18's 20 random points (spread over the space, as a first
# generation is): their level 0 at seed 0 and last level at seeds 0-1 (CPU) are read, level 0 and the last level are
# trained at seeds 2-5 (`--first-too`), packed as fnr.tgz.
#   there: bash benchmarks/device/fidelity_noise_gpu.sh SECONDS      (results under OUT)
source benchmarks/device/common.sh "${1:-450}"
device_setup "peft_autoconfig.search datasets fidelity_noise"
mkdir -p /tmp/fn/ranking && cp benchmarks/results/search_quality_width_ranking.jsonl /tmp/fn/ranking/journal.jsonl
step noise python3 benchmarks/fidelity_noise.py --recipe benchmarks/results/rotten_tomatoes_gpu.yaml --run /tmp/fn \
    --seeds 1 2 3 4 5 --workers "${WORKERS:-12}"
pack fn
R=benchmarks/results/fidelity_noise_random S=benchmarks/results/superpet_students_only
mkdir -p /tmp/fnr/ranking && cp $R/points_journal.jsonl /tmp/fnr/ranking/journal.jsonl
[ "$(left)" -gt 60 ] && step noise_random python3 benchmarks/fidelity_noise.py \
    --recipe benchmarks/results/rotten_tomatoes_gpu.yaml --run /tmp/fnr --reference 0=$S/standalone_level.jsonl \
    --reference 1=$S/standalone_level_seed1.jsonl --seeds 2 3 4 5 --first-too --workers "${WORKERS:-12}"
pack fnr
echo "=== done $(date -u +%T)"
