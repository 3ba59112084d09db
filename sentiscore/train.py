"""Training, in stages that each take what the one before returned:

    prepare_data  read labelled rows, split, segment, embed, hash n-grams
    fit           build the classifier, prefit the wide path, fit with early stopping
    calibrate     temperature (and optional class biases) on the validation split
    model_card    the meta.json dict
    train         the four, the dev set scored in memory, then one save of the model directory

``train`` returns the model's card."""

from __future__ import annotations

import datetime as _dt
import platform
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .artifacts import save_model_dir, sha256_of
from .cascade import DEFAULT_MAX_LABEL_CHANGE, DEFAULT_MIN_THRESHOLD, fit_cascade
from .config import PREFIT_WIDE_TRAININGS, TrainConfig, default_workers
from .errors import InputError, TrainingError
from .io import INPUT_FORMATS, detect_format, read_table, source_groups
from .ngrams import CharNgramHasher
from .segment import ParallelSegmenter, SegmentedBatch, builtin_stopwords_text, segmenter_version

_WIDTH_STEP = 16
MIDDLE_CLASS = 1  # with three labels, the index of the middle one (中评): what binary sources could not say


def label_strings(column: pa.Array) -> list[str | None]:
    """Label values as strings, with integral floats written as ints (1.0 → '1')
    so labels read from CSV, Parquet or JSON compare equal."""
    values = column.to_pylist()
    out = []
    for v in values:
        if v is None:
            out.append(None)
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))
        elif not str(v).strip():  # CSV cells read as text: empty means missing
            out.append(None)
        else:
            text = str(v).strip()
            try:
                number = float(text)
                out.append(str(int(number)) if number.is_integer() else text)
            except ValueError:
                out.append(text)
    return out


def load_labelled(path, text_column: str, label_column: str, labels, fmt: str | None = None, extra_columns=()):
    """Texts, class indices and any extra columns; rows with null text or
    label are dropped and counted. Unknown label values are an error."""
    fmt = detect_format(path, fmt, INPUT_FORMATS, "--input-format")
    table = read_table(path, fmt)
    for col in (text_column, label_column):
        if col not in table.column_names:
            raise InputError(
                f"{path} has no column {col!r}; its columns are: {', '.join(table.column_names)}"
            )
    texts = pc.cast(table.column(text_column), pa.string()).to_pylist()
    raw = label_strings(table.column(label_column))
    index = {value: i for i, (value, _) in enumerate(labels)}
    unknown = sorted({v for v in raw if v is not None and v not in index})
    if unknown:
        raise InputError(
            f"{path}: label values {', '.join(unknown[:10])} are not in --labels "
            f"({', '.join(v for v, _ in labels)}); add them, e.g. --labels \"-1=负评,0=中评,1=正评\""
        )
    keep = [i for i, (t, v) in enumerate(zip(texts, raw)) if t is not None and t.strip() and v is not None]
    extras = {}
    for col in extra_columns:
        if col in table.column_names:
            values = table.column(col).to_pylist()
            extras[col] = [values[i] for i in keep]
    return (
        [texts[i] for i in keep],
        np.array([index[raw[i]] for i in keep], np.int64),
        len(texts) - len(keep),
        extras,
    )


