"""Evaluation: score labelled data with a model and measure it
(scikit-learn metrics). Streams the file, so only two small integer arrays
per row are held in memory."""

from __future__ import annotations

import heapq
import itertools

import numpy as np

from .calibration import reliability
from .config import DEFAULT_CHUNK_ROWS
from .errors import InputError
from .io import INPUT_FORMATS, detect_format, open_input, source_groups

UNSCORED = -1  # prediction for rows that got no label (empty text...): always wrong
MISTAKES_SHOWN = 20




def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str], present_only: bool = False) -> dict:
    """``present_only``: macro-F1 over the classes that occur in ``y_true``
    (for a source without neutral rows, an F1 of 0 for neutral says nothing)."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    classes = sorted(set(y_true.tolist())) if present_only else list(range(len(class_names)))
    if y_true.size == 0:
        return {"rows": 0, "accuracy": float("nan"), "macro_f1": float("nan"), "per_class": {}, "confusion_matrix": []}
    all_classes = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=all_classes, zero_division=0
    )
    return {
        "rows": int(y_true.size),
        "accuracy": round(float(np.mean(y_true == y_pred)), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)), 4),
        "unscored": int(np.sum(y_pred == UNSCORED)),
        "per_class": {
            name: {"precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=all_classes).tolist(),
    }


def label_shares(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    """Each label's share of the true labels and of the predicted ones (rows
    that got a label): where a model calls too much or too little 中评 shows
    here before it shows in F1."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    y_pred = y_pred[y_pred != UNSCORED]
    n = len(class_names)

    def shares(ids: np.ndarray) -> dict:
        counts = np.bincount(ids, minlength=n)[:n]
        return {name: round(float(c) / max(1, ids.size), 4) for name, c in zip(class_names, counts)}

    return {"true": shares(y_true), "predicted": shares(y_pred)}


