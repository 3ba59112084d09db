"""Split the shared training file into train and dev parts, stratified by
label × source group, with a fixed seed. The dev part is never trained on.

    python scripts/split_data.py ../shared/data/sentiment_train.tsv build/splits

Writes train.parquet and dev.parquet, and
leave-one-source-out pairs for weibo and douban: train-minus-GROUP.parquet
(the train part without GROUP) and GROUP.parquet (every row of GROUP);
and train-minus-weibo-douban.parquet, the corpus for a biLM that the ELMo
models' leave-one-source-out twins can use without having seen either.
"""

import argparse
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser()
parser.add_argument("data")
parser.add_argument("out")
parser.add_argument("--dev-fraction", type=float, default=0.1)
parser.add_argument("--seed", type=int, default=13)
args = parser.parse_args()

df = pd.read_csv(args.data, sep="\t")
df["txt"] = df["txt"].astype(str)
group = df.source.str.split(":").str[0]
strata = group + "|" + df.label.astype(str)
train, dev = train_test_split(df, test_size=args.dev_fraction, random_state=args.seed, stratify=strata)
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
train.to_parquet(out / "train.parquet", index=False)
dev.to_parquet(out / "dev.parquet", index=False)
train_groups = train.source.str.split(":").str[0]
for g in ("weibo", "douban"):
    train[train_groups != g].to_parquet(out / f"train-minus-{g}.parquet", index=False)
    # The held-out source: all its rows, dev included (that model sees none of them).
    df[group == g].to_parquet(out / f"{g}.parquet", index=False)
train[~train_groups.isin(["weibo", "douban"])].to_parquet(out / "train-minus-weibo-douban.parquet", index=False)
print(f"train {len(train):,} dev {len(dev):,} -> {out}")
