"""Post-training calibration on the validation split (NumPy only):
temperature scaling for honest confidences, then per-class logit biases
that maximise macro-F1 (decision thresholds for scarce classes)."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, y: np.ndarray) -> float:
    p = softmax(logits)[np.arange(y.size), y]
    return float(-np.mean(np.log(np.maximum(p, 1e-12))))


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict:
    """Reliability-diagram rows (equal-width confidence bins) and the
    expected calibration error: the rows' weighted |confidence - accuracy|."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    table = []
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            conf, acc = float(confidence[in_bin].mean()), float(correct[in_bin].mean())
            ece += in_bin.mean() * abs(conf - acc)
            table.append({"low": round(float(edges[b]), 2), "high": round(float(edges[b + 1]), 2), "rows": int(in_bin.sum()),
                          "confidence": round(conf, 4), "accuracy": round(acc, 4)})
    return {"ece": float(ece), "bins": table}


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    return reliability(probs.max(axis=1), probs.argmax(axis=1) == y, bins)["ece"]


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    grid = np.exp(np.linspace(np.log(0.25), np.log(4.0), 61))
    losses = [negative_log_likelihood(logits / t, y) for t in grid]
    return float(grid[int(np.argmin(losses))])


def prior_matching_bias(logits: np.ndarray, prior: np.ndarray, iterations: int = 200, tolerance: float = 1e-6) -> np.ndarray:
    """Additive logit biases (summing to zero) under which the mean softmax of
    ``logits`` is ``prior``: the fixed point of b += log(prior / mean), as in
    EM prior re-estimation. Classes with no prior mass keep bias 0 (theirs
    would run to minus infinity)."""
    prior = np.asarray(prior, np.float64)
    present = prior > 0
    bias = np.zeros(logits.shape[1])
    for _ in range(iterations):
        mean = softmax(logits + bias).mean(axis=0)
        if np.abs(mean[present] - prior[present]).max() < tolerance:
            break
        bias[present] += np.log(prior[present] / np.maximum(mean[present], 1e-12))
    return bias - bias.mean()


def share_matching_shift(probs: np.ndarray, shares, temperatures=(0.3, 0.1, 0.03, 0.01)) -> np.ndarray:
    """Log offsets under which the labels of ``probs`` (the argmax of each
    row) come out in ``shares``: the dual of assigning the rows to labels in
    those shares at the least cost in log-probability (entropic optimal
    transport, with its temperature annealed towards the hard argmax; convex
    at each temperature). It starts at temperature 1, where this is the
    offset under which the mean posterior is ``shares``
    (:func:`prior_matching_bias`); the hard labels need the lower ones: a
    model unsure on unfamiliar text spreads a label's probability over many
    rows, so matching the mean calls that label on too many (BENCHMARKS.md,
    "Out of domain, 2026-12-05 (later)"). A label with share 0 gets -inf
    (never predicted); rows with no probabilities are left out."""
    from scipy.optimize import minimize
    from scipy.special import logsumexp
    from scipy.special import softmax as soft

    shares = np.asarray(shares, np.float64)
    shares = shares / shares.sum()
    live = shares > 0
    offsets = np.full(shares.size, -np.inf)
    probs = np.asarray(probs, np.float64)
    probs = probs[probs.sum(axis=1) > 0]
    if live.sum() == 1 or not len(probs):
        offsets[live] = 0.0
        return offsets
    log_probs = np.log(np.maximum(probs[:, live], 1e-12))
    target = shares[live]
    bias = prior_matching_bias(log_probs, target)
    for temperature in temperatures:
        def dual(b, t=temperature):
            scaled = (log_probs + b) / t
            value = t * logsumexp(scaled, axis=1).mean() - target @ b
            return value, soft(scaled, axis=1).mean(axis=0) - target
        bias = minimize(dual, bias, jac=True, method="L-BFGS-B", options={"gtol": 1e-9, "maxiter": 500}).x
    offsets[live] = bias - bias.max()
    return offsets


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    f1s = []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def fit_class_bias(logits: np.ndarray, y: np.ndarray, n_classes: int, rounds: int = 2) -> np.ndarray:
    """Coordinate search of additive logit biases for macro-F1; ties go to
    the smaller bias so an uninformative split leaves thresholds alone."""
    bias = np.zeros(n_classes)
    grid = np.round(np.arange(-2.0, 2.01, 0.1), 2)
    best = macro_f1(y, (logits + bias).argmax(axis=1), n_classes)
    for _ in range(rounds):
        for c in range(n_classes):
            for value in sorted(grid, key=abs):
                trial = bias.copy()
                trial[c] = value
                score = macro_f1(y, (logits + trial).argmax(axis=1), n_classes)
                if score > best + 1e-9:
                    best, bias = score, trial
    return bias - bias.mean()


