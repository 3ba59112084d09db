"""zh-elmo with and without the biLM on its own thread (``Scorer._encoded``):
rows/s of ``Scorer.score_batch`` on the same texts, the two settings
interleaved in one process so that both see the same machine. Checks that
the outputs are identical and prints a markdown table.

    python bench/elmo_thread.py --data build/splits/dev.parquet [--rows 4000] [--repeats 3]
"""

import argparse
import time

import pandas as pd
import pyarrow as pa

from sentiscore.pipeline import Scorer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="zh-elmo", help="A model with an ELMo embedder (directory or built-in name).")
    parser.add_argument("--data", required=True)
    parser.add_argument("--text-column", default="txt")
    parser.add_argument("--rows", type=int, default=4000, help="The first ROWS texts.")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    texts = pd.read_parquet(args.data, columns=[args.text_column])[args.text_column].head(args.rows).astype(str).tolist()
    batch = pa.RecordBatch.from_arrays([pa.array(texts)], names=["text"])
    rates = {False: [], True: []}
    outputs = {}
    with Scorer.from_model(args.model) as scorer:
        if not hasattr(scorer.embedder, "encodes_in_background"):
            raise SystemExit(f"{args.model} has no ELMo embedder")
        scorer.score_batch(batch.slice(0, min(300, len(texts))), "text")  # warm-up: graph tracing, token table
        for _ in range(args.repeats):
            for threaded in (False, True):
                scorer.embedder.encodes_in_background = threaded
                started = time.perf_counter()
                outputs[threaded] = scorer.score_batch(batch, "text").to_pandas()
                rates[threaded].append(len(texts) / (time.perf_counter() - started))
    same = outputs[False].equals(outputs[True])
    print(f"| {args.model}, {len(texts):,} texts | " + " | ".join(f"run {i + 1}" for i in range(args.repeats)) + " |")
    print("|---|" + "---:|" * args.repeats)
    for threaded, label in ((False, "biLM then Keras, one thread"), (True, "biLM on its own thread")):
        print(f"| {label} | " + " | ".join(f"{r:,.0f}" for r in rates[threaded]) + " |")
    print(f"\nrows/s; outputs identical: {same}")
    if not same:
        raise SystemExit("the threaded run's output differs")


if __name__ == "__main__":
    main()
