"""How much work an ELMo model's biLM gets at each chunk size: the rows the
cascade leaves to the deep path, chunk by chunk, sorted by length and cut
into the biLM's batches as `score` does; prints the batches, the biLM's time
steps (each batch runs to its longest text) and the real tokens.

    python bench/bilm_steps.py build/bench-speed/input-100000.parquet --model zh-elmo --chunk-size 10000 5000

The batches here are plain runs of ``--batch-size`` texts (`score` also caps a
batch's padded tokens, which only splits the longest ones further).
"""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow.parquet as pq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("--model", default="zh-elmo")
    parser.add_argument("--chunk-size", type=int, nargs="+", default=[10_000, 5_000])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--text-column", default="txt")
    args = parser.parse_args()

    from sentiscore.pipeline import Scorer

    texts = pq.read_table(args.input, columns=[args.text_column]).column(args.text_column).to_pylist()
    print("| chunk rows | deep-path batches | biLM time steps | tokens (with <bos>/<eos>) |\n|---:|---:|---:|---:|")
    with Scorer.from_model(args.model, workers=1) as scorer:
        for chunk in args.chunk_size:
            steps = tokens = batches = 0
            for start in range(0, len(texts), chunk):
                prepared = scorer.preprocess(texts[start : start + chunk])
                forwarded = scorer.forward(prepared, explain=False)
                lengths = np.sort(np.minimum(prepared.segmentation().lengths[forwarded.deep], scorer.maxlen) + 2)
                for first in range(0, lengths.size, args.batch_size):
                    batch = lengths[first : first + args.batch_size]
                    steps, tokens, batches = steps + int(batch.max()), tokens + int(batch.sum()), batches + 1
            print(f"| {chunk:,} | {batches:,} | {steps:,} | {tokens:,} |")


if __name__ == "__main__":
    main()
