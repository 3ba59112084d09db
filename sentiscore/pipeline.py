"""Scoring: load a model once, then per chunk three stages, each taking
only what the one before returned:

    preprocess(texts) -> Prepared       dedupe texts, start segmenting them (worker processes)
    forward(prepared) -> Forwarded      embed, the Keras model on length-bucketed batches, no autograd
    postprocess(prepared, forwarded)    probabilities → label columns, confidence, top words (Arrow)

``plan_run`` checks a run's inputs, columns, output and model card once;
``score_file`` (the local engine) and ``ray_engine.score_with_ray`` both
start from it. ``score_file`` streams a file through the stages: memory is
bounded by the chunk size, not the file size, and segmentation of the next
chunk overlaps the model's work on the current one.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import __version__
from .artifacts import STOPWORDS_FILE, LoadedModel, ModelCard, load_model, read_card
from .config import DEFAULT_CHUNK_ROWS, ELMO_CHUNK_ROWS, ELMO_EMBEDDERS, PRIOR_ESTIMATORS, ScoreConfig, default_workers
from .errors import InputError, ModelError, OutputError, RunStopped, SettingsMismatchError, UsageError, WorkerError
from .io import (
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    FileSink,
    PartsSink,
    check_output_path,
    detect_format,
    file_fingerprint,
    is_stdio,
    locate_lines,
    open_input,
)
from .calibration import shift_priors
from .cascade import split_rows, sum_per_text, wide_logits_flat, wide_norms_flat
from .embed import DEFAULT_SCORE_BATCH  # noqa: F401  (re-exported: the default --batch-size)
from .ngrams import CharNgramHasher
from .segment import ParallelSegmenter, SegmentedBatch, segmenter_version

STATUS_OK = "ok"
STATUS_TRUNCATED = "truncated"  # labelled, but only the first maxlen tokens / max_chars were read
STATUS_EMPTY = "empty"  # null, empty or whitespace-only text
STATUS_NO_TOKENS = "no_tokens"  # only punctuation, symbols, emoji or stopwords
STATUS_NOT_TEXT = "not_text"  # a list, struct or other value that is not text
_LABELLED = (STATUS_OK, STATUS_TRUNCATED)
# The scored_by column: which path labelled the row (SCORED_BY_FILE: --adapt-domain's file model overturned it).
SCORED_BY_FULL, SCORED_BY_NGRAMS, SCORED_BY_FILE = "full", "ngrams", "file"
_WIDTH_STEP = 8  # batch widths are rounded up to this: fewer distinct shapes
# A batch holds at most batch_size × this many padded tokens: texts longer
# than this many tokens go in smaller batches. The largest tensors (and the
# ONNX Runtime / TensorFlow arenas that keep their high-water mark) are then
# those of a batch of short texts, the same for a 10k- and a 1M-row file.
_TOKENS_PER_ROW_BUDGET = 32
_TOKEN_CHARS_PER_SLICE = 1 << 20  # characters of distinct tokens hashed at once for top_words (bounds its arrays)


def output_column_names(labels: list[tuple[str, str]], prefix: str = "") -> list[str]:
    names = ["label", "label_id", "confidence"] + [f"prob_{name}" for _, name in labels]
    names += ["top_words", "top_weights", "status", "scored_by"]
    return [prefix + n for n in names]


@dataclass
class ScoreSummary:
    rows: int
    seconds: float
    label_counts: dict[str, int]
    unlabelled: int
    model_name: str
    model_hash: str
    output: str
    provenance: dict[str, str] = field(default_factory=dict)
    skipped_lines: int = 0
    bad_lines_file: str | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        counts = ", ".join(f"{name} {n:,}" for name, n in self.label_counts.items())
        return (
            f"sentiscore: {self.rows:,} rows in {self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s); "
            f"{counts}, no label {self.unlabelled:,}; model {self.model_name}@{self.model_hash} "
            f"segmenter {self.provenance.get('sentiscore.segmenter', '?')} "
            + (f"embedder {emb} torch {self.provenance.get('sentiscore.torch_version')} "
               if (emb := self.provenance.get("sentiscore.embedder", "vocab")) != "vocab" else "")
            + f"sentiscore {__version__} tensorflow {self.provenance.get('sentiscore.tensorflow_version', '?')} "
            f"keras {self.provenance.get('sentiscore.keras_version', '?')}"
            + (f" runtime {r}" if (r := self.provenance.get("sentiscore.runtime")) else "")
            + (f" cascade {c}" if (c := self.provenance.get("sentiscore.cascade")) else "")
            + (f" priors {p}" if (p := self.provenance.get("sentiscore.priors")) else "")
            + (f" adapted to the file: {a}" if (a := self.provenance.get("sentiscore.adapted_domain")) else "")
            + f" -> {self.output}"
            + (f"; skipped {self.skipped_lines:,} bad CSV lines" + (f" (listed in {self.bad_lines_file})" if self.bad_lines_file else "")
               if self.skipped_lines else "")
        )


@dataclass
class Prepared:
    """A chunk after dedupe: what ``forward`` needs. Its segmentation runs in
    worker processes meanwhile; ``segmentation()`` waits for it."""

    row_to_unique: np.ndarray  # int64, -1 for rows that get no label
    row_status: np.ndarray  # object array of statuses for rows without a label
    unique_texts: list[str]
    segmentation: object  # callable → SegmentedBatch
    # Work on the chunk that depends on settings or on weights several models may
    # share (hashed n-grams by hasher settings, token ids by word list, n-gram
    # norms by idf weights), kept for the next model that scores it when several
    # do (an ensemble's members); None: nothing is kept beyond ``forward``.
    shared: dict | None = None


@dataclass
class Forwarded:
    """The model's results per distinct text of a chunk: what ``postprocess``
    and explanations need."""

    segmented: SegmentedBatch
    probs: np.ndarray  # (U, C), after any prior shift
    attention: np.ndarray  # flat, one per token
    contribution: np.ndarray  # flat: each token's share of its text's predicted-class logit
    logit_parts: dict[str, np.ndarray] = field(default_factory=dict)  # path (deep, wide) → (U, C) logits before calibration
    deep: np.ndarray | None = None  # (U,) bool: the deep path ran (False: the cascade's n-gram path decided, or no tokens)
    overturned: np.ndarray | None = None  # (U,) bool: --adapt-domain's file model changed the label (adapt.adapted)


def _shared(shared: dict | None, key, compute, rows: np.ndarray | None = None):
    """``compute()``, kept in a chunk's :attr:`Prepared.shared` under ``key``
    for the next model that needs the same (``key`` None: not shareable).
    ``rows``: the texts it covers; a kept value for other rows is recomputed."""
    if shared is None or key is None:
        return compute()
    held = shared.get(key)
    if held is None or (rows is not None and not np.array_equal(held[0], rows)):
        held = shared[key] = (rows, compute())
    return held[1]


@dataclass
class _Ngrams:
    """Hashed char n-grams of a chunk's texts, flat: text i's ids are
    ``flat[starts[i]:starts[i] + counts[i]]``."""

    flat: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    norms: np.ndarray  # what the n-gram path divides each text's summed weights by (cascade.wide_norms_flat)

    def padded(self, rows: np.ndarray) -> np.ndarray:
        """The ids of these texts as a matrix padded with 0 to the longest."""
        counts = self.counts[rows]
        out = np.zeros((rows.size, max(1, int(counts.max(initial=0)))), np.int32)
        which = np.repeat(np.arange(rows.size), counts)
        col = np.arange(which.size) - np.repeat(np.cumsum(counts) - counts, counts)
        out[which, col] = self.flat[np.repeat(self.starts[rows], counts) + col]
        return out


@dataclass
class _TokenWideLogits:
    """The n-gram path's logits of each distinct token of a chunk, before
    the text's norm: token ``i`` (flat) is distinct token ``index[i]``."""

    index: np.ndarray  # (tokens,) int64
    logits: np.ndarray  # (distinct tokens, C) float64

    def share(self, flat: np.ndarray, predicted: np.ndarray, text_norms: np.ndarray) -> np.ndarray:
        """The tokens at flat positions ``flat``: their logit for the class
        their text was given, over that text's norm."""
        return (self.logits[self.index[flat], predicted] / text_norms).astype(np.float32)


