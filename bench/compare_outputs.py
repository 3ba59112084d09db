"""Are two ``sentiscore score`` outputs of the same input the same? For
checking a faster path against the one it replaces (issue #16's bar:
labels identical on ≥ 99.9% of rows, probabilities within 1e-3).

    python bench/compare_outputs.py BASE.parquet OTHER.parquet [--name NAME]

Prints one markdown row: rows, labels identical, largest probability
difference, top words identical, and (when both have it) how many rows each
labelled with the n-gram path alone (``scored_by``).
"""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow.parquet as pq


def compare(base_path, other_path) -> dict:
    base, other = pq.read_table(base_path).to_pandas(), pq.read_table(other_path).to_pandas()
    if len(base) != len(other):
        raise SystemExit(f"{base_path} has {len(base):,} rows, {other_path} {len(other):,}")
    probs = [c for c in base.columns if c.startswith("prob_")]
    diff = np.abs(base[probs].to_numpy(float) - other[probs].to_numpy(float))
    same_words = [list(a) == list(b) for a, b in zip(base.top_words, other.top_words)]
    result = {
        "rows": len(base),
        "labels_identical": float((base.label.fillna("") == other.label.fillna("")).mean()),
        "max_prob_diff": float(np.nanmax(diff)) if diff.size else 0.0,
        "top_words_identical": float(np.mean(same_words)) if same_words else 1.0,
    }
    for name, frame in (("base", base), ("other", other)):
        if "scored_by" in frame:
            result[f"{name}_by_ngrams"] = float((frame.scored_by == "ngrams").mean())
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base")
    parser.add_argument("other")
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    r = compare(args.base, args.other)
    print("| comparison | rows | labels identical | max prob diff | top words identical | rows by n-grams (base / other) |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| {args.name or args.other} | {r['rows']:,} | {r['labels_identical']:.4%} | {r['max_prob_diff']:.1e} | "
          f"{r['top_words_identical']:.4%} | {r.get('base_by_ngrams', 0):.1%} / {r.get('other_by_ngrams', 0):.1%} |")


if __name__ == "__main__":
    main()
