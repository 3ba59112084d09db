"""Split the labelled files into train and dev parts, stratified by
label × source group, with a fixed seed. The dev part is never trained on.

    python scripts/split_data.py ../shared/data/sentiment_train.tsv ../shared/data/sentiment_extra.tsv --out build/splits

Writes train.parquet and dev.parquet (every input file's rows, with their
``source``), all.parquet (both, for leave-one-source-out test sets: a model
trained without a group sees none of its rows), and for the older
two-group harness train-minus-GROUP.parquet / GROUP.parquet for weibo and
douban plus train-minus-weibo-douban.parquet (a biLM corpus without either).
"""

import argparse
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser()
parser.add_argument("data", nargs="+", help="TSV files with txt, label, source columns")
parser.add_argument("--out", required=True)
parser.add_argument("--dev-fraction", type=float, default=0.1)
parser.add_argument("--seed", type=int, default=13)
args = parser.parse_args()

df = pd.concat([pd.read_csv(path, sep="\t") for path in args.data], ignore_index=True)
df["txt"] = df["txt"].astype(str)
group = df.source.str.split(":").str[0]
strata = group + "|" + df.label.astype(str)
train, dev = train_test_split(df, test_size=args.dev_fraction, random_state=args.seed, stratify=strata)
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
train.to_parquet(out / "train.parquet", index=False)
dev.to_parquet(out / "dev.parquet", index=False)
df.to_parquet(out / "all.parquet", index=False)
train_groups = train.source.str.split(":").str[0]
for g in ("weibo", "douban"):
    train[train_groups != g].to_parquet(out / f"train-minus-{g}.parquet", index=False)
    df[group == g].to_parquet(out / f"{g}.parquet", index=False)
train[~train_groups.isin(["weibo", "douban"])].to_parquet(out / "train-minus-weibo-douban.parquet", index=False)
print(f"train {len(train):,} dev {len(dev):,} -> {out}")
