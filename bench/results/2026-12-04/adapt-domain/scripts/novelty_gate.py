"""Does the file's char-bigram novelty against the fold's training texts predict --adapt-domain's gain?"""
import sys, re
import numpy as np, pandas as pd
from collections import Counter
cache = sys.argv[1]; table = sys.argv[2]
gains = {}
for line in open(table):
    cells = [c.strip() for c in line.split("|")]
    if len(cells) > 8 and cells[1] and not cells[1].startswith("**") and cells[1] not in ("file", "---") and re.match(r"[+-]\d", cells[7] or ""):
        if cells[1] in gains: break  # first table only (whole files)
        gains[cells[1]] = float(cells[7])
def bigrams(texts):
    c = set()
    for t in texts:
        t = str(t); c.update(t[i:i+2] for i in range(len(t)-1))
    return c
def novelty(train_texts, texts):
    seen = bigrams(train_texts); n = m = 0
    for t in texts:
        t = str(t); grams = [t[i:i+2] for i in range(len(t)-1)]
        n += len(grams); m += sum(g not in seen for g in grams)
    return m / max(1, n)
rows = []
for name, gain in gains.items():
    fold = name if not name.startswith("dev") else "dev"
    train = pd.read_parquet(f"{cache}/folds/{fold}/train.parquet")["txt"]
    test = pd.read_parquet(f"{cache}/folds/{fold}/test.parquet")
    if name.startswith("dev:") and name != "dev:all":
        test = test[test.source.str.split(":").str[0] == name[4:]]
    rows.append((name, gain, novelty(train, test["txt"])))
for r in sorted(rows, key=lambda r: r[2]): print(f"{r[0]:20s} gain {r[1]:+.1f} novelty {r[2]:.3f}")
