"""Derive the small files in sample_data/ from the shared training file.

    python scripts/make_sample_data.py ../shared/data/sentiment_train.tsv

labelled.*: 600 labelled rows, every source and label represented (neutral
over-sampled so tiny test models see it); reviews.*: 300 other rows without
labels, as a user would score them. Each has an ``id`` column.
"""

import sys
from pathlib import Path

import pandas as pd

src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/sentiment_train.tsv")
out = Path(__file__).resolve().parent.parent / "sample_data"
df = pd.read_csv(src, sep="\t")
df.insert(0, "id", [f"r{i:05d}" for i in range(len(df))])
df["group"] = df.source.str.split(":").str[0]
df = df[df.txt.str.len() <= 300]

def pick(frame, n, seed):
    # Equal share per (group, label) cell, capped by what the cell holds.
    cells = frame.groupby(["group", "label"])
    per = max(1, n // cells.ngroups)
    return cells.sample(n=per, random_state=seed, replace=False) if all(len(g) >= per for _, g in cells) else \
        pd.concat([g.sample(n=min(per, len(g)), random_state=seed) for _, g in cells])

labelled = pick(df, 600, 1).sample(frac=1, random_state=1)
rest = df.drop(labelled.index)
reviews = rest.groupby("group").sample(n=75, random_state=2).sample(frac=1, random_state=2)
labelled = labelled[["id", "txt", "label", "source"]].reset_index(drop=True)
reviews = reviews[["id", "txt", "source"]].reset_index(drop=True)
for name, frame in (("labelled", labelled), ("reviews", reviews)):
    frame.to_csv(out / f"{name}.csv", index=False)
    frame.to_parquet(out / f"{name}.parquet", index=False)
    frame.to_json(out / f"{name}.jsonl", orient="records", lines=True, force_ascii=False)
print(labelled.label.value_counts().to_dict(), len(labelled), len(reviews))