def as_text(column) -> pa.Array | None:
    """A text column as one Arrow string array: numbers, dates and booleans
    become their text, a null-typed column nulls; None when it holds no
    text at all (lists, structs: those rows are ``not_text``). Both engines
    coerce text here."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), pa.string())
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _segmenter_for(card: ModelCard, workers: int, nice: int = 0) -> ParallelSegmenter:
    """The segmenter a model was trained with (an ensemble's members share one)."""
    trained = card.members[0] if card.members else card
    return ParallelSegmenter(trained.segmenter_config(), trained.maxlen, workers, nice=nice)


class Scorer:
    """Load once, score many. ``predict`` for lists of texts, ``score_batch``
    for Arrow batches, ``score_file`` (module level) for files.
    ``segmenter``: where texts are segmented (default: worker processes with
    the model's own settings); the Ray engine passes its pre-segmented tokens."""

    def __init__(self, loaded: LoadedModel, workers: int | None = None, batch_size: int | None = None, top_k: int = 3,
                 segmenter=None, cascade: bool = True, onnx_graph: Path | None = None):
        """``onnx_graph``: run the classifier on ONNX Runtime from this graph
        (:mod:`onnx_engine`; ``loaded`` then needs no Keras model)."""
        self.loaded = loaded
        card = self.card = loaded.card
        self.labels = list(card.labels)
        self.maxlen = card.maxlen
        self.workers = workers or default_workers()
        self.segmenter = segmenter or _segmenter_for(card, self.workers)
        self.embedder = loaded.embedder
        self.hasher = CharNgramHasher(card.wide) if card.wide is not None else None
        # The card's cascade (wide-deep models trained by 0.2), unless the caller wants every row through the deep path.
        self.cascade = card.cascade if cascade and self.hasher is not None else None
        batch_size = batch_size or self.embedder.score_batch_size
        if onnx_graph is not None:
            from .onnx_engine import OnnxPredictor

            # Half the cores: the segmentation workers keep the others busy, and a
            # second ONNX Runtime thread on 2 cores only took CPU from them (#16).
            self.predictor = OnnxPredictor(onnx_graph, batch_size=batch_size, threads=max(1, default_workers() // 2))
        else:
            from .model import Predictor

            self.predictor = Predictor(loaded.keras_model, batch_size=batch_size)
        self.batch_size = batch_size
        self.top_k = top_k
        self.prior_shift: np.ndarray | None = None  # logit offsets from the card's reference prior to the file's (set_priors)
        self.file_model = None  # --adapt-domain: the file's own n-gram model (adapt.FileModel), averaged in by postprocess
        self._encoder_thread = None
        versions = self.predictor.versions
        self.provenance = {
            "sentiscore.version": __version__,
            "sentiscore.model": loaded.name,
            "sentiscore.model_hash": loaded.hash,
            "sentiscore.model_path": str(loaded.path),
            "sentiscore.segmenter": f"jieba_fast {segmenter_version()}",
            "sentiscore.embedder": _embedder_line(card.embedder, self.embedder.device),
            "sentiscore.tensorflow_version": versions["tensorflow"],
            "sentiscore.keras_version": versions["keras"],
            "sentiscore.runtime": self.predictor.runtime,
        }
        if self.embedder.torch_version:
            self.provenance["sentiscore.torch_version"] = self.embedder.torch_version
        if card.cascade is not None and self.hasher is not None:
            self.provenance["sentiscore.cascade"] = cascade_line(self.cascade)

    @classmethod
    def from_model(cls, model=None, *, workers=None, batch_size=None, top_k=3, expect: dict | None = None,
                   device: str = "auto", segmenter=None, cascade: bool = True, runtime: str = "auto",
                   worker_nice: int = 0, start_workers: bool = False) -> "Scorer":
        """``expect`` holds settings the caller asked for (``maxlen``,
        ``user_dict``, ``stopwords``, ``layer_mix``); any that differ from the
        model's training settings raise :class:`SettingsMismatchError`.
        ``device`` is where an ELMo embedder runs (auto, cpu, cuda)."""
        card = read_card(model)
        check_expected_settings(card, expect or {})
        return cls.from_card(card, workers=workers, batch_size=batch_size, top_k=top_k, device=device, segmenter=segmenter,
                             cascade=cascade, runtime=runtime, worker_nice=worker_nice, start_workers=start_workers)

    @classmethod
    def from_card(cls, card: ModelCard, *, workers=None, batch_size=None, top_k=3, device: str = "auto",
                  segmenter=None, cascade: bool = True, runtime: str = "auto", worker_nice: int = 0,
                  start_workers: bool = False) -> "Scorer":
        """The scorer of a model whose card is already read and checked (a
        :class:`RunPlan`'s). ``runtime``: what runs the classifier, ``onnx``
        (ONNX Runtime, built from the Keras model once and cached),
        ``tensorflow``, or ``auto``: ONNX where the model and the install allow.
        An ensemble's card gives an :class:`~sentiscore.ensemble.EnsembleScorer`.
        Without a ``segmenter``, one is made with ``workers`` processes at
        ``worker_nice``; ``start_workers`` starts them before the model loads."""
        own = segmenter is None
        if own:
            segmenter = _segmenter_for(card, workers or default_workers(), worker_nice)
            if start_workers:
                segmenter.start()
        try:
            if card.members:
                from .ensemble import EnsembleScorer

                return EnsembleScorer.from_card(card, workers=workers, batch_size=batch_size, top_k=top_k, device=device,
                                                segmenter=segmenter, cascade=cascade, runtime=runtime)
            from .onnx_engine import graph_for

            graph = graph_for(card, runtime, log=_log_stderr)
            loaded = load_model(card, device=device, log=_log_stderr, with_keras=graph is None)
            return cls(loaded, workers=workers, batch_size=batch_size, top_k=top_k, segmenter=segmenter, cascade=cascade,
                       onnx_graph=graph)
        except BaseException:
            if own:
                segmenter.close()
            raise

    @property
    def reference_prior(self) -> np.ndarray:
        return reference_prior_of(self.card)

    def set_elmo_precision(self, precision: str) -> None:
        """Run an ELMo model's biLM LSTMs in ``precision`` (float32 or
        bfloat16) from the next batch on; the provenance says which."""
        check_elmo_precision(self.card, precision)
        if not hasattr(self.embedder, "set_precision"):
            return  # float32, and no biLM to set
        self.embedder.set_precision(precision, _log_stderr)
        self.provenance["sentiscore.embedder"] = _embedder_line(self.card.embedder, self.embedder.device, precision)

    def set_priors(self, prior, matched: bool = False) -> None:
        """Score under these class priors (in label order; None: the
        model's own): every posterior is reweighted by prior / reference
        prior, so labels, confidences and top words all follow. ``matched``:
        priors from :meth:`matched_priors`, fitted on this scorer's final
        probabilities (an ensemble's averaged ones: see EnsembleScorer)."""
        from .calibration import prior_log_shift

        if prior is None:
            self.prior_shift = None
            return
        prior = np.asarray(prior, np.float64)
        if prior.shape != (len(self.labels),):
            raise UsageError(f"priors need one share per label ({len(self.labels)}), got {prior.size}")
        self.prior_shift = prior_log_shift(prior / prior.sum(), self.reference_prior)

    @contextmanager
    def keeping_adaptation(self):
        """Whatever priors or file model a run sets inside, the scorer leaves
        with the ones it had (a caller's scorer outlives ``score_file`` and
        ``evaluate``)."""
        saved = self._adaptation()
        try:
            yield self
        finally:
            self._restore_adaptation(saved)

    def _adaptation(self):
        return self.prior_shift, self.file_model

    def _restore_adaptation(self, saved) -> None:
        self.prior_shift, self.file_model = saved

    def adapt_to_file(self, batches, text_column: str, priors: bool = False, estimator: str = "bbse",
                      domain: bool = False) -> np.ndarray | None:
        """The first pass of ``--adapt-priors`` / ``--adapt-domain`` over
        ``batches``. With ``priors``, the model scores every row (top words
        and output skipped) and this returns the file's class priors
        estimated by ``estimator`` (config.PRIOR_ESTIMATORS; the caller sets
        them). With ``domain``, it fits and sets :attr:`file_model` from a
        uniform sample of the rows (:mod:`adapt`; left None where the file
        gives fewer than two labels enough confident rows); without
        ``priors`` the pass only reads the texts and the model scores the
        sample alone."""
        from .adapt import FileSample

        if not priors:
            self.adapt_to_sample(sample_texts(batches, text_column))
            return None
        check_priors_estimable(self.card, estimator)  # before any work
        sample = FileSample() if domain else None
        labelled, first_row = [], 0
        for batch in batches:
            rows, texts, probs = self.labelled_probs(batch.column(text_column))
            labelled.append(probs)
            if sample is not None:
                sample.add(texts, probs, rows=first_row + rows)
            first_row += batch.num_rows
        if domain:
            self.adapt_to_sample(sample)
        return file_priors(self.card, np.concatenate(labelled) if labelled else np.zeros((0, len(self.labels))), estimator)

    def adapt_to_sample(self, sample) -> None:
        """Fit and set :attr:`file_model` from a file's uniform sample
        (:class:`adapt.FileSample`), scoring its texts first where the pass
        that drew it did not (left None where fewer than two labels have
        enough confident rows)."""
        from .adapt import fit_file_model

        texts, probs = (sample.texts, sample.probs) if sample.probs is not None else self._scored_sample(sample)
        self.file_model = fit_file_model(np.asarray(texts, object), probs, sample.rows_seen)

    def matched_priors(self, sample, shares) -> tuple[np.ndarray, int]:
        """``--priors-mode match``: the priors under which the labels of a
        file's uniform sample (:class:`adapt.FileSample`, texts only) come out
        in ``shares`` (label order), as the model scores now; and how many of
        the sample's rows got a label. Scoring under them (``set_priors(...,
        matched=True)``) gives the whole file about those shares."""
        from .calibration import share_matching_shift

        _, probs = self._scored_sample(sample)
        offsets = share_matching_shift(probs, shares)
        priors = self.reference_prior * np.exp(offsets)  # exp(-inf) = 0: a label given no share
        return priors / priors.sum(), len(probs)

    def _scored_sample(self, sample) -> tuple[list[str], np.ndarray]:
        """The texts of ``sample`` that get a label, and their probabilities."""
        texts, probs = [], []
        for start in range(0, len(sample.texts), DEFAULT_CHUNK_ROWS):
            _, part_texts, part_probs = self.labelled_probs(list(sample.texts[start : start + DEFAULT_CHUNK_ROWS]))
            texts += part_texts
            probs.append(part_probs)
        return texts, np.concatenate(probs) if probs else np.zeros((0, len(self.labels)), np.float32)

    def labelled_probs(self, texts) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Of the rows of ``texts`` that get a label: their indexes, their
        texts and the model's probabilities (no explanations)."""
        prepared = self.preprocess(texts)
        forwarded = self.forward(prepared, explain=False)
        rows = np.flatnonzero(prepared.row_to_unique >= 0)
        unique = prepared.row_to_unique[rows]
        scored = forwarded.segmented.lengths[unique] > 0
        rows, unique = rows[scored], unique[scored]
        return rows, [prepared.unique_texts[i] for i in unique], forwarded.probs[unique]

    # -- stages ---------------------------------------------------------------
    def preprocess(self, texts) -> Prepared:
        """Stage 1: a text column (Arrow array, or a list) deduplicated, its
        segmentation started."""
        if not isinstance(texts, (pa.Array, pa.ChunkedArray)):
            texts = _text_array(texts)
        n = len(texts)
        status = np.full(n, STATUS_OK, dtype=object)
        texts = as_text(texts)
        if texts is None:
            status[:] = STATUS_NOT_TEXT
            return Prepared(np.full(n, -1, np.int64), status, [], lambda: SegmentedBatch.concat([]))
        blank = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0), True)
        encoded = pc.dictionary_encode(texts)  # score each distinct text once
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        indices = np.where(np.asarray(blank.to_numpy(zero_copy_only=False), bool), -1, indices).astype(np.int64)
        status[indices < 0] = STATUS_EMPTY
        unique = encoded.dictionary.to_pylist()
        # Distinct texts that some non-blank row uses, renumbered densely.
        used = np.unique(indices[indices >= 0])
        renumber = np.full(len(unique) + 1, -1, np.int64)
        renumber[used] = np.arange(used.size)
        row_to_unique = np.where(indices >= 0, renumber[indices], -1)
        unique_texts = [unique[i] for i in used]
        return Prepared(row_to_unique, status, unique_texts, self.segmenter.submit(unique_texts))

    def _batches(self, lengths: np.ndarray):
        """Indices of texts grouped into batches of similar length, so compute
        follows real tokens rather than maxlen; a batch of long texts holds
        fewer of them (at most ``batch_size × _TOKENS_PER_ROW_BUDGET``
        padded tokens), so peak memory does not depend on the file."""
        order = np.argsort(lengths, kind="stable")
        widths = np.minimum(-(-np.maximum(lengths[order], 1) // _WIDTH_STEP) * _WIDTH_STEP, self.maxlen)  # as encode pads them
        budget = self.batch_size * _TOKENS_PER_ROW_BUDGET
        start = 0
        while start < order.size:
            end = min(order.size, start + self.batch_size)
            # Sorted by length, the batch's width is its last text's. A
            # smaller batch is a power of two: TensorFlow pads to one anyway,
            # and few distinct shapes keep the arenas from fragmenting.
            fits = budget // int(widths[end - 1])
            if fits < end - start:
                end = start + (1 << (max(1, fits).bit_length() - 1))
            yield order[start:end]
            start = end

    def forward(self, prepared: Prepared, explain: bool = True, logit_parts: bool = False) -> Forwarded:
        """Stage 2: waits for the segmentation, runs the model. Probabilities
        (U, C), and for every token (flat) its attention weight and its
        contribution to its text's predicted-class logit (``explain=False``:
        probabilities only, the token arrays stay zero). ``logit_parts``:
        also each path's own logits, for explanations (every row then runs
        the whole model). With a cascade, rows the n-gram path decides skip
        the deep path (``Forwarded.deep``)."""
        texts = prepared.unique_texts
        segmented = prepared.segmentation()
        n = len(texts)
        probs = np.zeros((n, len(self.labels)), np.float32)
        attention = np.zeros(int(segmented.lengths.sum()), np.float32)
        contribution = np.zeros(int(segmented.lengths.sum()), np.float32)
        offsets = segmented.offsets
        scorable = np.flatnonzero(segmented.lengths > 0)
        deep = np.zeros(n, bool)
        ngrams = self._ngrams_of(texts, scorable, prepared.shared) if self.hasher is not None else None
        token_wide = self._token_wide_logits(segmented, prepared.shared) if ngrams is not None and explain else None
        if ngrams is not None and self.cascade is not None and not logit_parts:
            logits = wide_logits_flat(self.predictor.wide_table, self.predictor.wide_bias, ngrams.flat, ngrams.counts, ngrams.norms)
            decided, wide_probs = split_rows(logits[scorable], self.cascade)
            by_ngrams = scorable[decided]
            probs[by_ngrams] = self._shifted(wide_probs[decided])
            if explain and by_ngrams.size:
                self._explain_by_ngrams(segmented, token_wide, by_ngrams, probs, ngrams.norms[by_ngrams], contribution)
            scorable = np.setdiff1d(scorable, by_ngrams, assume_unique=True)
        deep[scorable] = True
        features = _shared(prepared.shared, getattr(self.embedder, "share_key", None), lambda: self.embedder.featurize(segmented))

        def encode(batch_idx: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
            width = int(-(-int(segmented.lengths[batch_idx].max()) // _WIDTH_STEP) * _WIDTH_STEP)
            inputs = self.embedder.encode(features, batch_idx, min(width, self.maxlen))
            if ngrams is not None:
                inputs["ngram_ids"] = ngrams.padded(batch_idx)
            return batch_idx, inputs

        parts: dict[str, np.ndarray] = {}
        for batch_idx, inputs in self._encoded(encode, list(self._batches_of(scorable, segmented.lengths))):
            batch_probs, batch_alpha, token_logits = self.predictor(inputs)
            if logit_parts:
                for path, logits in self.predictor.logit_parts(inputs).items():
                    parts.setdefault(path, np.zeros((n, logits.shape[1]), np.float32))[batch_idx] = logits
            batch_probs = self._shifted(batch_probs)
            probs[batch_idx] = batch_probs
            if not explain:
                continue
            # Write each token's numbers back at its flat position.
            rows, cols = np.nonzero(inputs["mask"])
            flat = offsets[batch_idx[rows]] + cols
            attention[flat] = batch_alpha[rows, cols]
            predicted = batch_probs.argmax(axis=1)[rows]
            share = token_logits[rows, cols, predicted]
            if self.hasher is not None:
                share += token_wide.share(flat, predicted, ngrams.norms[batch_idx][rows])
            contribution[flat] = share / self.predictor.temperature
        return Forwarded(segmented, probs, attention, contribution, parts, deep)

    def _shifted(self, probs: np.ndarray) -> np.ndarray:
        return probs if self.prior_shift is None else shift_priors(probs, self.prior_shift).astype(np.float32)

    def _ngrams_of(self, texts: list[str], rows: np.ndarray, shared: dict | None = None) -> "_Ngrams":
        """The hashed n-grams of these texts (``rows`` ascending; every other
        text has none), hashed once, ``batch_size`` texts at a time so the
        hasher's arrays stay small whatever the texts' lengths. ``shared``:
        the chunk's :attr:`Prepared.shared`, where another model with the same
        hasher settings may have hashed them already."""

        def hashed() -> tuple[np.ndarray, np.ndarray]:
            parts = [self.hasher.transform_flat([texts[i] for i in rows[start : start + self.batch_size]])
                     for start in range(0, rows.size, self.batch_size)]
            counts = np.zeros(len(texts), np.int64)
            counts[rows] = np.concatenate([c for _, c in parts]) if parts else 0
            return (np.concatenate([ids for ids, _ in parts]) if parts else np.zeros(0, np.int32)), counts

        flat, counts = _shared(shared, ("ngrams", self.hasher.config), hashed, rows)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        norms = _shared(shared, ("ngram_norms", self.hasher.config, self._idf_digest),
                        lambda: wide_norms_flat(flat, counts, self.predictor.wide_idf), rows)
        return _Ngrams(flat, starts, counts, norms)

    @cached_property
    def _idf_digest(self) -> str | None:
        """The n-gram path's idf weights, by content: members with equal
        ones divide a text's n-gram sums by the same norm."""
        import hashlib

        idf = self.predictor.wide_idf
        return None if idf is None else hashlib.sha256(np.ascontiguousarray(idf).tobytes()).hexdigest()

    def _token_wide_logits(self, segmented: SegmentedBatch, shared: dict | None = None) -> "_TokenWideLogits":
        """Each distinct token's own character n-grams, summed as the wide
        layer sums a text's (n-grams spanning two tokens belong to neither):
        hashed once per distinct token of the chunk, not once per occurrence
        (and once per chunk for all models with these hasher settings, via
        ``shared``)."""

        def hashed() -> tuple[np.ndarray, list]:
            encoded = pc.dictionary_encode(pa.array(segmented.tokens, pa.string()))
            distinct = encoded.dictionary.to_pylist()
            # A slice of tokens at a time, by characters: one token can be a 2,000-character run of letters.
            ends = np.cumsum(np.minimum(pc.utf8_length(encoded.dictionary).to_numpy(zero_copy_only=False), self.hasher.config.max_chars))
            slices, start = [], 0
            while start < len(distinct):
                end = max(start + 1, int(np.searchsorted(ends, (ends[start - 1] if start else 0) + _TOKEN_CHARS_PER_SLICE, side="right")))
                slices.append(self.hasher.transform_flat(distinct[start:end]))
                start = end
            return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), slices

        index, slices = _shared(shared, ("token_ngrams", self.hasher.config), hashed)
        logits = [sum_per_text(np.take(self.predictor.wide_table, flat, axis=0), counts) for flat, counts in slices]  # see wide_logits_flat
        table = np.concatenate(logits) if logits else np.zeros((0, len(self.labels)))
        return _TokenWideLogits(index, table)

    def _explain_by_ngrams(self, segmented: SegmentedBatch, token_wide: "_TokenWideLogits", rows: np.ndarray,
                           probs: np.ndarray, norms: np.ndarray, contribution: np.ndarray) -> None:
        """Token contributions of the rows the n-gram path decided: each
        token's own n-grams' weights for the predicted label."""
        lengths = segmented.lengths[rows]
        flat = segmented.positions_of(rows)
        predicted = np.repeat(probs[rows].argmax(axis=1), lengths)
        shares = token_wide.share(flat, predicted, np.repeat(norms, lengths))
        contribution[flat] = shares / self.cascade.wide_temperature

    def _encoded(self, encode, batches: list[np.ndarray]):
        """``encode`` of every batch, in order. An embedder that does heavy
        work of its own (ELMo's biLM, in torch) encodes the next batch on a
        thread while Keras runs this one: both libraries release the GIL in
        their kernels, so the two stages overlap on two cores."""
        if not self.embedder.encodes_in_background or len(batches) < 2:
            yield from map(encode, batches)
            return
        if self._encoder_thread is None:
            self._encoder_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentiscore-encode")
        pending = self._encoder_thread.submit(encode, batches[0])
        try:
            for following in batches[1:]:
                ready = pending.result()
                pending = self._encoder_thread.submit(encode, following)
                yield ready
            yield pending.result()
        finally:
            pending.cancel()

    def _batches_of(self, subset: np.ndarray, lengths: np.ndarray):
        for b in self._batches(lengths[subset]):
            yield subset[b]

    def _top_words(self, segmented: SegmentedBatch, contribution: np.ndarray) -> tuple[pa.ListArray, pa.ListArray]:
        """Per text, the k distinct tokens that add most to the predicted
        class's logit (summed over a word's occurrences; only words that
        support the label), as Arrow lists with one extra empty list at the
        end (for rows without a label). Vectorised on integer keys, (text,
        token id) pairs summed and ranked in NumPy: Arrow's group-by on the
        strings held 20-47 MiB per chunk (BENCHMARKS.md, "Memory, 2026-12-04 (later)")."""
        n = segmented.lengths.size
        encoded = pc.dictionary_encode(pa.array(segmented.tokens, pa.string()))
        distinct = encoded.dictionary
        if len(distinct) == 0:
            empty = pa.array(np.zeros(n + 2, np.int32))
            return pa.ListArray.from_arrays(empty, pa.array([], pa.string())), pa.ListArray.from_arrays(empty, pa.array([], pa.float64()))
        token_order = np.empty(len(distinct), np.int64)  # ties go to the token first in string order
        token_order[pc.sort_indices(distinct).to_numpy()] = np.arange(len(distinct))
        pairs = np.repeat(np.arange(n, dtype=np.int64), segmented.lengths) * len(distinct) + encoded.indices.to_numpy()
        pairs, pair_of_token = np.unique(pairs, return_inverse=True)
        summed = np.bincount(pair_of_token, weights=contribution.astype(np.float64), minlength=pairs.size)
        supports = summed > 0.0
        text, token = np.divmod(pairs[supports], len(distinct))
        summed = summed[supports]
        order = np.lexsort((token_order[token], -summed, text))  # by text, then weight descending, then token
        text_sorted = text[order]
        rank = np.arange(order.size) - np.searchsorted(text_sorted, text_sorted, side="left")
        keep = order[rank < self.top_k]
        counts = np.bincount(text[keep], minlength=n)
        list_offsets = pa.array(np.concatenate([[0], np.cumsum(counts), [counts.sum()]]).astype(np.int32))
        words = pa.ListArray.from_arrays(list_offsets, pc.take(distinct, pa.array(token[keep], pa.int64())))
        weights = pa.ListArray.from_arrays(list_offsets, pa.array(np.round(summed[keep], 4), pa.float64()))
        return words, weights

    def postprocess(self, prepared: Prepared, forwarded: Forwarded, prefix: str = "") -> list[tuple[str, pa.Array]]:
        """Stage 3: the output columns, row for row of the chunk (after
        --adapt-domain's file model, when one is set)."""
        if self.file_model is not None:
            from .adapt import adapted

            forwarded = adapted(forwarded, prepared.unique_texts, self.file_model, top_words=self.top_k > 0)
        segmented, probs, contribution = forwarded.segmented, forwarded.probs, forwarded.contribution
        row_u = prepared.row_to_unique.copy()
        status = prepared.row_status.copy()
        no_tokens = segmented.lengths == 0
        truncated = segmented.truncated
        has_u = row_u >= 0
        u_status = np.where(no_tokens, STATUS_NO_TOKENS, np.where(truncated, STATUS_TRUNCATED, STATUS_OK))
        status[has_u] = u_status[row_u[has_u]]
        labelled = np.isin(status, _LABELLED)
        take = np.where(labelled, row_u, 0)
        null_mask = ~labelled

        row_probs = probs[take] if probs.size else np.zeros((status.size, len(self.labels)), np.float32)
        best = row_probs.argmax(axis=1) if row_probs.size else np.zeros(status.size, np.int64)
        names = np.array([name for _, name in self.labels], dtype=object)
        values = [value for value, _ in self.labels]
        int_ids = all(_is_int(v) for v in values)
        id_values = np.array([int(v) for v in values] if int_ids else values, dtype=np.int64 if int_ids else object)

        columns: list[tuple[str, pa.Array]] = []
        columns.append(("label", pa.array(names[best], pa.string(), mask=null_mask)))
        columns.append(("label_id", pa.array(id_values[best], pa.int64() if int_ids else pa.string(), mask=null_mask)))
        confidence = np.round(row_probs.max(axis=1).astype(np.float64), 6) if row_probs.size else np.zeros(status.size)
        columns.append(("confidence", pa.array(confidence, pa.float64(), mask=null_mask)))
        for j, (_, name) in enumerate(self.labels):
            columns.append((f"prob_{name}", pa.array(np.round(row_probs[:, j].astype(np.float64), 6), pa.float64(), mask=null_mask)))
        words, weights = self._top_words(segmented, contribution)
        # Unlabelled rows point at the extra empty list at the end.
        list_index = pa.array(np.where(labelled, row_u, len(words) - 1))
        columns.append(("top_words", pc.take(words, list_index)))
        columns.append(("top_weights", pc.take(weights, list_index)))
        columns.append(("status", pa.array(status.astype(str), pa.string())))
        deep = forwarded.deep if forwarded.deep is not None else np.ones(probs.shape[0], bool)
        path = np.where(deep, SCORED_BY_FULL, SCORED_BY_NGRAMS).astype(object)
        if forwarded.overturned is not None:
            path[forwarded.overturned] = SCORED_BY_FILE
        columns.append(("scored_by", pa.array(path[take] if path.size else np.full(status.size, SCORED_BY_FULL, object),
                                              pa.string(), mask=null_mask)))
        return [(prefix + name, arr) for name, arr in columns]

    # -- public ---------------------------------------------------------------
    def score_batch(self, batch: pa.RecordBatch, text_column: str, keep_columns=None, prefix: str = "") -> pa.RecordBatch:
        prepared = self.preprocess(batch.column(text_column))
        return self._assemble(batch, self.postprocess(prepared, self.forward(prepared), prefix), keep_columns)

    @staticmethod
    def _assemble(batch: pa.RecordBatch, added, keep_columns) -> pa.RecordBatch:
        keep = batch.schema.names if keep_columns is None else list(keep_columns)
        arrays = [batch.column(name) for name in keep] + [arr for _, arr in added]
        return pa.RecordBatch.from_arrays(arrays, names=keep + [name for name, _ in added])

    def predict(self, texts):
        """Score a list of texts; returns a DataFrame with ``text`` and the
        same added columns as ``score``."""
        batch = pa.RecordBatch.from_arrays([_text_array(texts)], names=["text"])
        return self.score_batch(batch, "text").to_pandas()

    def close(self) -> None:
        self.segmenter.close()
        if self._encoder_thread is not None:
            self._encoder_thread.shutdown(wait=True, cancel_futures=True)
            self._encoder_thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _text_array(texts) -> pa.Array:
    texts = list(texts)
    try:
        return pa.array(texts, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
        # Lone surrogates (from broken decoders) cannot be UTF-8: score them as U+FFFD.
        return pa.array([t.encode("utf-8", "replace").decode("utf-8") if isinstance(t, str) else t for t in texts], pa.string())


def _is_int(value: str) -> bool:
    try:
        int(value)
        return True
    except ValueError:
        return False


def _embedder_line(settings: dict, device: str | None, precision: str = "float32") -> str:
    """``vocab``, or ``elmo zh-small 256-d average on cpu`` (``elmo+vocab ...`` with a word embedding beside it),
    ending in the biLM's precision when it is not float32."""
    if settings.get("type") not in ELMO_EMBEDDERS:
        return str(settings.get("type"))
    source = (settings.get("elmo") or {}).get("source", "?")
    line = f"{settings['type']} {source} {settings.get('dim')}-d {settings.get('layer_mix')} on {device}"
    return line if precision == "float32" else f"{line} {precision}"


def _log_stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def check_expected_settings(card: ModelCard, expect: dict) -> None:
    """Settings a user asked for (``maxlen``, ``user_dict``, ``stopwords``,
    ``layer_mix``, ``embedder``) against the card: any difference is a
    :class:`SettingsMismatchError`, never a silent change of settings."""
    problems = []
    if expect.get("maxlen") is not None and int(expect["maxlen"]) != card.maxlen:
        problems.append(f"maxlen {expect['maxlen']} (model: {card.maxlen})")
    if expect.get("user_dict"):
        from .artifacts import sha256_of

        trained = card.segmenter.get("user_dict_sha256")
        if trained != sha256_of(Path(expect["user_dict"])):
            problems.append(f"user dictionary {expect['user_dict']} (model: {'another file' if trained else 'none'})")
    if expect.get("stopwords"):
        from .segment import load_stopwords

        if load_stopwords(expect["stopwords"]) != load_stopwords(str(card.path / STOPWORDS_FILE)):
            problems.append(f"stopwords {expect['stopwords']} (model: its own stopwords.txt)")
    if expect.get("layer_mix") and expect["layer_mix"] != card.embedder.get("layer_mix"):
        problems.append(f"ELMo layer mix {expect['layer_mix']} (model: {card.embedder.get('layer_mix') or 'no ELMo'})")
    if expect.get("embedder") and expect["embedder"] != card.embedder_type:
        problems.append(f"embedder {expect['embedder']} (model: {card.embedder_type})")
    if problems:
        raise SettingsMismatchError(
            f"model {card.name} was trained with other settings: {'; '.join(problems)}. "
            "Drop these options to use the model's own settings, or train a model with them"
        )


@dataclass(frozen=True)
class RunPlan:
    """A scoring run decided and checked once, before any work: the model's
    card and the columns that go out. The local engine (``score_file``) and
    the Ray engine both execute one."""

    card: ModelCard
    text_column: str
    keep: tuple[str, ...]  # input columns copied to the output, in order
    prefix: str

    @property
    def added(self) -> list[str]:
        return output_column_names(list(self.card.labels), self.prefix)


def check_elmo_precision(card: ModelCard, precision: str) -> None:
    """Only a model with a biLM (for an ensemble: in some member) runs in
    another precision than float32."""
    if precision != "float32" and not card.runs_bilm:
        raise UsageError(f"--elmo-precision applies to ELMo models; {card.name} embeds with "
                         f"{', '.join(dict.fromkeys(c.embedder_type for c in card.members or (card,)))}")


def default_chunk_rows(card: ModelCard) -> int:
    """Rows per chunk when the user gives none: fewer for a model with a
    biLM (for an ensemble: in some member), whose batches in flight add to
    the two chunks the pipeline holds (config.ELMO_CHUNK_ROWS)."""
    return ELMO_CHUNK_ROWS if card.runs_bilm else DEFAULT_CHUNK_ROWS


def with_chunk_rows(config: ScoreConfig, card: ModelCard) -> ScoreConfig:
    """``config`` with its chunk size decided: the user's, else the model's own."""
    return config if config.chunk_size is not None else dataclasses.replace(config, chunk_size=default_chunk_rows(card))


def plan_run(card: ModelCard, inputs: list[tuple[str, list[str]]], config: ScoreConfig, prefix: str = "",
             expect: dict | None = None) -> RunPlan:
    """Check every input's columns (``inputs``: each input's name and its
    column names), the settings asked for and the output columns against
    the model's card. The first input's columns are kept unless
    ``config.keep_columns`` names them; every other input must have them."""
    check_expected_settings(card, expect or {})
    check_elmo_precision(card, config.elmo_precision)
    several = len(inputs) > 1
    first_path, first_names = inputs[0]
    keep = list(config.keep_columns) if config.keep_columns is not None else list(first_names)
    for path, names in inputs:
        missing = [c for c in dict.fromkeys([config.text_column, *keep]) if c not in names]
        if config.text_column in missing:
            raise InputError(
                f"no text column {config.text_column!r} in {path}; its columns are: {', '.join(names)}. "
                "Pick one with --text-column" + (" (every input file needs it)" if several else "")
            )
        if missing and config.keep_columns is not None:
            raise InputError(f"--keep-columns: no column {', '.join(missing)} in {path}; its columns are: {', '.join(names)}")
        if missing:
            raise InputError(
                f"{path} lacks column(s) {', '.join(missing)} that {first_path} has; its columns are: {', '.join(names)}. "
                "Score files with other columns separately, or pass the shared ones with --keep-columns"
            )
    plan = RunPlan(card=card, text_column=config.text_column, keep=tuple(keep), prefix=prefix)
    clashes = [c for c in plan.added if c in keep]
    if clashes:
        raise InputError(
            f"the input already has column(s) {', '.join(clashes)}; pass --prefix (e.g. --prefix ss_) or leave them out with --keep-columns"
        )
    return plan


def reference_prior_of(card: ModelCard) -> np.ndarray:
    """The class prior the model believes in: its mean calibrated posterior
    on its validation split, from the card; what scoring under other priors
    divides by. A :class:`ModelError` for a card without one."""
    if card.reference_prior is None:
        raise ModelError(f"model {card.name} has no reference prior in its card (trained before sentiscore 0.2), "
                         "so its priors cannot be adapted; retrain it, or score without --adapt-priors/--priors")
    return np.asarray(card.reference_prior, np.float64)


def validation_confusion_of(card: ModelCard) -> np.ndarray:
    """P(predicted i, true j) on the model's validation split, from the card:
    what ``--prior-estimator bbse`` inverts. A :class:`ModelError` for a card
    without one."""
    confusion = card.confusion
    if confusion is None:
        raise ModelError(f"model {card.name} has no validation confusion in its card (trained before "
                         "sentiscore recorded it), so --prior-estimator bbse cannot run; use --prior-estimator em, or add it "
                         "with scripts/fit_confusion.py MODEL TRAIN_FILE, or retrain")
    return confusion


def check_priors_estimable(card: ModelCard, estimator: str) -> None:
    """--adapt-priors' preconditions, checked before any work: a known
    estimator, and what it needs in the card."""
    if estimator not in PRIOR_ESTIMATORS:
        raise UsageError(f"--prior-estimator must be one of {', '.join(PRIOR_ESTIMATORS)}")
    reference_prior_of(card)
    if estimator == "bbse":
        validation_confusion_of(card)


def file_priors(card: ModelCard, probs: np.ndarray, estimator: str) -> np.ndarray:
    """A file's class priors (--adapt-priors), estimated by ``estimator``
    from the model's probabilities of its labelled rows in file order: BBSE
    from their predicted labels and the validation confusion, EM from the
    probabilities and the reference prior."""
    from .calibration import adapt_priors, black_box_shift_priors

    if estimator == "bbse":
        return black_box_shift_priors(probs.argmax(axis=1), validation_confusion_of(card))
    return adapt_priors(probs, reference_prior_of(card))


def priors_in_label_order(labels, pairs) -> np.ndarray:
    """--priors pairs (label value, share) as shares in the model's label
    order, summing to 1; every label must be named once."""
    given = dict(pairs)
    values = [value for value, _ in labels]
    if sorted(given) != sorted(values):
        raise UsageError(f"--priors must give a share for each label value: {', '.join(values)}")
    prior = np.array([given[v] for v in values], np.float64)
    return prior / prior.sum()


def priors_line(labels, priors, how: str) -> str:
    """The ``sentiscore.priors`` provenance value: each label's share, and how
    it was set ("given", "adapted by BBSE")."""
    return ", ".join(f"{name} {p:.4f}" for (_, name), p in zip(labels, priors)) + f" ({how})"


def matched_how(labels, priors, rows: int) -> str:
    """How ``--priors-mode match`` set the priors, for :func:`priors_line`
    of the shares given: the priors that give them on the file's sample."""
    under = ", ".join(f"{name} {p:.4f}" for (_, name), p in zip(labels, priors))
    return f"given; matched on {rows:,} sampled rows, scored under {under}"


def sample_texts(batches, text_column: str):
    """A first pass that only reads: the uniform sample (:class:`adapt.FileSample`)
    of the texts of ``batches``, for the model to score."""
    from .adapt import FileSample

    sample = FileSample()
    for batch in batches:
        texts = as_text(batch.column(text_column))
        # Rows without text still take their place: a row's sampling key is its row number.
        sample.add(texts if texts is not None else [None] * batch.num_rows)
    return sample


def score_file(input_path, output_path, model=None, config: ScoreConfig | None = None, scorer: Scorer | None = None, prefix: str = "", expect: dict | None = None, progress=None,
               stop: threading.Event | None = None) -> ScoreSummary:
    """Score IN into OUT (files or '-'). Returns a :class:`ScoreSummary`.
    ``stop``: once set (e.g. a :class:`StopRequest` from a signal handler),
    the run stops before its next chunk with :class:`RunStopped`, leaving no
    output (with --resume, the finished parts)."""
    config = config or ScoreConfig()
    in_fmt = detect_format(input_path, config.input_format, INPUT_FORMATS, "--input-format")
    if config.adapt_priors and is_stdio(input_path):
        raise UsageError("--adapt-priors reads the input twice (estimate, then score); pass a file, not '-', "
                         "or give known priors with --priors")
    if config.adapt_domain and is_stdio(input_path):
        raise UsageError("--adapt-domain reads the input twice (fit the file model, then score); pass a file, not '-'")
    if config.priors_mode == "match" and is_stdio(input_path):
        raise UsageError("--priors-mode match reads the input twice (fit the shares on a sample, then score); pass a file, "
                         "not '-', or drop it to reweight by the shares in one pass")
    if config.resume:
        if is_stdio(input_path) or is_stdio(output_path):
            raise UsageError("--resume needs a real input file and an output directory, not '-'")
        if config.output_format not in (None, "parquet"):
            raise UsageError("--resume writes Parquet parts; drop --output-format")
        if not Path(output_path).parent.exists():
            raise OutputError(f"the folder {Path(output_path).parent} does not exist; create it first")
        out_fmt = "parquet"
    else:
        out_fmt = detect_format(output_path, config.output_format, OUTPUT_FORMATS, "--output-format")
        check_output_path(output_path, input_path, config.overwrite)
    card = scorer.card if scorer is not None else read_card(model)
    config = with_chunk_rows(config, card)
    source = open_input(input_path, in_fmt, config.chunk_size, config.encoding, config.on_bad_lines)
    plan = plan_run(card, [(str(input_path), source.schema.names)], config, prefix, expect)
    keep = list(plan.keep)
    own_scorer = scorer is None
    if own_scorer:
        scorer = Scorer.from_card(card, workers=config.workers, batch_size=config.batch_size, top_k=config.top_k, device=config.device,
                                  cascade=config.cascade, runtime=config.runtime, worker_nice=config.segmentation_nice,
                                  start_workers=_large_file(input_path) and config.chunk_size >= ParallelSegmenter.min_parallel_texts)
    try:
        if own_scorer:
            scorer.set_elmo_precision(config.elmo_precision)
        with scorer.keeping_adaptation():
            started = time.perf_counter()  # the summary's seconds include a first pass
            priors = None
            if config.priors is not None:
                priors = priors_in_label_order(scorer.labels, config.priors)
            given = priors
            priors_how = f"adapted by {config.prior_estimator.upper()}" if config.adapt_priors else "given"
            if config.adapt_priors or config.adapt_domain:
                first = open_input(input_path, in_fmt, config.chunk_size, config.encoding, config.on_bad_lines)
                estimated = scorer.adapt_to_file(first.batches, config.text_column, config.adapt_priors, config.prior_estimator,
                                                 config.adapt_domain)
                priors = estimated if config.adapt_priors else priors
            elif config.priors_mode == "match":
                first = open_input(input_path, in_fmt, config.chunk_size, config.encoding, config.on_bad_lines)
                priors, rows = scorer.matched_priors(sample_texts(first.batches, config.text_column), given)
                priors_how = matched_how(scorer.labels, priors, rows)
            scorer.set_priors(priors, matched=config.priors_mode == "match")
            provenance = dict(scorer.provenance)
            if priors is not None:
                provenance["sentiscore.priors"] = priors_line(scorer.labels, given if config.priors_mode == "match" else priors, priors_how)
            if config.adapt_domain:
                provenance["sentiscore.adapted_domain"] = adaptation_line(scorer)
            if config.resume:
                run = {
                    "input": file_fingerprint(input_path),
                    "model_hash": card.hash,
                    "scoring": resume_scoring(provenance),
                    "options": {"text_column": config.text_column, "chunk_size": config.chunk_size, "top_k": config.top_k,
                                "keep_columns": keep, "prefix": prefix, "input_format": in_fmt, "encoding": config.encoding,
                                "on_bad_lines": config.on_bad_lines,
                                "priors": None if priors is None else [round(float(p), 6) for p in priors],
                                # Only when set: runs begun before these options existed still resume.
                                **({"adapt_domain": True} if config.adapt_domain else {}),
                                **({"priors_mode": "match"} if config.priors_mode == "match" else {})},
                }
                sink = PartsSink(output_path, run, provenance)
            else:
                sink = FileSink(output_path, out_fmt, provenance)
            summary = _stream(scorer, source, sink, config, keep, prefix, progress,
                              output_label=str(output_path) if str(output_path) != "-" else "stdout", stop=stop, provenance=provenance)
            summary.seconds = time.perf_counter() - started
            summary.skipped_lines = len(source.bad_lines)
            bad_lines_file = write_bad_lines(source, input_path, output_path, config.encoding)
            summary.bad_lines_file = str(bad_lines_file) if bad_lines_file else None
            return summary
    finally:
        if own_scorer:
            scorer.close()


# What decides a row's output beyond the model and the input: a resumed run must match them, or its
# parts would be scored two ways. Versions of TF/Keras/torch are left out (the runtime line and the
# model hash pin what runs); --batch-size too, so a run that ran out of memory can resume smaller.
_RESUME_SCORING_KEYS = ("sentiscore.version", "sentiscore.segmenter", "sentiscore.embedder", "sentiscore.runtime",
                        "sentiscore.cascade")


def adaptation_line(scorer: Scorer) -> str:
    """What --adapt-domain did, for the provenance and the summary line."""
    if scorer.file_model is None:
        return "no: fewer than two labels had enough confident rows in the file"
    return scorer.file_model.line([name for _, name in scorer.labels])


def resume_scoring(provenance: dict[str, str]) -> dict[str, str]:
    """The scorer's settings a ``--resume`` run records and a rerun must repeat:
    the runtime (ONNX, int8, TensorFlow), the embedder line (device, biLM
    precision), the segmenter, the cascade and sentiscore's version."""
    return {key.removeprefix("sentiscore."): provenance[key] for key in _RESUME_SCORING_KEYS if key in provenance}


def cascade_line(cascade) -> str:
    """How the cascade ran, for the provenance: its threshold, or off."""
    return "off" if cascade is None else f"n-gram >= {cascade.threshold:.4g}"  # the n-gram path decides rows it is this sure of


_START_WORKERS_BYTES = 1 << 20  # ~5,000 reviews as CSV: enough for the workers to be used (ParallelSegmenter.min_parallel_texts)


def _large_file(path) -> bool:
    """Whether IN is a file large enough that the segmentation workers will
    be needed: then they start while the model loads (small files, stdin and
    chunks under ``min_parallel_texts`` are segmented in this process, and
    starting them would only cost)."""
    if is_stdio(path):
        return False
    try:
        return Path(path).stat().st_size >= _START_WORKERS_BYTES
    except OSError:
        return False


class StopRequest(threading.Event):
    """A stop asked of a running ``score_file`` (its ``stop`` argument),
    honoured before the next chunk. ``request`` is safe in a signal handler:
    it only sets a flag. Raising from the handler instead could fire while
    the worker pool holds its own lock, and the cleanup that shuts the pool
    down would then wait on that lock forever."""

    signum = 0

    def request(self, signum: int = 0) -> None:
        self.signum = signum
        self.set()


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise RunStopped(getattr(stop, "signum", 0))


def _stream(scorer: Scorer, source, sink, config: ScoreConfig, keep, prefix, progress, output_label: str,
            stop: threading.Event | None, provenance: dict[str, str]) -> ScoreSummary:
    started = time.perf_counter()
    counts = np.zeros(len(scorer.labels), np.int64)
    unlabelled = 0

    def emit(index: int, batch: pa.RecordBatch, prepared: Prepared, first_row: int) -> None:
        nonlocal unlabelled
        try:
            added = scorer.postprocess(prepared, scorer.forward(prepared), prefix)
        except WorkerError as exc:
            raise WorkerError(f"chunk {index + 1} (input rows {first_row + 1:,}-{first_row + batch.num_rows:,}): {exc}") from exc
        out = Scorer._assemble(batch, added, keep)
        sink.write(index, out)
        unlabelled += tally_labels(out.column(prefix + "label"), scorer.labels, counts)
        if progress is not None:
            progress(out.num_rows)

    def empty_schema() -> pa.Schema:
        empty = pa.RecordBatch.from_pylist([], schema=source.schema)
        return scorer.score_batch(empty, config.text_column, keep, prefix).schema

    try:
        pending = None  # segmentation of the next chunk overlaps the model's work on this one
        first_row = 0
        for index, batch in enumerate(source.batches):
            _check_stop(stop)
            if sink.is_done(index):  # --resume: this chunk's part is already written
                unlabelled += tally_labels(sink.read_done(index, [prefix + "label"]).column(0), scorer.labels, counts)
                if progress is not None:
                    progress(batch.num_rows)
            else:
                prepared = scorer.preprocess(batch.column(config.text_column))
                if pending is not None:
                    emit(*pending)
                pending = (index, batch, prepared, first_row)
            first_row += batch.num_rows
        if pending is not None:
            emit(*pending)
        _check_stop(stop)
        sink.finish(empty_schema)
    except BaseException:
        sink.abort()
        raise
    return ScoreSummary(
        rows=sink.rows,
        seconds=time.perf_counter() - started,
        label_counts={name: int(c) for (_, name), c in zip(scorer.labels, counts)},
        unlabelled=unlabelled,
        model_name=scorer.loaded.name,
        model_hash=scorer.loaded.hash,
        output=output_label,
        provenance=provenance,
    )


def write_bad_lines(source, input_path, output_path, encoding: str) -> Path | None:
    """List skipped CSV rows beside OUT: line number (where found) and raw text."""
    if not source.bad_lines or str(output_path) == "-":
        return None
    import csv as _csv

    path = Path(f"{output_path}.bad-lines.tsv")
    numbers = locate_lines(input_path, source.bad_lines, encoding)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = _csv.writer(f, delimiter="\t")
        writer.writerow(["line", "text"])
        for number, text in zip(numbers, source.bad_lines):
            writer.writerow(["" if number is None else number, text])
    return path


def tally_labels(label_col, labels, counts: np.ndarray) -> int:
    """Add a label column's per-label counts to ``counts``; return its nulls."""
    position = {name: j for j, (_, name) in enumerate(labels)}
    for item in pc.value_counts(label_col).to_pylist():
        if item["values"] is not None:
            counts[position[item["values"]]] += item["counts"]
    return int(label_col.null_count)
