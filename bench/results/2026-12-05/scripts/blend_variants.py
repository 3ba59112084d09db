"""Blend variants of --adapt-domain's file model, on bench/loso.py caches (no retraining)."""
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/main/bench"); sys.path.insert(0, "/work/main")
from adapt_domain import files
from loso import fold_metrics
from sentiscore.adapt import FileSample, fit_file_model

def file_probs(texts, probs):
    sample = FileSample(); sample.add(texts, probs)
    fm = fit_file_model(sample.texts, sample.probs, sample.rows_seen)
    if fm is None:
        return None, None
    known = probs[:, fm.columns]
    own = np.zeros_like(probs)
    own[:, fm.columns] = fm.pipeline.predict_proba(list(texts)) * known.sum(axis=1, keepdims=True)
    mask = np.zeros(probs.shape[1], bool); mask[fm.columns] = True
    return own, mask

def variants(P, F, mask):
    out = {}
    def lin(w):
        o = P.copy(); w = np.asarray(w, np.float32).reshape(-1, 1) if np.ndim(w) else w
        o[:, mask] = (1 - w) * P[:, mask] + w * F[:, mask]; return o
    c = P.max(axis=1)
    out["base w.5"] = lin(0.5)
    out["w.3"] = lin(0.3)
    out["w.7"] = lin(0.7)
    out["unsure half only"] = lin(np.where(c < np.median(c), 0.5, 0.0))
    out["w=.5*(1-c)/(2/3)"] = lin(np.clip(0.5 * (1 - c) / (2 / 3), 0, 0.5))
    g = P.copy()
    geo = np.sqrt(np.clip(P[:, mask], 1e-9, 1) * np.clip(F[:, mask], 1e-9, 1))
    g[:, mask] = geo / geo.sum(axis=1, keepdims=True) * P[:, mask].sum(axis=1, keepdims=True)
    out["geometric"] = g
    return out

for cache in sys.argv[1:]:
    res = {}
    for name, texts, y, probs in files(Path(cache), "ens-idf-ind", 0, 13):
        P = probs["ens-idf-ind"].astype(np.float32)
        F, mask = file_probs(texts, P)
        base = fold_metrics(y, P)["macro_f1"]
        kind = "loso" if not name.startswith("dev:") else "pooled" if name == "dev:all" else "dev"
        if F is None:
            continue
        for v, o in variants(P, F, mask).items():
            res.setdefault(v, {}).setdefault(kind, []).append(fold_metrics(y, o)["macro_f1"] - base)
            if kind == "loso":
                res[v].setdefault("worst", []).append(res[v][kind][-1])
    print(cache)
    for v, r in res.items():
        print(f"  {v:22s} LOSO {100*np.mean(r['loso']):+.2f} (worst {100*min(r['loso']):+.1f})  dev by source {100*np.mean(r['dev']):+.2f} (worst {100*min(r['dev']):+.1f})  dev:all {100*np.mean(r['pooled']):+.2f}", flush=True)
