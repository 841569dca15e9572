#!/usr/bin/env bash
# RESULTS.md section 15: final-budget runs (4,000 sentences x 3 epochs, test split) of a few configurations at seeds
# 0-2, all at once on one GPU, each through `peft-autoconfig train` with the project's default per-block rates.
# Configs in benchmarks/results/gpu_paired/ (the 81,864-parameter point of RESULTS 13e, LoRA r=8, UniPELT as the
# recipes resolve them); `full` = full fine-tuning. NAMES and SEEDS (environment) pick a subset. Same packing as
# rt_gpu.sh (benchmarks/device/common.sh).
export OMP_NUM_THREADS=1   # 12 runs share the machine
source benchmarks/device/common.sh "${1:-200}"
device_setup ""
limit=${1:-200}
mkdir -p /tmp/res; pids=()
for seed in ${SEEDS:-0 1 2}; do
  for name in ${NAMES:-supernet_81864 unipelt full lora_r8}; do
    if [ "$name" = full ]; then what=--full-finetuning; else what="--config benchmarks/results/gpu_paired/$name"; fi
    timeout "$limit" python3 -m peft_autoconfig.cli train --model /tmp/minilm --task rotten_tomatoes $what --seed $seed \
      --train-subset 4000 --epochs 3 --batch-size 16 --max-length 64 --eval-split test --quiet --json \
      > "/tmp/res/$name-s$seed.json" 2> "/tmp/res/$name-s$seed.err" &
    pids+=($!)
  done
done
wait "${pids[@]}"   # not a bare `wait`: that also waits for the `tee` above, i.e. forever (what cut the first call)
python3 - "$OUT/all.jsonl" <<'PY'
import json, pathlib, sys
with open(sys.argv[1], "w") as out:
    for f in sorted(pathlib.Path("/tmp/res").glob("*.json")):
        text = f.read_text().strip()
        result = json.loads(text.splitlines()[-1]) if text else None
        print(f.stem, None if result is None else result["metric_value"])
        out.write(json.dumps({"run": f.stem, "result": result}) + "\n")
PY
tail -n 3 /tmp/res/*.err | tail -n 40
