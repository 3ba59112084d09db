"""Adapting a model to one file without its labels (``score --adapt-domain``):
self-training. A first pass reads the file and the model scores a uniform
sample of it; the sampled rows the model is most sure of, half of each label
it gives, teach a character 1-3-gram logistic
regression the file's own vocabulary (words the training data never tied to a
label: 送餐慢 in food-delivery reviews); the second pass averages its
probabilities with the model's. On sources left out of training it gained
1.1-1.6 macro-F1 points on average and up to 3 on one source; on texts like the
training data it costs 0.3 on average, 2.6 on a file mixing many sources
(BENCHMARKS.md, "Out of domain, 2026-12-04 (night)"), so it is opt-in.

The first pass only reads the file, keeping a uniform sample of its texts
(bottom-k of random keys), so memory is bounded by ``SAMPLE_ROWS``, not the
file, and only the sample is scored before the fit (with ``--adapt-priors``
too, the first pass scores every row and samples them). Deterministic: the
same file and model give the same output, and a row's key follows from its
place in the input, so the Ray engine, whose read tasks deliver blocks in any
order, draws the same sample.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sklearn.base import BaseEstimator, TransformerMixin

from .config import WideConfig

SAMPLE_ROWS = 20_000  # rows of the file kept for the fit (a uniform sample): 10,000 or so fit it in ~5 s
CONFIDENT_SHARE = 0.5  # of each predicted label, the rows above its median confidence
MIN_ROWS_PER_LABEL = 20  # a label with fewer confident rows is left out of the fit
FILE_MODEL_WEIGHT = 0.5  # the file model's share of the averaged probabilities
SAMPLE_SEED = 0
# The file model's features: char 1-3-grams hashed as the wide path hashes them (NumPy over a whole batch,
# URLs and @mentions dropped: 3-4x faster per chunk than scikit-learn's analyzer), in enough buckets that
# a sample's n-grams rarely share one.
FILE_NGRAMS = WideConfig(num_buckets=2**22, weighting="count")
MIN_DF = 2  # an n-gram in one sampled text only lets the fit memorise that text's pseudo-label


def ngram_counts(texts):
    """Sparse (texts × buckets) counts of each text's hashed char n-grams."""
    from scipy.sparse import csr_matrix

    from .ngrams import CharNgramHasher

    ids, counts = CharNgramHasher(FILE_NGRAMS).transform_flat([str(t) for t in texts])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    matrix = csr_matrix((np.ones(ids.size, np.float32), ids, indptr), shape=(len(counts), FILE_NGRAMS.num_buckets))
    matrix.sum_duplicates()
    return matrix