def _padded(flat: np.ndarray, offsets: np.ndarray, rows: np.ndarray, width_step: int, cap: int) -> np.ndarray:
    lengths = offsets[rows + 1] - offsets[rows]
    width = int(min(cap, max(1, -(-int(lengths.max()) // width_step) * width_step)))
    out = np.zeros((rows.size, width), np.int32)
    for r, i in enumerate(rows):
        seq = flat[offsets[i] : offsets[i] + min(lengths[r], width)]
        out[r, : seq.size] = seq
    return out


@dataclass(frozen=True)
class BatchSource:
    """What every training subset is cut from: the embedder and its features,
    the n-gram ids (when the wide path trains with the rest), labels and
    weights of every row, and the batching settings."""

    embedder: object
    features: object
    ngram_ids: np.ndarray | None  # flat, over the full data
    ngram_offsets: np.ndarray | None
    y: np.ndarray
    weights: np.ndarray
    batch_size: int
    seed: int
    maxlen: int
    input_specs: dict  # {name: (shape after batch, dtype)} of the deep inputs


class BucketedBatches:
    """Length-bucketed batches of ``rows`` (indices into the full data),
    padded to their own longest text, reshuffled every pass when
    ``shuffle``. The deep inputs come from ``embedder.encode(features, …)``
    (ids or ELMo vectors). ``wide_offset``: (len(rows), classes) fixed
    wide-path logits, fed instead of the n-gram ids. ``to_tf()`` gives a
    tf.data pipeline whose signature leaves batch size and width free
    (Keras' own adapters fix the width from the first batch)."""

    def __init__(self, source: BatchSource, rows: np.ndarray, shuffle: bool, wide_offset: np.ndarray | None = None):
        self.embedder, self.features, self.rows = source.embedder, source.features, rows
        self.ngram_ids, self.ngram_offsets = source.ngram_ids, source.ngram_offsets
        self.wide_offset = wide_offset
        self.y, self.weights = source.y[rows], source.weights[rows]
        self.batch_size, self.shuffle, self.maxlen = source.batch_size, shuffle, source.maxlen
        self.input_specs = source.input_specs
        self.rng = np.random.default_rng(source.seed)
        self.lengths = np.minimum(self.features.lengths[rows], self.maxlen)
        self.batches = self._plan()

    def _plan(self) -> list[np.ndarray]:
        noise = self.rng.uniform(0, 2, self.lengths.size) if self.shuffle else np.zeros(self.lengths.size)
        order = np.argsort(self.lengths + noise, kind="stable")
        batches = [order[i : i + self.batch_size] for i in range(0, order.size, self.batch_size)]
        if self.shuffle:
            self.rng.shuffle(batches)
        return batches

    def __len__(self) -> int:
        return len(self.batches)

    def deep_inputs(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        width = int(min(self.maxlen, max(1, -(-int(self.lengths[rows].max()) // _WIDTH_STEP) * _WIDTH_STEP)))
        x = self.embedder.encode(self.features, self.rows[rows], width)
        x.pop("mask")
        return x

    def inputs(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        x = self.deep_inputs(rows)
        if self.wide_offset is not None:
            x["wide_offset"] = self.wide_offset[rows]
        elif self.ngram_ids is not None:
            x["ngram_ids"] = _padded(self.ngram_ids, self.ngram_offsets, self.rows[rows], 64, 1 << 30)
        return x

    def __iter__(self):
        for rows in self.batches:
            yield self.inputs(rows), self.y[rows], self.weights[rows]
        if self.shuffle:
            self.batches = self._plan()

    def to_tf(self):
        import tensorflow as tf

        x_spec = {name: tf.TensorSpec([None, *shape], dtype) for name, (shape, dtype) in self.input_specs.items()}
        if self.wide_offset is not None:
            x_spec["wide_offset"] = tf.TensorSpec([None, self.wide_offset.shape[1]], tf.float32)
        elif self.ngram_ids is not None:
            x_spec["ngram_ids"] = tf.TensorSpec([None, None], tf.int32)
        signature = (x_spec, tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.float32))
        data = tf.data.Dataset.from_generator(lambda: iter(self), output_signature=signature)
        return data.apply(tf.data.experimental.assert_cardinality(len(self))).prefetch(2)


def _ragged_ngrams(hasher: CharNgramHasher, texts: list[str], step: int = 4096):
    parts = [hasher.transform_flat(texts[start : start + step]) for start in range(0, len(texts), step)]
    lengths = np.concatenate([counts for _, counts in parts])
    return np.concatenate([ids for ids, _ in parts]), np.concatenate([[0], np.cumsum(lengths)])


def _ids_of_rows(ngram_ids: np.ndarray, ngram_offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The flat n-gram ids of these rows, one row after another."""
    return np.concatenate([ngram_ids[ngram_offsets[i] : ngram_offsets[i + 1]] for i in rows]) if rows.size else ngram_ids[:0]


def hashed_bag_matrix(ngram_ids: np.ndarray, ngram_offsets: np.ndarray, rows: np.ndarray, num_buckets: int,
                      idf: np.ndarray | None = None):
    """The wide path's input as a sparse matrix, exactly what
    HashedNgramLinear computes from the id lists: counts / sqrt(n-grams in
    the text), or with ``idf`` (ids distinct per row) idf / ‖idf of the
    row's ids‖₂."""
    from scipy.sparse import csr_matrix

    lengths = ngram_offsets[rows + 1] - ngram_offsets[rows]
    cols = _ids_of_rows(ngram_ids, ngram_offsets, rows)
    if idf is None:
        values = np.repeat(1.0 / np.sqrt(np.maximum(lengths, 1)), lengths)
    else:
        weights = idf[cols].astype(np.float64)
        norms = np.sqrt(np.bincount(np.repeat(np.arange(rows.size), lengths), weights=weights**2, minlength=rows.size))
        values = weights / np.repeat(np.maximum(norms, 1e-6), lengths)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    matrix = csr_matrix((values, cols, indptr), shape=(rows.size, num_buckets))
    matrix.sum_duplicates()
    return matrix


def idf_weights(ngram_ids: np.ndarray, ngram_offsets: np.ndarray, rows: np.ndarray, num_buckets: int, min_df: int = 2) -> np.ndarray:
    """Per-bucket inverse document frequency over ``rows`` (scikit-learn's
    smoothed idf, ln((1 + n) / (1 + df)) + 1), zero for buckets seen in fewer
    than ``min_df`` rows (as the peer's min_df drops one-off n-grams). Ids
    must be distinct per row (the hasher's idf weighting)."""
    df = np.bincount(_ids_of_rows(ngram_ids, ngram_offsets, rows), minlength=num_buckets)[:num_buckets]
    idf = np.log((1.0 + rows.size) / (1.0 + df)) + 1.0
    return np.where(df >= min_df, idf, 0.0).astype(np.float32)


def fit_wide_path(matrix, y: np.ndarray, sample_weight: np.ndarray, n_classes: int, c: float, seed: int):
    """Logistic regression on the hashed n-gram bag (what the char TF-IDF +
    LR peer does), as (table, bias) for HashedNgramLinear. Fitting it first
    and freezing it keeps Adam from memorising rare n-grams, which made the
    jointly trained wide path overfit after one epoch."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=c, max_iter=500, random_state=seed)
    lr.fit(matrix, y, sample_weight=sample_weight)
    table = np.zeros((matrix.shape[1], n_classes), np.float32)
    bias = np.zeros(n_classes, np.float32)
    if n_classes == 2:  # sklearn keeps one weight vector for two classes: logits (0, w·x + b)
        table[:, 1] = lr.coef_[0]
        bias[1] = lr.intercept_[0]
    else:
        table[:, lr.classes_] = lr.coef_.T
        bias[lr.classes_] = lr.intercept_
    return table, bias


def _inference_inputs(data: "BucketedBatches", rows: np.ndarray, ngram_ids, ngram_offsets) -> dict:
    """The saved model's inputs for some rows of a subset: the deep inputs,
    and the n-gram ids (not the training-time offsets) for the wide path."""
    x = data.deep_inputs(rows)
    if ngram_ids is not None:
        x["ngram_ids"] = _padded(ngram_ids, ngram_offsets, data.rows[rows], 64, 1 << 30)
    return x


def _source_columns(groups: np.ndarray, train_idx: np.ndarray):
    """One indicator column per source group of the training rows (a row of
    another group, e.g. a --val-source, gets none), and the groups' names."""
    import scipy.sparse as sp

    names = np.unique(groups[train_idx])
    known = np.flatnonzero(np.isin(groups, names))
    columns = sp.csr_matrix((np.ones(known.size, np.float32), (known, np.searchsorted(names, groups[known]))),
                            shape=(groups.size, names.size))
    return columns, names.tolist()


def stack_wide_path(ngram_ids, ngram_offsets, train_idx, val_idx, y, sample_weights, n_classes, config: TrainConfig,
                    groups: np.ndarray | None = None):
    """Fit the wide path on all training rows (kept for scoring) and, for a
    deep path that learns to correct it (``prefit``), on K folds of them
    (out-of-fold logits for training the deep layers; zero for
    ``independent``).
    Returns (logits for every row, table, bias, idf or None, source
    intercepts or None); validation rows get the full fit's logits, as at
    scoring time. With idf weighting the idf (from the training rows) is
    folded into the returned table, as HashedNgramLinear expects.

    With ``wide_source_intercepts`` every fit also has one intercept per
    source group (``groups``), and the logits the deep layers train and
    validate against include each row's; the returned bias is the one under
    which the n-gram path alone predicts the training rows' label mix on the
    validation rows, since a new file's source is unknown."""
    import scipy.sparse as sp
    from sklearn.model_selection import StratifiedKFold

    from joblib import Parallel, delayed

    from .calibration import prior_matching_bias

    buckets = config.wide.num_buckets
    idf = idf_weights(ngram_ids, ngram_offsets, train_idx, buckets) if config.wide.weighting == "idf" else None
    full = hashed_bag_matrix(ngram_ids, ngram_offsets, train_idx, buckets, idf)
    val_matrix = hashed_bag_matrix(ngram_ids, ngram_offsets, val_idx, buckets, idf)
    intercepts = None
    if config.model.wide_source_intercepts:
        columns, source_names = _source_columns(groups, train_idx)
        full = sp.hstack([full, columns[train_idx]], format="csr")
    y_train, w_train = y[train_idx], sample_weights[train_idx]
    # Out-of-fold logits are what a correcting deep path trains against; an independent one needs none.
    folds = list(StratifiedKFold(n_splits=config.model.wide_folds, shuffle=True, random_state=config.seed).split(train_idx, y_train)) \
        if config.model.wide_training == "prefit" else []
    parts = [np.arange(train_idx.size)] + [fit_part for fit_part, _ in folds]
    # lbfgs runs on one core: fit the full model and the folds side by side.
    fits = Parallel(n_jobs=min(len(parts), config.workers or default_workers()))(
        delayed(fit_wide_path)(full[part], y_train[part], w_train[part], n_classes, config.model.wide_c, config.seed) for part in parts
    )
    table, bias = fits[0]
    logits = np.zeros((y.size, n_classes), np.float32)
    for (_, held_out), (fold_table, fold_bias) in zip(folds, fits[1:]):
        logits[train_idx[held_out]] = full[held_out] @ fold_table + fold_bias
    if config.model.wide_source_intercepts:
        logits[val_idx] = sp.hstack([val_matrix, columns[val_idx]], format="csr") @ table + bias
        source_table, table = table[buckets:], table[:buckets]
        # A file's source is unknown at scoring: the shared intercept is set so that the n-gram path
        # alone predicts, on the validation rows, the label mix it was trained on.
        trained_mix = np.bincount(y_train, weights=w_train, minlength=n_classes) / w_train.sum()
        shift = prior_matching_bias(val_matrix @ table + bias, trained_mix)
        intercepts = {name: [round(float(v), 4) for v in source_table[i] - shift]
                      for i, name in enumerate(source_names)}
        bias = (bias + shift).astype(np.float32)
    else:
        logits[val_idx] = val_matrix @ table + bias
    if idf is not None:
        table = table * idf[:, None]
    return logits, table, bias, idf, intercepts


def source_weights(groups: np.ndarray, mode: str) -> dict[str, float] | None:
    """Per-source-group loss weights of the training rows' ``groups``:
    ``balanced`` (rows / (groups × the group's rows), so every group weighs
    the same in all), its square root ``sqrt``, or None for ``none``."""
    if mode == "none":
        return None
    names, counts = np.unique(groups, return_counts=True)
    return {str(name): float(w) for name, w in zip(names, _balancing_weights(counts, mode))}


def _balancing_weights(counts: np.ndarray, mode: str) -> np.ndarray:
    """``balanced`` (total / (kinds × count)) or its square root, per kind."""
    balanced = counts.sum() / (counts.size * np.maximum(counts, 1))
    return balanced if mode == "balanced" else np.sqrt(balanced)


def class_weights(y: np.ndarray, n_classes: int, mode: str = "sqrt") -> np.ndarray:
    """Per-class loss weights: ``balanced`` (n / (classes × count)), its
    square root ``sqrt`` (full balancing made the scarce neutral class
    swallow confident reviews), or ``none``."""
    if mode == "none":
        return np.ones(n_classes)
    return _balancing_weights(np.bincount(y, minlength=n_classes).astype(np.float64), mode)


@dataclass
class PreparedData:
    """Everything ``fit`` needs, computed once from the labelled file."""

    texts: list[str]
    y: np.ndarray  # class index per row
    dropped: int  # rows without text or label
    train_idx: np.ndarray
    val_idx: np.ndarray
    segmented: SegmentedBatch
    embedder: object
    features: object  # the embedder's features of every row
    embedder_card: dict  # {"settings": ..., "summary": ..., "initial_embedding": array or None}
    ngram_ids: np.ndarray | None  # flat hashed n-gram ids of every row (wide-deep)
    ngram_offsets: np.ndarray | None
    class_weights: np.ndarray  # per class
    sources: dict[str, int] | None  # rows per source group, when the file has a group column
    groups: np.ndarray | None = None  # each row's source group (the part of the group column before ':')
    source_weights: dict[str, float] | None = None  # per source group (--source-weights), None: all 1

    @property
    def sample_weights(self) -> np.ndarray:
        weights = self.class_weights[self.y]
        if self.source_weights:
            names, group_of_row = np.unique(self.groups, return_inverse=True)
            weights = weights * np.array([self.source_weights.get(str(name), 1.0) for name in names])[group_of_row]
        return weights.astype(np.float32)


@dataclass
class FitResult:
    model: object  # the Keras classifier (uncalibrated)
    epochs_run: int
    best_epoch: int
    val_logits: np.ndarray  # validation rows, in ``val_order``
    val_order: np.ndarray  # positions into PreparedData.val_idx
    wide_only_metrics: dict | None
    source_intercepts: dict | None = None  # --wide-source-intercepts: each group's logits relative to scoring's


@dataclass
class Calibration:
    temperature: float
    bias: np.ndarray
    val_metrics: dict  # after calibration
    record: dict  # what the card says


def prepare_data(data_path, config: TrainConfig, group_column: str = "source", log: Callable[[str], None] = print) -> PreparedData:
    """Read, check, split, segment, embed and (wide-deep) hash the n-grams."""
    labels = config.labels
    texts, y, dropped, extras = load_labelled(data_path, config.text_column, config.label_column, labels,
                                              extra_columns=(group_column,))
    n_classes = len(labels)
    present = np.bincount(y, minlength=n_classes)
    if len(texts) < 10:
        raise TrainingError(f"{data_path}: only {len(texts)} usable rows; training needs at least 10")
    if (present < 2).any():
        missing = [labels[i][1] for i in np.flatnonzero(present < 2)]
        raise TrainingError(f"{data_path}: classes {', '.join(missing)} have fewer than 2 rows; add data or drop them from --labels")
    log(f"read {len(texts):,} labelled rows from {data_path} ({dropped:,} dropped: empty text or label)")

    groups = _source_groups(extras, group_column)
    train_idx, val_idx = _split(y, groups, config, group_column, data_path)
    workers = config.workers or default_workers()
    with ParallelSegmenter(config.segmenter, config.embedder.maxlen, workers) as segmenter:
        segmented = segmenter.segment(texts)
    embedder, features, embedder_card = _embed(config, segmented, train_idx, log)
    log(f"segmented with jieba_fast ({workers} workers); {embedder_card['summary']}; "
        f"{segmented.truncated.mean():.1%} of texts truncated at maxlen {config.embedder.maxlen}")
    ngram_ids = ngram_offsets = None
    if config.model.arch == "wide-deep":
        ngram_ids, ngram_offsets = _ragged_ngrams(CharNgramHasher(config.wide), texts)
    sources = dict(sorted(Counter(groups.tolist()).items())) if groups is not None else None
    if config.binary_source_loss == "polarity":
        if groups is None:
            raise TrainingError(f"--binary-source-loss polarity needs a {group_column!r} column (--group-column): "
                                "it finds the sources that have no middle-class row")
        binary = sorted(np.unique(groups[polarity_only_rows(y, groups, train_idx)]).tolist())
        log(f"binary-source loss: {', '.join(binary) or 'no source group'} (no {labels[MIDDLE_CLASS][1]} row among "
            "the training rows) train the deep path on negative vs positive only")
    if config.source_weights != "none" and groups is None:
        raise TrainingError(f"--source-weights {config.source_weights} needs a {group_column!r} column (--group-column)")
    if config.model.wide_source_intercepts and (groups is None or np.unique(groups[train_idx]).size < 2):
        raise TrainingError(f"--wide-source-intercepts needs a {group_column!r} column (--group-column) with at least two "
                            f"source groups among the training rows of {data_path}")
    return PreparedData(texts, y, dropped, train_idx, val_idx, segmented, embedder, features, embedder_card,
                        ngram_ids, ngram_offsets, class_weights(y[train_idx], n_classes, config.class_weights), sources, groups,
                        source_weights(groups[train_idx], config.source_weights) if groups is not None else None)


def fit(data: PreparedData, config: TrainConfig, log: Callable[[str], None] = print, verbose: int = 1) -> FitResult:
    """Build the classifier and fit it with early stopping on validation loss
    (a prefit wide path first, for wide-deep); returns it with its
    validation logits."""
    from .evaluate import classification_metrics
    from .model import build_classifier, import_tensorflow, logits_model, stacked_training_model

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(config.seed)
    n_classes = len(config.labels)
    emb_cfg = config.embedder
    y, sample_weights = data.y, data.sample_weights
    # Rows of a binary source carry their class + n_classes: the loss then compares
    # negative vs positive only (that source could not have said "middle").
    y_fit = y + n_classes * polarity_only_rows(y, data.groups, data.train_idx) if config.binary_source_loss == "polarity" else y
    model = build_classifier(config.model, emb_cfg, config.wide, getattr(data.embedder, "size", 0), n_classes,
                             elmo_shape=(data.embedder.n_layers, data.embedder.dim) if emb_cfg.uses_elmo else None)
    if data.embedder_card.get("initial_embedding") is not None:
        embedding = model.get_layer("embedding")
        embedding.set_weights([data.embedder_card["initial_embedding"]])
        embedding.trainable = config.vectors_trainable
    prefit = config.model.arch == "wide-deep" and config.model.wide_training in PREFIT_WIDE_TRAININGS
    wide_offset = wide_only_metrics = source_intercepts = None
    if prefit:
        wide_offset, table, bias, idf, source_intercepts = stack_wide_path(
            data.ngram_ids, data.ngram_offsets, data.train_idx, data.val_idx, y, sample_weights, n_classes, config, data.groups
        )
        wide_layer = model.get_layer("wide_logits")
        wide_layer.set_weights([table, bias] + ([idf] if idf is not None else []))
        wide_layer.trainable = False
        wide_only_metrics = classification_metrics(y[data.val_idx], wide_offset[data.val_idx].argmax(axis=1),
                                                   [name for _, name in config.labels])
        log(f"wide path (logistic regression on hashed char n-grams): validation macro-F1 {wide_only_metrics['macro_f1']:.4f}"
            + (" with each row's source intercept" if source_intercepts else ""))
        if config.model.wide_training == "independent":
            # The deep layers see no n-gram logits while they train: they learn the labels on their own.
            wide_offset = np.zeros_like(wide_offset)

    ngrams = (data.ngram_ids, data.ngram_offsets) if data.ngram_ids is not None and not prefit else (None, None)
    source = BatchSource(data.embedder, data.features, *ngrams, y_fit, sample_weights, config.batch_size, config.seed, emb_cfg.maxlen,
                         {t.name: (tuple(t.shape[1:]), t.dtype) for t in model.inputs if t.name != "ngram_ids"})
    train_data = BucketedBatches(source, data.train_idx, shuffle=True, wide_offset=wide_offset[data.train_idx] if prefit else None)
    val_data = BucketedBatches(source, data.val_idx, shuffle=False, wide_offset=wide_offset[data.val_idx] if prefit else None)
    # With a prefit wide path the deep layers train against its out-of-fold
    # logits (an input), so they learn to correct it where it errs on unseen
    # text rather than on text it has memorised.
    fit_model = stacked_training_model(model, n_classes) if prefit else model
    averaging = {"use_ema": True, "ema_momentum": config.ema_momentum} if config.ema_momentum else {}
    fit_model.compile(
        optimizer=keras.optimizers.Adam(_learning_rate(config, len(train_data)), clipnorm=5.0, **averaging),
        loss=_loss(n_classes, config.label_smoothing, config.binary_source_loss),
        weighted_metrics=[_accuracy(n_classes) if config.binary_source_loss == "polarity" else "accuracy"],
    )
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
    # With weight averaging the averaged weights are swapped in for validation
    # and at each epoch's end, before the stopper keeps the best epoch's: what
    # is validated, stopped on and saved is the average, never the raw weights.
    callbacks = ([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema_momentum else []) + [stopper]
    # Shuffling happens in BucketedBatches (batch order and length noise).
    history = fit_model.fit(train_data.to_tf(), validation_data=val_data.to_tf(), epochs=config.epochs, shuffle=False,
                            callbacks=callbacks, verbose=verbose)
    val_losses = history.history.get("val_loss", [])
    best_epoch = int(np.argmin(val_losses)) + 1 if val_losses else config.epochs

    # Validation batches are length-sorted: keep their order for the labels too.
    to_logits = logits_model(model)
    val_logits = np.concatenate([to_logits(_inference_inputs(val_data, rows, data.ngram_ids, data.ngram_offsets), training=False).numpy()
                                 for rows in val_data.batches])
    return FitResult(model, len(val_losses), best_epoch, val_logits, np.concatenate(val_data.batches), wide_only_metrics,
                     source_intercepts)


def polarity_only_rows(y: np.ndarray, groups: np.ndarray | None, train_idx: np.ndarray) -> np.ndarray:
    """Rows (bool, every row) of the source groups that have no middle-class
    row among the training rows: binary sources, whose labellers could only
    say negative or positive."""
    if groups is None:
        return np.zeros(y.size, bool)
    with_middle = np.unique(groups[train_idx][y[train_idx] == MIDDLE_CLASS])
    return ~np.isin(groups, with_middle)


def _accuracy(n_classes: int):
    """Accuracy on class indices that may carry ``+ n_classes`` (polarity-only rows)."""
    import keras

    def accuracy(y_true, y_pred):
        y = keras.ops.cast(keras.ops.reshape(y_true, [-1]), "int32") % n_classes
        return keras.ops.cast(keras.ops.equal(keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), "int32"), y), "float32")

    return accuracy


def _loss(n_classes: int, label_smoothing: float, binary_source_loss: str = "full"):
    """Cross-entropy on class indices; with label smoothing the targets give
    every class ``label_smoothing / n_classes`` (a confidence penalty). With
    ``binary_source_loss="polarity"`` an index ``c + n_classes`` marks a row of
    a binary source: its loss is ``-log p(c | negative or positive)``, so it
    says which polarity, never that the text is not neutral."""
    import keras

    if binary_source_loss == "polarity":
        ops = keras.ops
        polar = np.ones(n_classes, np.float32)
        polar[MIDDLE_CLASS] = 0.0

        def polarity_aware_crossentropy(y_true, y_pred):
            y = ops.cast(ops.reshape(y_true, [-1]), "int32")
            partial = ops.cast(y >= n_classes, "float32")[:, None]
            target = ops.sum(ops.one_hot(y % n_classes, n_classes) * y_pred, axis=-1)
            support = ops.sum((partial * ops.convert_to_tensor(polar)[None, :] + (1.0 - partial)) * y_pred, axis=-1)
            eps = keras.config.epsilon()
            return ops.log(ops.clip(support, eps, 1.0)) - ops.log(ops.clip(target, eps, 1.0))

        return polarity_aware_crossentropy
    if not label_smoothing:
        return "sparse_categorical_crossentropy"

    def smoothed_crossentropy(y_true, y_pred):
        onehot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, [-1]), "int32"), n_classes)
        return keras.losses.categorical_crossentropy(onehot, y_pred, label_smoothing=label_smoothing)

    return smoothed_crossentropy


def calibrate(data: PreparedData, fitted: FitResult, config: TrainConfig) -> Calibration:
    names = [name for _, name in config.labels]
    val_true = data.y[data.val_idx][fitted.val_order]
    # Trained so that binary sources never say "not neutral", the model gives their
    # texts some 中评 mass: its mean validation posterior holds more 中评 than
    # any training label does. Biases bring it back to the training rows' mix.
    label_mix = (np.bincount(data.y[data.train_idx], minlength=len(names)) / data.train_idx.size
                 if config.binary_source_loss == "polarity" else None)
    return Calibration(*_calibrate(fitted.val_logits, val_true, names, config.calibrate, config.class_bias, label_mix))


def model_card(config: TrainConfig, data: PreparedData, fitted: FitResult, calibration: Calibration, data_path) -> dict:
    """The model's meta.json, less what ``save_model_dir`` adds."""
    from .model import framework_versions

    labels = config.labels
    present = np.bincount(data.y, minlength=len(labels))
    data_path = Path(str(data_path))
    return {
        "name": config.name,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "labels": [{"value": v, "name": n} for v, n in labels],
        "segmenter": _segmenter_card(config.segmenter),
        "embedder": {**config.embedder.to_dict(), **data.embedder_card["settings"]},
        "wide": config.wide.to_dict(),
        "model": config.model.to_dict(),
        "training": {
            "epochs": config.epochs,
            "patience": config.patience,
            "epochs_run": fitted.epochs_run,
            "best_epoch": fitted.best_epoch,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "lr_schedule": config.lr_schedule,
            "seed": config.seed,
            "val_fraction": None if config.val_source else config.val_fraction,
            "val_source": config.val_source,
            "class_weighting": config.class_weights,
            "class_weights": [round(float(w), 4) for w in data.class_weights] if config.class_weights != "none" else None,
            "source_weighting": config.source_weights,
            "source_weights": ({g: round(w, 4) for g, w in data.source_weights.items()} if data.source_weights else None),
            "label_smoothing": config.label_smoothing,
            "binary_source_loss": config.binary_source_loss,
            "ema_momentum": config.ema_momentum or None,
            # Training-only logit offsets of each source group's n-gram path, relative to the intercept scoring uses.
            "source_intercepts": fitted.source_intercepts,
            "vectors_extra_words": config.vectors_extra_words if config.vectors else None,
            "calibration": calibration.record,
            "python": platform.python_version(),
            **framework_versions(),
        },
        "data": {
            "path": data_path.name,
            "sha256": sha256_of(data_path) if data_path.is_file() else None,
            "rows_used": len(data.texts),
            "rows_dropped": data.dropped,
            "train_rows": int(data.train_idx.size),
            "val_rows": int(data.val_idx.size),
            "label_counts": {labels[i][1]: int(c) for i, c in enumerate(present)},
            "sources": data.sources,
        },
        "metrics": {"validation": calibration.val_metrics,
                    **({"validation_wide_only": fitted.wide_only_metrics} if fitted.wide_only_metrics else {})},
    }


def train(data_path, out_dir, config: TrainConfig | None = None, dev_path=None, group_column: str = "source", log: Callable[[str], None] = print, verbose: int = 1) -> dict:
    """Train a model and write it to ``out_dir``: prepare the data, fit,
    calibrate, write the card and the directory. Returns the card."""
    from .model import calibrated

    config = config or TrainConfig()
    data = prepare_data(data_path, config, group_column, log)
    fitted = fit(data, config, log, verbose)
    calibration = calibrate(data, fitted, config)
    record = calibration.record
    log(f"validation: accuracy {calibration.val_metrics['accuracy']:.4f}, macro-F1 {calibration.val_metrics['macro_f1']:.4f} "
        f"(best epoch {fitted.best_epoch}; before calibration {record['validation_macro_f1_before']:.4f}, "
        f"ECE {record['validation_ece_before']:.3f} → {record['validation_ece_after']:.3f})")
    meta = model_card(config, data, fitted, calibration, data_path)
    final_model = calibrated(fitted.model, calibration.temperature, calibration.bias)
    with in_memory_scorer(meta, final_model, data, config) as scorer:
        cascade = cascade_on(scorer, [data.texts[i] for i in data.val_idx], data.y[data.val_idx])
        if cascade is not None:
            meta = {**meta, "cascade": cascade.to_dict()}
            log(f"cascade: the n-gram path alone decides rows it is ≥ {cascade.threshold:.3f} sure of: "
                f"{cascade.skip_share:.1%} of validation rows, {cascade.label_change:.3%} of their labels changed")
        if dev_path is not None:
            # The dev rows are scored as `score` would, cascade included.
            scorer.cascade = cascade
            meta = with_dev_metrics(meta, evaluate_in_memory(dev_path, scorer, config, group_column), dev_path)
            dev = meta["metrics"]["dev"]
            log(f"dev: accuracy {dev['accuracy']:.4f}, macro-F1 {dev['macro_f1']:.4f} on {dev['rows']:,} rows")
    seg_cfg = config.segmenter
    save_model_dir(Path(out_dir), final_model, meta, data.embedder, _stopwords_text(seg_cfg), seg_cfg.user_dict)
    return meta


def in_memory_scorer(meta: dict, keras_model, data: PreparedData, config: TrainConfig):
    """A scorer of the model just trained, before anything is written: built
    from the objects in memory, segmenting with the training settings."""
    from .artifacts import LoadedModel, parse_card
    from .pipeline import Scorer

    card = parse_card(Path("<in memory>"), meta, "unsaved")
    workers = config.workers or default_workers()
    segmenter = ParallelSegmenter(config.segmenter, card.maxlen, workers)
    return Scorer(LoadedModel(card, keras_model, data.embedder), workers=workers, top_k=0, segmenter=segmenter)


def evaluate_in_memory(dev_path, scorer, config: TrainConfig, group_column: str) -> dict:
    """``evaluate`` of the model just trained (:func:`in_memory_scorer`)."""
    from .evaluate import evaluate

    return evaluate(dev_path, scorer=scorer, text_column=config.text_column, label_column=config.label_column,
                    group_column=group_column)


def cascade_on(scorer, texts: list[str], y: np.ndarray, max_label_change: float = DEFAULT_MAX_LABEL_CHANGE,
               min_threshold: float = DEFAULT_MIN_THRESHOLD):
    """The cascade of a wide-deep model fitted on labelled rows it was not
    trained on (its validation split): every row through the whole model,
    then the n-gram path's threshold (:func:`cascade.fit_cascade`). None for
    other models, or when no threshold keeps within the budget."""
    if scorer.hasher is None:
        return None
    prepared = scorer.preprocess(texts)
    forwarded = scorer.forward(prepared, explain=False, logit_parts=True)
    rows = prepared.row_to_unique >= 0
    unique = prepared.row_to_unique[rows]
    tokens = forwarded.segmented.lengths[unique] > 0
    unique, y = unique[tokens], np.asarray(y)[rows][tokens]
    return fit_cascade(forwarded.logit_parts["wide"][unique], forwarded.probs[unique].argmax(axis=1), y, max_label_change,
                       min_threshold)


def validation_rows_of(card, data_path, text_column: str = "txt", label_column: str = "label",
                       group_column: str = "source") -> tuple[list[str], np.ndarray]:
    """The texts and class indices of a trained model's validation split,
    drawn again from its training file with the card's seed and split
    settings. A file whose sha256 or split size differs from the card's is
    a :class:`TrainingError`: the rows would not be the ones it held out."""
    from .config import TrainConfig

    data_card, training = card.data, card.training
    if data_card.get("sha256") and sha256_of(Path(str(data_path))) != data_card["sha256"]:
        raise TrainingError(f"{data_path} is not the file model {card.name} was trained on (sha256 differs from its card)")
    config = TrainConfig(text_column=text_column, label_column=label_column, labels=tuple(card.labels),
                         val_fraction=training.get("val_fraction") or 0.1, val_source=training.get("val_source"),
                         seed=int(training["seed"]))
    texts, y, _dropped, extras = load_labelled(data_path, text_column, label_column, config.labels, extra_columns=(group_column,))
    _train_idx, val_idx = _split(y, _source_groups(extras, group_column), config, group_column, data_path)
    if val_idx.size != int(data_card.get("val_rows", -1)):
        raise TrainingError(f"{data_path}: the split gives {val_idx.size:,} validation rows, the card of {card.name} "
                            f"says {data_card.get('val_rows')}")
    return [texts[i] for i in val_idx], y[val_idx]


def reproduced_validation(scorer, card, data_path, text_column: str = "txt", label_column: str = "label"):
    """A trained model's validation split (:func:`validation_rows_of`) scored
    by ``scorer`` (built with the cascade off, as training scored it):
    texts, class indices, probabilities, and a mask of the rows that have
    tokens (``score`` gives the others no label). A :class:`TrainingError`
    unless the model's macro-F1 on them is the one its card records: for
    cards completed after training (scripts/fit_cascade.py, fit_confusion.py)."""
    from .evaluate import classification_metrics

    texts, y = validation_rows_of(card, data_path, text_column, label_column)
    names = [name for _, name in card.labels]
    probs = scorer.predict(texts)[[f"prob_{name}" for name in names]].to_numpy()
    labelled = ~np.isnan(probs).any(axis=1)
    reproduced = classification_metrics(y[labelled], probs[labelled].argmax(axis=1), names)["macro_f1"]
    recorded = card.metrics["validation"]["macro_f1"]
    # Training measured in Keras, scoring may run ONNX Runtime: a row or two whose
    # classes tie within rounding can flip, which moves a small split's macro-F1 by ~1/rows.
    if abs(reproduced - recorded) > max(5e-4, 1.5 / max(1, len(texts))):
        raise TrainingError(f"{data_path}: the validation split gives {card.name} macro-F1 {reproduced:.4f}, its card says "
                            f"{recorded:.4f}: not the rows it held out")
    return texts, y, probs, labelled


def with_dev_metrics(meta: dict, dev: dict, dev_path) -> dict:
    """The card with the dev set's metrics and the dev file's identity."""
    metrics = {k: dev[k] for k in ("rows", "accuracy", "macro_f1", "per_class", "confusion_matrix", "by_group") if k in dev}
    return {**meta, "metrics": {**meta["metrics"], "dev": metrics},
            "data": {**meta["data"], "dev_path": Path(str(dev_path)).name, "dev_sha256": sha256_of(Path(str(dev_path)))}}


def _source_groups(extras: dict, group_column: str) -> np.ndarray | None:
    """Each row's source group (the part of the group column before ':'),
    or None when the file has no such column."""
    if group_column not in extras:
        return None
    return source_groups(extras[group_column])


def _split(y: np.ndarray, groups: np.ndarray | None, config: TrainConfig, group_column: str, data_path):
    """Training and validation rows: a stratified random split, or (with
    ``val_source``) every row of one source group held out, so early
    stopping and calibration reward what transfers to unseen sources."""
    from sklearn.model_selection import train_test_split

    if not config.val_source:
        return train_test_split(np.arange(y.size), test_size=config.val_fraction, random_state=config.seed, stratify=y)
    if groups is None:
        raise TrainingError(f"--val-source needs a {group_column!r} column in {data_path} (--group-column)")
    held_out = groups == config.val_source
    if held_out.sum() < 10 or (~held_out).sum() < 10:
        known = ", ".join(sorted(set(groups.tolist())))
        raise TrainingError(f"--val-source {config.val_source}: {int(held_out.sum())} rows have it and {int((~held_out).sum())} "
                            f"do not; both need at least 10 (groups in {group_column}: {known})")
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def _embed(config: TrainConfig, segmented: SegmentedBatch, train_idx: np.ndarray, log):
    """The embedder (a vocabulary built on the training rows, the given ELMo
    biLM, or both), its features for every row, and what the card says of it."""
    emb_cfg = config.embedder
    if emb_cfg.type == "elmo" and config.vectors:
        raise TrainingError("--vectors starts a word embedding, which --embedder elmo has none of; "
                            "use --embedder elmo+vocab for ELMo vectors beside pretrained word vectors")
    if not emb_cfg.uses_elmo:
        return _embed_words(config, segmented, train_idx, log)
    if not config.elmo_model:
        raise TrainingError(f"--embedder {emb_cfg.type} needs --elmo-model DIR (a folder from 'sentiscore elmo pretrain', "
                            "or HIT-SCIR's zhs.model)")
    from .embed.elmo import ElmoEmbedder, cached_features, check_bilm_segmenter, elmo_card, resolve_elmo_dir

    bilm_dir = resolve_elmo_dir(config.elmo_model, "--elmo-model")
    check_bilm_segmenter(bilm_dir, config.segmenter)
    embedder = ElmoEmbedder(bilm_dir, layer_mix=emb_cfg.layer_mix, device=config.device, log=log)
    features = cached_features(embedder, segmented, log)
    card = {"settings": {**embedder.settings(), "elmo": elmo_card(embedder)}, "initial_embedding": None,
            "summary": f"ELMo {Path(config.elmo_model).name}: {embedder.dim}-d, {embedder.n_layers} layers, mix {emb_cfg.layer_mix}"}
    if emb_cfg.type == "elmo":
        return embedder, features, card
    from .embed.elmo_vocab import ElmoVocabEmbedder, ElmoVocabFeatures

    words, word_features, word_card = _embed_words(config, segmented, train_idx, log)
    combined = ElmoVocabEmbedder(embedder, words)
    return combined, ElmoVocabFeatures(features, word_features), {
        "settings": {**card["settings"], **word_card["settings"], **combined.settings()},
        "summary": f"{card['summary']}, beside {word_card['summary']}",
        "initial_embedding": word_card["initial_embedding"],
    }


def _embed_words(config: TrainConfig, segmented: SegmentedBatch, train_idx: np.ndarray, log):
    """A vocabulary built on the training rows (plus, with ``--vectors``, the
    vectors' frequent words and their starting weights)."""
    from .embed.vocab import VocabEmbedder

    emb_cfg = config.embedder
    offsets = segmented.offsets
    train_tokens = SegmentedBatch(
        [t for i in train_idx for t in segmented.tokens[offsets[i] : offsets[i + 1]]],
        segmented.lengths[train_idx],
        segmented.truncated[train_idx],
    )
    embedder = VocabEmbedder.build(train_tokens, emb_cfg.min_count, emb_cfg.max_vocab)
    card = {"settings": {"vocab_size": embedder.size}, "summary": f"vocabulary {embedder.size - 2:,} words", "initial_embedding": None}
    if config.vectors:
        card = _with_vectors(config, embedder, segmented, log)
        embedder = card.pop("embedder")
    return embedder, embedder.featurize(segmented), card


def _with_vectors(config: TrainConfig, embedder, segmented: SegmentedBatch, log) -> dict:
    """The labelled data's vocabulary plus the vectors' most frequent other
    words, and the embedding's starting weights from the vectors (first
    continued on every row's tokens with ``adapt_vectors``)."""
    from .embed.vectors import WordVectors, adapt_vectors, check_segmenter, embedding_matrix, resolve_vectors_dir
    from .embed.vocab import VocabEmbedder

    path = resolve_vectors_dir(config.vectors)
    vectors = WordVectors.load(path)
    check_segmenter(vectors, config.segmenter, f"--vectors {config.vectors}", adapting=config.adapt_vectors)
    if vectors.dim != config.embedder.embed_dim:
        raise TrainingError(f"--vectors {config.vectors} are {vectors.dim}-d but --embed-dim is {config.embedder.embed_dim}; "
                            f"pass --embed-dim {vectors.dim} (or --vectors none)")
    start_tokens_seen, adapted = vectors.card.get("tokens_seen"), None
    if config.adapt_vectors:
        sentences = segmented.token_lists()
        corpus = {"path": "the training file's texts", "sentences": len(sentences), "tokens": int(segmented.lengths.sum())}
        vectors = adapt_vectors(vectors, path.name, sentences, config.segmenter, corpus, workers=config.workers, log=log)
        adapted = {k: vectors.card[k] for k in ("tokens", "tokens_seen", "words")} | {"settings": vectors.card["settings"]}
    have = set(embedder.words)
    extra = [w for w in vectors.words if w not in have][: config.vectors_extra_words]
    embedder = VocabEmbedder(embedder.words + extra)
    matrix, found = embedding_matrix(embedder.words, vectors, embedder.size, config.seed)
    log(f"vectors {path.name}{' adapted to the training texts' if adapted else ''}: {found:,} of {embedder.size - 2:,} "
        f"vocabulary words start pretrained ({len(extra):,} added from the vectors); "
        f"{'fine-tuned' if config.vectors_trainable else 'frozen'}")
    return {
        "embedder": embedder,
        "settings": {"vocab_size": embedder.size, "vectors": {
            "name": path.name, "sha256": sha256_of(path / "vectors.npy"), "words": len(vectors.words),
            "vocabulary_words_pretrained": found, "added_words": len(extra), "trainable": config.vectors_trainable,
            "tokens_seen": start_tokens_seen,
            "adapted_to_training_texts": adapted}},
        "summary": f"vocabulary {embedder.size - 2:,} words, {found:,} from vectors {path.name}{' (adapted)' if adapted else ''}",
        "initial_embedding": matrix,
    }


def _learning_rate(config: TrainConfig, steps_per_epoch: int):
    """A float, or a Keras schedule decaying over the whole epoch budget
    (early stopping may end training before it reaches the bottom)."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    import keras

    return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch), alpha=0.05)


def _calibrate(val_logits: np.ndarray, val_true: np.ndarray, names: list[str], enabled: bool, class_bias: bool = False,
               label_mix: np.ndarray | None = None):
    """Temperature (and, with ``class_bias``, class biases) fitted on the
    validation split, or the identity; the calibrated validation metrics and
    a record for the card. Class biases are off by default: fitted to the
    validation split's class mix, they cost 1.6-3.5 macro-F1 points on
    sources left out of training (BENCHMARKS.md, "Class weights vs thresholds").
    ``label_mix``: biases ``log(label_mix / mean validation posterior)``
    after the temperature, which move the model's mean belief toward that
    mix (one step of Saerens et al. 2002's EM, on the validation split)."""
    from .calibration import expected_calibration_error, fit_class_bias, fit_temperature, joint_confusion, softmax
    from .evaluate import classification_metrics

    temperature, bias = 1.0, np.zeros(len(names))
    if enabled:
        temperature = fit_temperature(val_logits, val_true)
        if class_bias:
            bias = fit_class_bias(val_logits / temperature, val_true, len(names))
        elif label_mix is not None:
            believed = softmax(val_logits / temperature).mean(axis=0)
            bias = np.log(np.maximum(label_mix, 1e-6)) - np.log(np.maximum(believed, 1e-6))
    val_probs = softmax(val_logits / temperature + bias)
    record = {
        "temperature": round(temperature, 4),
        # What the model believes the class prior to be: the reference that
        # scoring-time prior adaptation (EM, Saerens et al. 2002) starts from.
        "reference_prior": [round(float(p), 6) for p in val_probs.mean(axis=0)],
        # P(predicted i, true j) on the validation split: what black-box shift
        # estimation (Lipton et al. 2018) inverts to read a file's label shares.
        "confusion": joint_confusion(val_probs.argmax(axis=1), val_true, len(names)).round(6).tolist(),
        "class_bias": bool(enabled and class_bias),
        "bias_to_label_mix": bool(enabled and label_mix is not None and not class_bias),
        "bias": [round(float(b), 4) for b in bias],
        "validation_ece_before": round(expected_calibration_error(softmax(val_logits), val_true), 4),
        "validation_ece_after": round(expected_calibration_error(val_probs, val_true), 4),
        "validation_macro_f1_before": classification_metrics(val_true, val_logits.argmax(axis=1), names)["macro_f1"],
    }
    return temperature, bias, classification_metrics(val_true, val_probs.argmax(axis=1), names), record


def _stopwords_text(seg_cfg) -> str:
    """The stopword list as trained with, copied into the model directory."""
    if seg_cfg.stopwords == "builtin":
        return builtin_stopwords_text()
    if seg_cfg.stopwords == "none":
        return ""
    return Path(seg_cfg.stopwords).read_text(encoding="utf-8")


def _segmenter_card(seg_cfg) -> dict:
    return {
        "name": "jieba_fast",
        "version": segmenter_version(),
        "hmm": seg_cfg.hmm,
        "stopwords": "stopwords.txt",
        "stopwords_source": seg_cfg.stopwords if seg_cfg.stopwords in ("builtin", "none") else Path(seg_cfg.stopwords).name,
        "user_dict": "userdict.txt" if seg_cfg.user_dict else None,
        "user_dict_sha256": sha256_of(Path(seg_cfg.user_dict)) if seg_cfg.user_dict else None,
        "max_chars": seg_cfg.max_chars,
        "markup": seg_cfg.markup,
        "normalization": "NFKC+lower; tokens without letters or digits dropped",
    }
