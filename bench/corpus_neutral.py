"""Pseudo-neutral training rows from the unlabelled corpus: news headlines
(``news_xwlb``), labelled 中评 ("no sentiment"), for a LOSO measurement of
whether neutral examples from another kind of text make 中评 transfer.

    python bench/corpus_neutral.py ../shared/data/corpus/corpus.parquet --rows 1000 --out build/corpus-neutral-1000.parquet
    python bench/loso.py ... --extra-train build/corpus-neutral-1000.parquet

Keeps headline-like rows: no markup or links, the leading item number
("（4）") and trailing punctuation stripped, 8 to 80 characters. Writes
``txt``, ``label`` (0) and ``source`` (``corpus_news``), a fixed-seed sample.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def headlines(corpus: pd.DataFrame) -> pd.Series:
    news = corpus.loc[corpus["source"] == "news_xwlb", "txt"].astype(str)
    news = news[~news.str.contains(r"<|http|查看原文|时间戳")]
    news = news.str.replace(r"^\s*[（(]?\d+[）).、]\s*", "", regex=True).str.strip("；;。：: ")
    return news[news.str.len().between(8, 80)].drop_duplicates()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    texts = headlines(pd.read_parquet(args.corpus, columns=["txt", "source"]))
    sample = texts.sample(min(args.rows, len(texts)), random_state=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"txt": sample.to_numpy(), "label": 0, "source": "corpus_news"}).to_parquet(args.out, index=False)
    print(f"{len(sample):,} of {len(texts):,} headlines → {args.out}")


if __name__ == "__main__":
    main()