class FrequentNgrams(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: texts → counts of the hashed n-grams found
    in at least ``MIN_DF`` of the texts it was fitted on (a column each)."""

    def fit(self, texts, y=None):
        self._fit_counts(ngram_counts(texts))
        return self

    def fit_transform(self, texts, y=None):
        counts = ngram_counts(texts)  # hashed once for both (TransformerMixin's would hash twice)
        self._fit_counts(counts)
        return self._kept(counts)

    def transform(self, texts):
        return self._kept(ngram_counts(texts))

    def _fit_counts(self, counts) -> None:
        df = np.bincount(counts.indices, minlength=FILE_NGRAMS.num_buckets)
        kept = np.flatnonzero(df >= MIN_DF)
        self.column_of_ = np.full(FILE_NGRAMS.num_buckets, -1, np.int32)  # 16 MiB: every actor on Ray holds one
        self.column_of_[kept] = np.arange(kept.size)
        self.n_columns_ = max(1, kept.size)

    def _kept(self, counts):
        from scipy.sparse import csr_matrix

        columns = self.column_of_[counts.indices]
        kept = columns >= 0
        rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))[kept]
        return csr_matrix((counts.data[kept], (rows, columns[kept])), shape=(counts.shape[0], self.n_columns_))


def row_keys(file_index: int, first_row: int, rows: int, seed: int = SAMPLE_SEED) -> np.ndarray:
    """The sampling keys of rows ``first_row`` .. ``first_row + rows - 1`` of
    the input's file number ``file_index``. A row's key depends on its place
    alone, so a pass that reads the input in pieces and in any order (the Ray
    engine's read tasks) draws the same sample as one that reads it in order."""
    # File 0's keys are default_rng(seed)'s stream, the one the local engine has always drawn.
    seeds = np.random.SeedSequence(seed, spawn_key=(file_index,) if file_index else ())
    bits = np.random.PCG64(seeds)
    bits.advance(first_row)  # one 64-bit draw per float64 key
    return np.random.Generator(bits).random(rows)


def _is_arrow(texts) -> bool:
    return isinstance(texts, (pa.Array, pa.ChunkedArray))


def _as_objects(texts) -> np.ndarray:
    """Texts (a list, an array, or Arrow strings) as a 1-d NumPy object array."""
    out = np.empty(len(texts), object)
    out[:] = texts.to_pylist() if _is_arrow(texts) else list(texts)
    return out


class FileSample:
    """At most ``size`` rows of an input (texts, and the model's probabilities
    when the pass that draws them has them), drawn uniformly in one pass:
    each row gets a random key from its place (:func:`row_keys`) and the
    ``size`` smallest keys stay, in input order."""

    def __init__(self, size: int = SAMPLE_ROWS, seed: int = SAMPLE_SEED):
        self.size = size
        self.seed = seed
        self._keys = np.zeros(0)
        self._places = np.zeros((0, 2), np.int64)  # (file index, row) of each kept row
        self._texts = np.zeros(0, object)
        self._probs: np.ndarray | None = None
        self.rows_seen = 0

    def add(self, texts, probs: np.ndarray | None = None, files=None, rows=None) -> None:
        """Offer rows to the sample: ``texts`` a list or an Arrow string
        array (only the rows that can still enter the sample become Python
        strings). ``files`` and ``rows``: each text's file index and row
        number in the input; by default the rows that follow those added so
        far, of file 0 (one file read in order)."""
        n = len(texts)
        files = np.zeros(n, np.int64) if files is None else np.asarray(files, np.int64)
        rows = np.arange(self.rows_seen, self.rows_seen + n) if rows is None else np.asarray(rows, np.int64)
        self.rows_seen += n
        keys = np.empty(n)
        for file_index in np.unique(files):
            mine = files == file_index
            first = int(rows[mine].min())
            keys[mine] = row_keys(int(file_index), first, int(rows[mine].max()) - first + 1, self.seed)[rows[mine] - first]
        if self._keys.size >= self.size:  # full: a row keyed above the largest kept key can never enter
            entering = np.flatnonzero(keys < self._keys.max())
            keys, files, rows = keys[entering], files[entering], rows[entering]
            texts = texts.take(pa.array(entering)) if _is_arrow(texts) else _as_objects(texts)[entering]
            probs = None if probs is None else probs[entering]
        texts = _as_objects(texts)
        keys = np.concatenate([self._keys, keys])
        places = np.concatenate([self._places, np.column_stack([files, rows])])
        all_texts = np.concatenate([self._texts, texts])
        all_probs = None if probs is None else probs if self._probs is None else np.concatenate([self._probs, probs])
        if keys.size > self.size:
            keep = np.argpartition(keys, self.size)[: self.size]
        else:
            keep = np.arange(keys.size)
        keep = keep[np.lexsort((places[keep, 1], places[keep, 0]))]  # input order, however the rows arrived
        self._keys, self._places, self._texts = keys[keep], places[keep], all_texts[keep]
        self._probs = None if all_probs is None else all_probs[keep]

    @property
    def texts(self) -> np.ndarray:
        return self._texts

    @property
    def probs(self) -> np.ndarray | None:
        """The model's probabilities of :attr:`texts`; None where they were added without."""
        return self._probs


def confident_rows(probs: np.ndarray, share: float = CONFIDENT_SHARE, min_rows: int = MIN_ROWS_PER_LABEL) -> np.ndarray:
    """Mask of the rows in the top ``share`` of confidence among the rows
    given the same label; labels with fewer than ``min_rows`` such rows are
    left out (too few to teach anything but noise)."""
    chosen = np.zeros(len(probs), bool)
    if not len(probs):
        return chosen
    predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    for label in range(probs.shape[1]):
        rows = np.flatnonzero(predicted == label)
        cut = np.quantile(confidence[rows], 1.0 - share) if rows.size else 0.0
        top = rows[confidence[rows] >= cut]
        if top.size >= min_rows:
            chosen[top] = True
    return chosen


@dataclass
class FileModel:
    """The char n-gram model fitted on one file's confident rows, and how it
    joins the model's probabilities."""

    pipeline: object  # scikit-learn: hashed n-gram counts → TF-IDF → LogisticRegression
    columns: np.ndarray  # the model's label column of each of the pipeline's classes
    label_rows: dict[int, int]  # label column → rows it was fitted on
    sample_rows: int  # labelled rows of the sample
    rows_seen: int  # rows of the file
    weight: float = FILE_MODEL_WEIGHT

    def blend(self, model_probs: np.ndarray, texts) -> np.ndarray:
        """The model's probabilities averaged with the file model's. A label
        the file model was not fitted on keeps the model's probability: the
        file model only shares out the mass of the labels it knows."""
        out = model_probs.astype(np.float32, copy=True)
        if len(texts):
            known = model_probs[:, self.columns]
            own = self.pipeline.predict_proba(list(texts)) * known.sum(axis=1, keepdims=True)
            out[:, self.columns] = (1.0 - self.weight) * known + self.weight * own
        return out

    def token_shares(self, tokens: list[str], label_columns: np.ndarray, n_labels: int) -> np.ndarray:
        """Each token's own n-grams' weight for the label in ``label_columns``
        (one per token), relative to the other labels: positive supports it."""
        coef = self.pipeline[-1].coef_
        if coef.shape[0] == 1:  # two classes: scikit-learn keeps one row, for the second
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        relative = coef - coef.mean(axis=0)
        by_column = np.zeros((n_labels, relative.shape[1]))
        by_column[self.columns] = relative
        features = self.pipeline[:-1].transform(tokens)
        scores = features @ by_column.T  # (tokens, labels)
        return np.asarray(scores)[np.arange(len(tokens)), label_columns].astype(np.float32)

    def line(self, label_names: list[str]) -> str:
        fitted = ", ".join(f"{label_names[c]} {n:,}" for c, n in sorted(self.label_rows.items()))
        return (f"self-trained char 1-3-gram model, weight {self.weight:g}, on {sum(self.label_rows.values()):,} "
                f"confident rows of a {self.sample_rows:,}-row sample of {self.rows_seen:,} rows ({fitted})")


def fit_file_model(texts: np.ndarray, probs: np.ndarray, rows_seen: int) -> FileModel | None:
    """The file model of a sample's ``texts`` and the model's ``probs`` of
    them (from a file of ``rows_seen`` rows), or None where fewer than two
    labels have enough confident rows (nothing to learn from)."""
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    chosen = confident_rows(probs)
    targets = probs[chosen].argmax(axis=1) if chosen.any() else np.zeros(0, np.int64)
    present = np.unique(targets)
    if present.size < 2:
        return None
    # The char TF-IDF peer's recipe (bench/quality.py), on hashed n-grams: 3-4x faster to compute per chunk.
    pipeline = make_pipeline(FrequentNgrams(), TfidfTransformer(sublinear_tf=True),
                             LogisticRegression(C=4, max_iter=2000))
    pipeline.fit(list(np.asarray(texts, object)[chosen]), targets)
    return FileModel(pipeline, np.asarray(pipeline.classes_, np.int64),
                     {int(c): int((targets == c).sum()) for c in present}, len(probs), rows_seen)


def adapted(forwarded, texts, file_model: FileModel, top_words: bool = True):
    """``forwarded`` (a chunk's :class:`~sentiscore.pipeline.Forwarded`) with
    each text's probabilities averaged with the file model's. Where that
    changes a text's label, its token contributions come from the file
    model's n-gram weights for the new label (``overturned`` marks them)."""
    scored = forwarded.segmented.lengths > 0
    probs = forwarded.probs.copy()
    rows = np.flatnonzero(scored)
    probs[rows] = file_model.blend(forwarded.probs[rows], [texts[i] for i in rows])
    overturned = scored & (probs.argmax(axis=1) != forwarded.probs.argmax(axis=1))
    contribution = forwarded.contribution
    if top_words and overturned.any():
        segmented = forwarded.segmented
        contribution = contribution.copy()
        turned = np.flatnonzero(overturned)
        flat = segmented.positions_of(turned)
        labels = np.repeat(probs[turned].argmax(axis=1), segmented.lengths[turned])
        contribution[flat] = file_model.token_shares([segmented.tokens[i] for i in flat], labels, probs.shape[1])
    return dataclasses.replace(forwarded, probs=probs, contribution=contribution, overturned=overturned)
