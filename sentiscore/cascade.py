"""The scoring cascade of wide-deep models (NumPy only): when the char
n-gram path alone is confident, the row's label is the one the whole model
would give, so the BiLSTM (and, for ELMo models, the biLM) is skipped.

The deep path is trained as a correction to the prefit n-gram path's logits
and is small on most rows, so the n-gram path's confident calls almost never
change. How confident is "confident" is fitted once, at training time, on
the validation split: the lowest threshold at which the n-gram path's labels
differ from the whole model's on at most ``max_label_change`` of the
validation rows, and never below 0.8 (measured on sources left out of
training). Skipped rows carry the n-gram path's own calibrated
probabilities, and the output marks them (``scored_by``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .calibration import fit_temperature, softmax

DEFAULT_MAX_LABEL_CHANGE = 0.0005  # half of the 0.1% of labels the cascade may change (issue #16)
# The validation split is in domain; out of domain the deep path overturns more confident n-gram calls.
# Left-out sources (README, "Cascade"): at the fitted thresholds (0.58-0.75) up to 0.46% of a source's
# labels changed; from 0.8 up, at most 0.06% on every source.
DEFAULT_MIN_THRESHOLD = 0.8


@dataclass(frozen=True)
class CascadeConfig:
    """What the model card records under ``cascade``."""

    threshold: float  # n-gram path confidence at or above which the deep path is skipped
    wide_temperature: float  # the n-gram path's own calibration, for the probabilities of skipped rows
    max_label_change: float  # the budget the threshold was fitted to
    skip_share: float  # share of validation rows skipped
    label_change: float  # share of validation rows whose label the cascade changes
    rows: int  # validation rows it was fitted on
    min_threshold: float = DEFAULT_MIN_THRESHOLD  # the floor it was fitted with

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "CascadeConfig":
        return cls(float(raw["threshold"]), float(raw["wide_temperature"]), float(raw["max_label_change"]),
                   float(raw["skip_share"]), float(raw["label_change"]), int(raw["rows"]),
                   float(raw.get("min_threshold", DEFAULT_MIN_THRESHOLD)))


def fit_cascade(wide_logits: np.ndarray, full_labels: np.ndarray, y_true: np.ndarray,
                max_label_change: float = DEFAULT_MAX_LABEL_CHANGE,
                min_threshold: float = DEFAULT_MIN_THRESHOLD) -> CascadeConfig | None:
    """The cascade for a model whose validation rows have these n-gram path
    logits (before calibration), whole-model labels and true labels; None
    when no threshold ≥ ``min_threshold`` keeps the label changes within budget."""
    n = full_labels.size
    if n == 0:
        return None
    temperature = fit_temperature(wide_logits, y_true)
    probs = softmax(wide_logits / temperature)
    confidence = probs.max(axis=1)
    changed = probs.argmax(axis=1) != full_labels
    order = np.argsort(-confidence, kind="stable")
    conf_sorted = confidence[order]
    changes_sorted = np.cumsum(changed[order])
    # A threshold skips every row at or above it: only cut where the next row is strictly less confident.
    cut_ok = np.append(conf_sorted[1:] < conf_sorted[:-1], True) & (conf_sorted >= min_threshold)
    within = changes_sorted <= max_label_change * n
    candidates = np.flatnonzero(cut_ok & within)
    if candidates.size == 0:
        return None
    last = int(candidates[-1])
    return CascadeConfig(
        threshold=round(float(conf_sorted[last]), 6),
        wide_temperature=round(temperature, 4),
        max_label_change=max_label_change,
        skip_share=round((last + 1) / n, 4),
        label_change=round(int(changes_sorted[last]) / n, 6),
        rows=int(n),
        min_threshold=min_threshold,
    )


def sum_per_text(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Rows of ``values`` summed per text in float64, for texts laid end to
    end (text i's are the next ``counts[i]``; a text with none sums to 0)."""
    out = np.zeros((counts.size, *values.shape[1:]), np.float64)
    has = counts > 0
    if has.any():  # reduceat would give an empty segment the next row, so those are left at 0
        out[has] = np.add.reduceat(values, (np.cumsum(counts) - counts)[has], axis=0, dtype=np.float64)
    return out


# N-gram ids gathered at a time by the functions below: a chunk of 10,000 texts holds ~1.5M, and
# gathering all at once put ~30 MiB of transient arrays (table rows, float64 weights) at the peak
# of every chunk's scoring (BENCHMARKS.md, "Memory, 2026-12-04 (night)").
SLICE_IDS = 1 << 17


def text_slices(counts: np.ndarray, max_ids: int | None = None):
    """(texts, ids) slices covering texts laid end to end (text i's ids are
    the next ``counts[i]``), each of whole texts and at most ``max_ids`` ids
    (or one text, if it alone has more). Per-text sums over the slices equal
    sums over the whole. ``max_ids``: default ``SLICE_IDS``."""
    max_ids = max_ids or SLICE_IDS
    ends = np.cumsum(counts)
    first_text = first_id = 0
    while first_text < counts.size:
        end_text = max(first_text + 1, int(np.searchsorted(ends, first_id + max_ids, side="right")))
        end_id = int(ends[end_text - 1])
        yield slice(first_text, end_text), slice(first_id, end_id)
        first_text, first_id = end_text, end_id


def wide_norms_flat(flat: np.ndarray, counts: np.ndarray, idf: np.ndarray | None = None) -> np.ndarray:
    """What the n-gram path divides each text's summed weights by, as its
    Keras layer does, for texts whose ids are laid end to end (text i's are
    the next ``counts[i]``): √count, or with idf weighting the L2 norm of
    the ids' idf weights."""
    if idf is None:
        return np.sqrt(np.maximum(counts, 1)).astype(np.float32)
    squares = np.zeros(counts.size, np.float64)
    for texts, ids in text_slices(counts):
        weights = np.take(idf, flat[ids]).astype(np.float64)  # take: 3-4x faster than indexing a large table
        squares[texts] = sum_per_text(weights * weights, counts[texts])
    return np.maximum(np.sqrt(squares), 1e-6).astype(np.float32)


def wide_logits_flat(table: np.ndarray, bias: np.ndarray, flat: np.ndarray, counts: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """The n-gram path's logits, as its Keras layer computes them, for texts
    whose ids are laid end to end (text i's are the next ``counts[i]``;
    ``norms`` from :func:`wide_norms_flat`): the table rows of the real ids
    summed per text (no padded matrix), over the norm, plus bias. ``np.take``
    gathers the rows: the same values as ``table[flat]``, 3-4x faster for rows
    this narrow."""
    sums = np.zeros((counts.size, table.shape[1]), np.float64)
    for texts, ids in text_slices(counts):
        sums[texts] = sum_per_text(np.take(table, flat[ids], axis=0), counts[texts])
    return (sums / norms[:, None] + bias).astype(np.float32)


def split_rows(logits: np.ndarray, cascade: CascadeConfig) -> tuple[np.ndarray, np.ndarray]:
    """(mask of rows the n-gram path decides, their calibrated probabilities)."""
    probs = softmax(logits / cascade.wide_temperature)
    return probs.max(axis=1) >= cascade.threshold, probs
