# Sourced by the device scripts (rt_gpu.sh, paired_gpu.sh, superpet_cost_gpu.sh, supernet_vs_nsga2_gpu.sh,
# supernet_noretrain_gpu.sh, fidelity_noise_gpu.sh):
#   source benchmarks/device/common.sh SECONDS     # the deadline, OUT and its log
#   device_setup "module ..."                      # wheels into /tmp/site, MiniLM into /tmp/minilm, imports checked
#   step NAME command ...                           # run within the deadline; NAME's lines on stderr (and in the log)
#   pack FOLDER                                     # /tmp/FOLDER into OUT/FOLDER.tgz, without weights
#   lora_alone                                      # the cost unit: a final-budget LoRA r=8 run alone, OUT/lora_alone.json
#   rank_superpet SEARCH RECIPE                     # the 20 seeded points of RESULTS 13b scored on SEARCH's super-PET
set -uo pipefail
deadline=$(( $(date +%s) + ${1:-500} ))
left() { echo $(( deadline - $(date +%s) )); }
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

device_setup() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD/benchmarks:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} \
    TOKENIZERS_PARALLELISM=false
  python3 benchmarks/device/pack_minilm.py unpack .devpack/minilm /tmp/minilm || exit 1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, peft_autoconfig; ${1:+import ${1// /, };} print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    || exit 1
}

pack() { tar czf "$OUT/$1.tgz" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' --exclude='*.pth' -C /tmp "$1"; }

# a step's stdout may be redirected to a result file (lora_alone), so its own lines go to stderr
step() {
  local name=$1; shift
  echo "=== $name ($(left) s left) $(date -u +%T)" >&2
  timeout --signal=INT --kill-after=10 "$(left)" "$@"
  echo "=== $name rc=$? $(date -u +%T)" >&2
}

# the issues' cost unit: one final-budget LoRA r=8 run (4,000 sentences x 3 epochs, seed 0) alone on this machine
lora_alone() {
  step lora_alone python3 -m peft_autoconfig.cli train --model /tmp/minilm --task rotten_tomatoes \
      --config benchmarks/results/gpu_paired/lora_r8 --seed 0 --train-subset 4000 --epochs 3 --batch-size 16 \
      --max-length 64 --eval-split test --quiet --json > /tmp/lora_alone.json
  tail -n 1 /tmp/lora_alone.json > "$OUT/lora_alone.json"
}

# the super-PET of search folder /tmp/$1 scores the 20 seeded points of RESULTS 13b (recipe $2); packed as rank.tgz
rank_superpet() {
  mkdir -p /tmp/rank && ln -sfn "/tmp/$1/oneshot/superpet" /tmp/rank/superpet
  [ "$(left)" -gt 20 ] && step rank python3 benchmarks/supernet_rank.py --recipe "$2" --out /tmp/rank --n 20 \
      --score-full --scores-only
  pack rank
}
