"""Faithfulness of top_words (ERASER comprehensiveness) on the dev split:
the mean drop in the predicted class's probability when the top-k attended
words are removed, vs removing k random words. Prints a markdown table.

    python bench/faithfulness.py --model zh-fast --data build/splits/dev.parquet [--rows 3000]
"""

import argparse
import json

import pandas as pd

from sentiscore.explain import comprehensiveness
from sentiscore.pipeline import Scorer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="Model directory or built-in name (repeatable).")
    parser.add_argument("--data", required=True)
    parser.add_argument("--text-column", default="txt")
    parser.add_argument("--rows", type=int, default=3000, help="Sample this many rows (seed 13); 0 = all.")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    frame = pd.read_parquet(args.data, columns=[args.text_column])
    if args.rows and args.rows < len(frame):
        frame = frame.sample(args.rows, random_state=13)
    texts = frame[args.text_column].astype(str).tolist()
    results = {}
    for model in args.model:
        with Scorer.from_model(model) as scorer:
            results[model] = comprehensiveness(scorer, texts)
    print(f"Comprehensiveness on {len(texts):,} rows of {args.data} (texts with at least 2 distinct words):\n")
    print("| model | k | drop, top-k words removed | drop, k random words removed | ratio |")
    print("|---|---:|---:|---:|---:|")
    for model, r in results.items():
        for k in (1, 3):
            m = r[f"k={k}"]
            print(f"| {model} | {k} | {m['drop_top']:.4f} | {m['drop_random']:.4f} | {m['ratio']} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