def evaluate(data_path, model=None, text_column: str = "txt", label_column: str = "label", group_column: str | None = "source",
             workers: int | None = None, batch_size: int | None = None, input_format: str | None = None, encoding: str = "utf-8",
             scorer=None, adapt_priors: bool = False, prior_estimator: str = "bbse", adapt_domain: bool = False) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1, confusion matrix,
    and the same per value of ``group_column`` when the data has it (the
    part before ':' in our ``source`` column, e.g. weibo). Per-group
    macro-F1 averages over the classes that group holds. ``adapt_priors``:
    measure ``score --adapt-priors`` (priors estimated from the texts alone,
    never the labels, by ``prior_estimator``); ``adapt_domain``: measure
    ``score --adapt-domain`` (a file model self-trained on the texts)."""
    from .pipeline import Scorer, adaptation_line, default_chunk_rows
    from .train import label_strings

    fmt = detect_format(data_path, input_format, INPUT_FORMATS, "--input-format")
    source = open_input(data_path, fmt, chunk_size=DEFAULT_CHUNK_ROWS, encoding=encoding)
    for col in (text_column, label_column):
        if col not in source.schema.names:
            raise InputError(f"{data_path} has no column {col!r}; its columns are: {', '.join(source.schema.names)}")
    has_group = bool(group_column) and group_column in source.schema.names
    own = scorer is None
    if own:
        scorer = Scorer.from_model(model, workers=workers, batch_size=batch_size, top_k=0)
    labels = scorer.labels
    priors = None
    index = {value: i for i, (value, _) in enumerate(labels)}
    name_index = {name: i for i, (_, name) in enumerate(labels)}
    y_true, y_pred, confidences, groups = [], [], [], []
    mistakes: list = []  # heap of the most confident mistakes: (confidence, n, record)
    tiebreak = itertools.count()
    try:
        chunk_rows = default_chunk_rows(scorer.card)
        if chunk_rows != DEFAULT_CHUNK_ROWS:  # opened first only to check the columns before the model loads
            source = open_input(data_path, fmt, chunk_size=chunk_rows, encoding=encoding)
        with scorer.keeping_adaptation():
            if adapt_priors or adapt_domain:  # inside the try: a failing first pass still closes our scorer
                first = open_input(data_path, fmt, chunk_size=chunk_rows, encoding=encoding)
                priors = scorer.adapt_to_file(first.batches, text_column, adapt_priors, prior_estimator, adapt_domain)
                if adapt_priors:
                    scorer.set_priors(priors)
                if adapt_domain:
                    adaptation = adaptation_line(scorer)
            for batch in source.batches:
                raw = label_strings(batch.column(label_column))
                unknown = sorted({v for v in raw if v is not None and v not in index})
                if unknown:
                    raise InputError(
                        f"{data_path}: label values {', '.join(unknown[:10])} are not labels of model {scorer.loaded.name} "
                        f"({', '.join(v for v, _ in labels)})"
                    )
                keep = np.array([v is not None for v in raw])
                scored = scorer.score_batch(batch, text_column, keep_columns=[])
                predicted = scored.column("label").to_pylist()
                true_ids = np.array([index[v] for v in raw if v is not None], np.int64)
                pred_ids = np.array([name_index[p] if p is not None else UNSCORED for p, k in zip(predicted, keep) if k], np.int64)
                confidence = np.nan_to_num(scored.column("confidence").to_numpy(zero_copy_only=False).astype(float))[keep]
                y_true.append(true_ids)
                y_pred.append(pred_ids)
                confidences.append(confidence)
                texts = batch.column(text_column).to_pylist()
                kept_texts = [t for t, k in zip(texts, keep) if k]
                for i in np.flatnonzero((pred_ids != true_ids) & (pred_ids != UNSCORED)):
                    record = {"text": kept_texts[i], "true": labels[true_ids[i]][1], "predicted": labels[pred_ids[i]][1],
                              "confidence": round(float(confidence[i]), 4)}
                    item = (float(confidence[i]), next(tiebreak), record)  # never compares the dicts
                    if len(mistakes) < MISTAKES_SHOWN:
                        heapq.heappush(mistakes, item)
                    elif item[0] > mistakes[0][0]:
                        heapq.heapreplace(mistakes, item)
                if has_group:
                    groups.append(source_groups(batch.column(group_column))[keep])
    finally:
        if own:
            scorer.close()
    y_true_all = np.concatenate(y_true) if y_true else np.zeros(0, np.int64)
    y_pred_all = np.concatenate(y_pred) if y_pred else np.zeros(0, np.int64)
    names = [name for _, name in labels]
    result = classification_metrics(y_true_all, y_pred_all, names)
    result["model"] = scorer.loaded.name
    result["model_hash"] = scorer.loaded.hash
    result["labels"] = names
    result["label_shares"] = label_shares(y_true_all, y_pred_all, names)
    # The true shares as score's option: a hand-labelled sample of a file gives the shares to score the file with.
    result["priors_option"] = "--priors " + ",".join(f"{value}={result['label_shares']['true'][name]:.4f}" for value, name in labels)
    if priors is not None:
        result["adapted_priors"] = {name: round(float(p), 4) for name, p in zip(names, priors)}
        result["prior_estimator"] = prior_estimator
    if adapt_domain:
        result["adapted_domain"] = adaptation
    conf_all = np.concatenate(confidences) if confidences else np.zeros(0)
    scored = y_pred_all != UNSCORED
    calibration = reliability(conf_all[scored], (y_true_all == y_pred_all)[scored])
    result["calibration"] = {**calibration, "ece": round(calibration["ece"], 4)}
    result["most_confident_mistakes"] = [record for _, _, record in sorted(mistakes, key=lambda m: (-m[0], m[1]))]
    if has_group:
        group_arr = np.concatenate(groups) if groups else np.zeros(0, str)
        result["by_group"] = {}
        for g in sorted(set(group_arr.tolist())):
            in_group = group_arr == g
            metrics = classification_metrics(y_true_all[in_group], y_pred_all[in_group], names, present_only=True)
            result["by_group"][str(g)] = {**{k: metrics[k] for k in ("rows", "accuracy", "macro_f1")},
                                          "label_shares": label_shares(y_true_all[in_group], y_pred_all[in_group], names)}
    return result


def _shares_cell(shares: dict, names: list[str]) -> str:
    """'45/47 19/4 36/49': true/predicted percent per label."""
    return " ".join(f"{shares['true'][n] * 100:.0f}/{shares['predicted'][n] * 100:.0f}" for n in names)


def format_report(result: dict) -> str:
    """A readable plain-text table of an ``evaluate`` result."""
    names = result["labels"]
    lines = [
        f"model {result['model']}@{result['model_hash']}  rows {result['rows']:,}  unscored {result.get('unscored', 0):,}",
        *([f"priors adapted by {result.get('prior_estimator', 'em').upper()}: {', '.join(f'{k} {v:.4f}' for k, v in result['adapted_priors'].items())}"]
          if result.get("adapted_priors") else []),
        *([f"adapted to the file: {result['adapted_domain']}"] if result.get("adapted_domain") else []),
        f"accuracy {result['accuracy']:.4f}   macro-F1 {result['macro_f1']:.4f}",
        "",
        f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for name in names:
        m = result["per_class"][name]
        lines.append(f"{name:<10}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>10,}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)", " " * 10 + "".join(f"{n:>10}" for n in names)]
    for name, row in zip(names, result["confusion_matrix"]):
        lines.append(f"{name:<10}" + "".join(f"{v:>10,}" for v in row))
    if result.get("label_shares"):
        shares = result["label_shares"]
        lines += ["", "label shares, true → predicted: " + ", ".join(
            f"{n} {shares['true'][n] * 100:.1f}% → {shares['predicted'][n] * 100:.1f}%" for n in names)]
        if result.get("priors_option"):
            lines.append(f"to score a file with the true shares (e.g. DATA is a labelled sample of it): "
                         f"{result['priors_option']} --priors-mode match")
    if result.get("by_group"):
        lines += ["", f"{'group':<20}{'rows':>8}{'accuracy':>10}{'macro-F1':>10}   % true/predicted: {' '.join(names)}"]
        for group, m in result["by_group"].items():
            cell = _shares_cell(m["label_shares"], names) if "label_shares" in m else ""
            lines.append(f"{group:<20}{m['rows']:>8,}{m['accuracy']:>10.4f}{m['macro_f1']:>10.4f}   {cell}")
    return "\n".join(lines)