def adapt_priors(probs: np.ndarray, reference_prior, max_iter: int = 200, tol: float = 1e-6) -> np.ndarray:
    """Class priors of a batch of texts by EM (Saerens, Latinne & Decaestecker
    2002): reweight every posterior by new prior / reference prior,
    renormalise, take the mean as the new prior, repeat. ``reference_prior``
    is what the model believes the prior to be (its mean posterior on its
    validation split, in the card). Returns the estimated prior; apply it
    with :func:`shift_priors`."""
    probs = np.asarray(probs, np.float64)
    reference = np.maximum(np.asarray(reference_prior, np.float64), 1e-9)
    prior = reference.copy()
    if probs.size == 0:
        return prior
    for _ in range(max_iter):
        adjusted = probs * (prior / reference)
        adjusted /= np.maximum(adjusted.sum(axis=1, keepdims=True), 1e-300)
        updated = adjusted.mean(axis=0)
        if np.abs(updated - prior).max() < tol:
            return updated
        prior = updated
    return prior


def joint_confusion(predicted: np.ndarray, true: np.ndarray, n_classes: int) -> np.ndarray:
    """P(predicted i, true j) over a labelled sample: rows predicted, columns true."""
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, (np.asarray(predicted, np.int64), np.asarray(true, np.int64)), 1)
    return counts / max(1, len(predicted))


def black_box_shift_priors(predicted: np.ndarray, confusion) -> np.ndarray:
    """Class priors of a batch of texts by black-box shift estimation (Lipton,
    Wang & Smola 2018): with ``confusion`` = P(predicted i, true j) on the
    validation split, the batch's shares of predicted labels μ satisfy
    confusion @ w = μ for the weights w = new prior / validation prior. Hard
    labels only, so unlike EM it does not read a model's spread-out doubt on
    unfamiliar text as a class of its own. Weights are least squares,
    clipped at 0. Returns the estimated prior; apply it with :func:`shift_priors`."""
    confusion = np.asarray(confusion, np.float64)
    n_classes = confusion.shape[0]
    validation_prior = confusion.sum(axis=0)
    predicted = np.asarray(predicted, np.int64)
    if predicted.size == 0:
        return validation_prior / validation_prior.sum()
    shares = np.bincount(predicted, minlength=n_classes)[:n_classes] / predicted.size
    weights = np.clip(np.linalg.lstsq(confusion, shares, rcond=None)[0], 0.0, None)
    prior = weights * validation_prior
    total = prior.sum()
    return prior / total if total > 0 else validation_prior / validation_prior.sum()


def prior_log_shift(prior, reference_prior) -> np.ndarray:
    """The logit offsets that move a model from its reference prior to
    ``prior``: log(prior / reference), finite even for a zero prior."""
    return np.log(np.maximum(np.asarray(prior, np.float64), 1e-6)) - np.log(np.maximum(np.asarray(reference_prior, np.float64), 1e-6))


def shift_priors(probs: np.ndarray, log_shift) -> np.ndarray:
    """Posteriors under other priors: probs × exp(log_shift), renormalised."""
    adjusted = np.asarray(probs, np.float64) * np.exp(np.asarray(log_shift, np.float64))
    return adjusted / np.maximum(adjusted.sum(axis=1, keepdims=True), 1e-300)
