"""BBSE-estimated shares applied by reweighting or by matching, on bench/loso.py caches: python bbse_match.py CACHE... (BENCHMARKS.md, "Out of domain, 2026-12-05 (later)")."""
import sys, json
from pathlib import Path
import numpy as np, pandas as pd
sys.path.insert(0, "/work/main/bench"); sys.path.insert(0, "/work/main")
from loso import fold_metrics
from neutral_signal import Fold, GROUPS, shares, given, matched
from sentiscore.calibration import black_box_shift_priors
for cache in sys.argv[1:]:
    c=Path(cache); acc={"as":[], "rw":[], "match":[]}
    for g in GROUPS:
        f=Fold(c,"ens-idf-ind",g); y=f.labels; P=f.probs["ens-idf-ind"]
        conf=np.array(json.loads((c/"probs"/"ens-idf-ind"/f"{g}.json").read_text())["confusion"])
        est=black_box_shift_priors(P.argmax(1), conf)
        r={"as":fold_metrics(y,P),"rw":fold_metrics(y,given(P,est,f.reference["ens-idf-ind"])),"match":fold_metrics(y,matched(P,est))}
        for k in acc: acc[k].append(r[k]["macro_f1"])
        print(f"  {g:16s} est 中评 {est[1]:.2f} true {shares(y)[1]:.2f} " + " | ".join(f"{k} {v['macro_f1']:.4f} ({v['predicted_share'][0]:.2f})" for k,v in r.items()))
    print(cache, {k: round(np.mean(v),4) for k,v in acc.items()})
