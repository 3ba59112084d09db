"""``sentiscore score --engine ray``: the same scoring on a Ray cluster.

    ray.data.from_items(file numbers)
      → map_batches(read_files)       CPU tasks: sentiscore's own reader (io.open_input), chunks of
                                      --chunk-size rows, each row numbered (file index, row index)
      → map_batches(segment_block)    CPU tasks: jieba_fast, each distinct text once
      → map_batches(ScoreActor)       actor pool (--num-workers; GPUs with --gpus-per-worker):
                                      the model is loaded once per actor; Scorer.score_batch; the
                                      block is sorted by its row numbers and written as parts
      → the driver                    checks that the parts cover every row once, renames them

--adapt-priors and --adapt-domain add a first pass (_adapted_to_input): with
--adapt-priors the actors (ProbsActor) send every labelled row's
probabilities and place to the driver, which estimates the priors in input
order; --adapt-domain alone runs the read tasks (texts_and_places). The
driver keeps adapt.FileSample's uniform sample of what arrives (keys from the
rows' places), scores it where needed and fits the file model, which reaches
every actor through Ray's object store.

Row order does not depend on Ray. The read tasks number every row (its file's
index in IN's sorted file list, its index within the file) in columns that
never reach the output. An actor sorts each block it scores by those numbers,
splits it into runs of consecutive rows of one file and writes each run as
``part-FFFFF-RRRRRRRRRR.parquet`` (file index, first row), so OUT's parts in
name order hold the rows in input order, whatever order Ray handed the blocks
around in, and the output equals the local engine's row for row. The driver
checks that the parts tile every file from row 0 to its last row (no gap, no
row twice) before it renames anything: rows lost in the cluster stop the run
instead of going missing.

Segmentation runs as its own CPU stage rather than inside the scoring actors:
the actors then spend their time (and their GPU) on the model, and Ray runs as
many segmentation tasks as there are free CPUs in the cluster. The tokens
travel to the actors as an Arrow list column; an actor looks each distinct
text up there and segments only what it cannot find (so a mismatch between
the stages costs time, never correctness).

The model reaches the workers by path: a directory on storage that every node
mounts at the same place (or, with ``ray job submit --working-dir``, a path
relative to the job's working directory), or a built-in model name that each
node resolves in its own sentiscore install. Every worker checks the model's
manifest hash against the driver's.

Only this module imports ray, and only when ``--engine ray`` is used.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .artifacts import model_hash, parse_card, read_card, read_meta, resolve_model_path
from .config import ScoreConfig, SegmenterConfig
from .errors import InputError, ModelError, OutputError, SentiscoreError, UsageError, WorkerError
from .io import (INPUT_FORMATS, RESUME_MANIFEST, SUCCESS_MARKER, detect_format, is_stdio, open_input,
                 remove_stale_temp_files, temp_path_for)
from .pipeline import (as_text, check_priors_estimable, matched_how, priors_in_label_order, priors_line, reference_prior_of,
                       with_chunk_rows)

TOKENS_COLUMN = "__sentiscore_tokens"
TRUNCATED_COLUMN = "__sentiscore_truncated"
# Each row's place in the input, added by the read tasks; never written out.
FILE_COLUMN = "__sentiscore_file"  # the file's index in the sorted list of input files
ROW_COLUMN = "__sentiscore_row"  # the row's index within its file (0-based)
END_COLUMN = "__sentiscore_end"  # true on the last row of a file: the driver's check that no tail went missing
ORDER_COLUMNS = (FILE_COLUMN, ROW_COLUMN, END_COLUMN)
INTERNAL_COLUMNS = (*ORDER_COLUMNS, TOKENS_COLUMN, TRUNCATED_COLUMN)
ROW_DIGITS = 10  # part-FFFFF-RRRRRRRRRR.parquet: up to 10^10 rows per input file keep name order = row order
INSTALL_HINT = "pip install 'sentiscore[ray]'"
ACTOR_MEMORY_BYTES = 1 << 30  # a scoring actor with zh-fast, 10,000-row chunks: ~1.1 GB peak RSS (TensorFlow CPU)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: a local Ray for this run (or the cluster in RAY_ADDRESS); "auto"; "ray://host:port"
    num_workers: int | None = None  # scoring actors; default: one per GPU share, or half the CPUs
    gpus_per_worker: float = 0.0

    def __post_init__(self):
        if self.num_workers is not None and self.num_workers < 1:
            raise UsageError("--num-workers must be at least 1")
        if self.gpus_per_worker < 0:
            raise UsageError("--gpus-per-worker must be 0 or more")


@dataclass(frozen=True)
class _Plan:
    """What every task and actor needs; small and picklable."""

    model_candidates: tuple[str, ...]  # tried in order on each node
    model_hash: str
    text_column: str
    keep: tuple[str, ...]
    prefix: str
    batch_size: int | None  # None: the embedder's own default
    top_k: int
    provenance: tuple[tuple[str, str], ...] = ()
    device: str = "auto"  # where an ELMo embedder runs inside each actor
    cascade: bool = True  # let the card's cascade skip the deep path on rows the n-gram path decides
    runtime: str = "auto"  # what runs the classifier in each actor (ScoreConfig.runtime)
    elmo_precision: str = "float32"  # what an ELMo biLM's LSTMs compute in, in each actor (ScoreConfig.elmo_precision)
    files: tuple[str, ...] = ()  # IN's files, sorted: a row's FILE_COLUMN indexes this
    input_format: str = "parquet"
    encoding: str = "utf-8"
    chunk_size: int = 10_000  # rows per block read
    parts_dir: str = ""  # where the actors write their parts (the run's temporary OUT)
    priors: tuple[float, ...] | None = None  # --priors, in the model's label order: every actor scores under them
    priors_matched: bool = False  # the priors are --priors-mode match's (Scorer.set_priors)
    file_model: object = None  # --adapt-domain: a Ray ObjectRef of the driver's adapt.FileModel, fetched by each actor

    @property
    def file_digits(self) -> int:
        return max(5, len(str(max(len(self.files) - 1, 0))))


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"--engine ray needs Ray Data, which is not installed: {INSTALL_HINT}") from exc
    return ray


# --- inputs ------------------------------------------------------------------


def _is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def input_files(input_path, input_format: str | None) -> tuple[list[str], str]:
    """IN as a sorted list of absolute file paths, and their one format. A
    directory contributes its files (recursively) whose extension names a
    format, skipping hidden and ``_``-prefixed files (``_SUCCESS``...)."""
    text = str(input_path)
    if is_stdio(text):
        raise UsageError("--engine ray reads files, directories or globs, not stdin: write the input to a file first")
    if "://" in text:
        raise UsageError(f"--engine ray reads paths on a file system every node mounts, not URLs ({text})")
    if _is_glob(text):
        found = sorted(p for p in glob.glob(text, recursive=True) if Path(p).is_file())
        where = f"no files match {text}"
    elif Path(text).is_dir():
        found = sorted(
            str(p) for p in Path(text).rglob("*")
            if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(text).parts)
        )
        where = f"the directory {text} holds no input files"
    elif Path(text).is_file():
        found = [text]
        where = ""
    else:
        raise InputError(f"input {text} does not exist")
    files, formats = [], {}
    for path in found:
        try:
            fmt = detect_format(path, input_format, INPUT_FORMATS, "--input-format")
        except UsageError:
            if len(found) == 1:
                raise
            continue  # a directory may hold other files (README, .crc...)
        files.append(str(Path(path).resolve()))
        formats.setdefault(fmt, path)
    if not files:
        raise InputError(f"{where}; give CSV, TSV, Parquet or JSONL files (or pass --input-format)")
    if len(formats) > 1:
        examples = ", ".join(f"{fmt} ({path})" for fmt, path in formats.items())
        raise UsageError(f"{text} mixes formats: {examples}; score one format at a time or pass --input-format")
    return files, next(iter(formats))


def file_columns(files: list[str], fmt: str, encoding: str) -> tuple[list[list[str]], list[int | None]]:
    """Each file's column names, read cheaply on the driver (CSV headers,
    Parquet footers; JSONL's first file only, its keys vary by row anyway),
    and each file's row count where the footer holds it (Parquet; None
    otherwise). Ray fills a column that one file lacks with nulls, so a file
    without the text column would be scored as empty rows: this check stops
    that. The row counts let the driver notice a file whose every row went
    missing in the cluster."""
    from .io import _HEAD_BYTES, _csv_header, _open_binary

    columns: list[list[str]] = []
    rows: list[int | None] = [None] * len(files)
    for i, path in enumerate(files if fmt != "jsonl" else files[:1]):
        if fmt in ("csv", "tsv"):
            with _open_binary(path) as raw:
                head = raw.read(_HEAD_BYTES)
            if not head.strip(b"\xef\xbb\xbf \r\n\t"):
                raise InputError(f"{path} is empty: a CSV needs at least a header line")
            columns.append(_csv_header(head, encoding, "\t" if fmt == "tsv" else ","))
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            try:
                metadata = pq.read_metadata(path)
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"cannot read {path} as Parquet: {exc}") from exc
            columns.append(metadata.schema.to_arrow_schema().names)
            rows[i] = metadata.num_rows
        else:
            columns.append(open_input(path, fmt, 1, encoding).schema.names)
    return columns, rows


def _with_local_hint(message: str) -> str:
    """The local reader's hint for a ragged CSV row names --on-bad-lines
    skip, which the Ray engine refuses: point to the local engine instead."""
    if "--on-bad-lines skip" in message:
        return message.rsplit("; ", 1)[0] + "; fix the row, or score this file with --engine local --on-bad-lines skip"
    return message


def read_files(batch: pa.Table, plan: _Plan):
    """Ray task: read the files whose indexes ``batch`` holds with the local
    engine's reader, in chunks of ``plan.chunk_size`` rows, each row numbered
    by file and row (FILE_COLUMN, ROW_COLUMN; END_COLUMN marks a file's last
    row). Errors carry the local engine's message (file, line, hint)."""
    for index in batch.column(FILE_COLUMN).to_pylist():
        path = plan.files[index]
        try:
            source = open_input(path, plan.input_format, plan.chunk_size, plan.encoding)
            first, held = 0, None
            for chunk in source.batches:  # one chunk of look-ahead: the last one gets the end mark
                if held is not None:
                    yield _numbered(held, index, first, end=False)
                    first += held.num_rows
                held = chunk
            if held is not None:
                yield _numbered(held, index, first, end=True)
        except SentiscoreError as exc:
            raise type(exc)(_with_local_hint(str(exc))) from None
        except Exception as exc:
            raise InputError(f"cannot read {path} as {plan.input_format}: {type(exc).__name__}: {exc}") from None


def _numbered(chunk: pa.RecordBatch, file_index: int, first_row: int, end: bool) -> pa.Table:
    import numpy as np

    n = chunk.num_rows
    ends = np.zeros(n, bool)
    if end and n:
        ends[-1] = True
    table = pa.Table.from_batches([chunk])
    return (table.append_column(FILE_COLUMN, pa.array(np.full(n, file_index, np.int32)))
                 .append_column(ROW_COLUMN, pa.array(np.arange(first_row, first_row + n, dtype=np.int64)))
                 .append_column(END_COLUMN, pa.array(ends)))


# --- the model on the workers -------------------------------------------------


def _model_dir(plan: _Plan) -> Path:
    for candidate in plan.model_candidates:
        try:
            path = resolve_model_path(candidate)
        except ModelError:
            continue
        found = model_hash(path)
        if found != plan.model_hash:
            raise ModelError(
                f"the model at {path} on Ray node {_node_name()} is not the driver's (hash {found}, expected "
                f"{plan.model_hash}); every node must see the same model directory"
            )
        return path
    raise ModelError(
        f"model directory {plan.model_candidates[0]} is not visible on Ray node {_node_name()}: put it on storage "
        "that every node mounts at the same path, or ship it with the job (ray job submit --working-dir DIR) "
        "and pass --model as a path relative to DIR"
    )


def _check_model_on_every_node(ray, plan: _Plan) -> None:
    """Every alive node resolves the model as its tasks and actors will,
    before any work: a node that cannot fails the run here, named. Left to
    the scoring actors, Ray retries a failing actor without end while the
    nodes that have the model do the work, so whether such a run failed
    depended on where its tasks happened to land."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check = ray.remote(num_cpus=0, max_retries=0)(_model_dir)
    refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(plan)
            for node in ray.nodes() if node.get("Alive")]
    try:
        ray.get(refs)
    except Exception as exc:
        raise _as_sentiscore_error(ray, exc) from None


def _node_name() -> str:
    """This machine's host name, and inside a Ray worker its node id (several
    nodes may share a host name, or a machine)."""
    ray = sys.modules.get("ray")
    try:
        if ray is not None and ray.is_initialized():
            return f"{socket.gethostname()} (node id {ray.get_runtime_context().get_node_id()})"
    except Exception:  # the name is for a message: never fail on it
        pass
    return socket.gethostname()


def segmenter_setup(model_dir: Path) -> tuple[SegmenterConfig, int]:
    """The segmenter settings and maxlen a model was trained with, from its
    card (no TensorFlow, and the worker already checked the manifest's
    hash): what the segmentation tasks and the scoring actors both use."""
    card = parse_card(model_dir, read_meta(model_dir), model_hash(model_dir))
    return card.segmenter_config(host=socket.gethostname()), card.maxlen


def _where(table: pa.Table, plan: _Plan) -> str:
    """Which input a block came from, for error messages."""
    if FILE_COLUMN in table.column_names and table.num_rows and plan.files:
        files = [plan.files[i] for i in sorted(set(table.column(FILE_COLUMN).to_pylist()) - {None})]
        if files:
            return "a block of " + ", ".join(files[:3]) + (f" and {len(files) - 3} more files" if len(files) > 3 else "")
    return f"a block of {table.num_rows:,} input rows"


def _check_columns(table: pa.Table, plan: _Plan) -> None:
    missing = [c for c in dict.fromkeys((plan.text_column, *plan.keep)) if c not in table.column_names]
    if missing:
        shown = [c for c in table.column_names if c not in INTERNAL_COLUMNS]
        raise InputError(
            f"{_where(table, plan)}: no column {', '.join(map(repr, missing))}; its columns are: {', '.join(shown)}. "
            "Every input file needs the text column and the columns kept from the first file"
        )


_SEGMENTERS: dict = {}  # per worker process: model directory → Segmenter (jieba loads once)


def segment_block(table: pa.Table, plan: _Plan) -> pa.Table:
    """Ray task: add each row's tokens and truncation flag (null where the row
    has no text). Each distinct text in the block is segmented once."""
    from .segment import Segmenter

    try:
        _check_columns(table, plan)
        model_dir = _model_dir(plan)
        segmenter = _SEGMENTERS.get(model_dir)
        if segmenter is None:
            config, maxlen = segmenter_setup(model_dir)
            segmenter = _SEGMENTERS[model_dir] = Segmenter(config, maxlen)
        texts = as_text(table.column(plan.text_column))
        if texts is None:
            tokens = pa.nulls(table.num_rows, pa.list_(pa.string()))
            truncated = pa.nulls(table.num_rows, pa.bool_())
        else:
            encoded = pc.dictionary_encode(texts)
            results = [segmenter.tokenize(text) for text in encoded.dictionary.to_pylist()]
            tokens = pc.take(pa.array([words for words, _ in results], pa.list_(pa.string())), encoded.indices)
            truncated = pc.take(pa.array([cut for _, cut in results], pa.bool_()), encoded.indices)
        return table.append_column(TOKENS_COLUMN, tokens).append_column(TRUNCATED_COLUMN, truncated)
    except SentiscoreError as exc:
        raise type(exc)(_in_block(table, plan, exc)) from None
    except Exception as exc:
        raise WorkerError(f"segmentation failed on {_where(table, plan)}: {type(exc).__name__}: {exc}") from None


def _in_block(table: pa.Table, plan: _Plan, exc: Exception) -> str:
    message = str(exc)
    return message if message.startswith("a block of ") else f"{_where(table, plan)}: {message}"


class _Presegmented:
    """Stands in for the Scorer's segmenter inside an actor: the tokens come
    from the segmentation stage (``lookup``); a text not found there is
    segmented here. ``misses`` counts those (0 when the stages agree)."""

    def __init__(self, inner):
        self.inner = inner
        self.lookup: dict[str, tuple[list[str], bool]] = {}
        self.misses = 0

    def submit(self, texts: list[str]):
        from .segment import SegmentedBatch

        found = [self.lookup.get(t) for t in texts]
        missing = [t for t, f in zip(texts, found) if f is None]
        if missing:
            self.misses += len(missing)
            extra = self.inner.segment(missing)
            offsets = extra.offsets
            more = iter((extra.tokens[offsets[i]:offsets[i + 1]], bool(extra.truncated[i])) for i in range(len(missing)))
            found = [f if f is not None else next(more) for f in found]
        tokens: list[str] = []
        for words, _ in found:
            tokens.extend(words)
        batch = SegmentedBatch(
            tokens,
            pa.array([len(w) for w, _ in found], pa.int32()).to_numpy(zero_copy_only=False),
            pa.array([c for _, c in found], pa.bool_()).to_numpy(zero_copy_only=False),
        )
        return lambda: batch

    def segment(self, texts: list[str]):
        return self.submit(texts)()

    def close(self) -> None:
        self.inner.close()


class ScoreActor:
    """Ray actor: loads the model once, then scores blocks with
    :meth:`Scorer.score_batch` (same columns and statuses as the local engine)."""

    def __init__(self, plan: _Plan):
        from .pipeline import Scorer
        from .segment import ParallelSegmenter

        self.plan = plan
        model_dir = _model_dir(plan)
        card = read_card(model_dir)
        # The card's settings, as in segmenter_setup: a text the segmentation
        # tasks did not segment is segmented here, the same way.
        self.segmenter = _Presegmented(ParallelSegmenter(card.segmenter_config(host=socket.gethostname()), card.maxlen, 1))
        self.scorer = Scorer.from_card(card, workers=1, batch_size=plan.batch_size, top_k=plan.top_k, device=plan.device,
                                       segmenter=self.segmenter, cascade=plan.cascade, runtime=plan.runtime)
        self.scorer.set_elmo_precision(plan.elmo_precision)
        self.scorer.set_priors(plan.priors, matched=plan.priors_matched)
        if plan.file_model is not None:
            import ray

            self.scorer.file_model = ray.get(plan.file_model)
        self.metadata = {k.encode(): v.encode() for k, v in {**self.scorer.provenance, **dict(plan.provenance)}.items()}

    def score(self, table: pa.Table) -> pa.Table:
        """The block scored: the kept input columns and the added ones, row for
        row; FILE_COLUMN, ROW_COLUMN and END_COLUMN carried over when present."""
        try:
            _check_columns(table, self.plan)
            self._take_tokens(table)
            batch = table.combine_chunks().to_batches()
            batch = batch[0] if batch else pa.RecordBatch.from_pylist([], schema=table.schema)
            out = pa.Table.from_batches([
                self.scorer.score_batch(batch, self.plan.text_column, keep_columns=list(self.plan.keep), prefix=self.plan.prefix)
            ])
            self.segmenter.lookup = {}
            for name in ORDER_COLUMNS:
                if name in table.column_names:
                    out = out.append_column(name, table.column(name))
            return out
        except SentiscoreError as exc:
            raise type(exc)(_in_block(table, self.plan, exc)) from None
        except Exception as exc:
            raise WorkerError(f"scoring failed on {_where(table, self.plan)}: {type(exc).__name__}: {exc}") from None

    def _take_tokens(self, table: pa.Table) -> None:
        """Let the scorer's segmenter find the segmentation stage's tokens of
        this block's texts."""
        texts = as_text(table.column(self.plan.text_column))
        if texts is not None and TOKENS_COLUMN in table.column_names:
            tokens = table.column(TOKENS_COLUMN).to_pylist()
            cut = table.column(TRUNCATED_COLUMN).to_pylist()
            self.segmenter.lookup = {
                t: (w, bool(c)) for t, w, c in zip(texts.to_pylist(), tokens, cut) if w is not None and t is not None
            }

    def __call__(self, table: pa.Table) -> pa.Table:
        """Score a block and write it as parts; returns one row per part written."""
        scored = self.score(table)
        try:
            return write_parts(scored, self.plan, self.metadata)
        except OSError as exc:
            raise OutputError(f"cannot write the results of {_where(table, self.plan)} to {self.plan.parts_dir}: {exc}") from None


class ProbsActor(ScoreActor):
    """Ray actor for --adapt-priors' first pass: the model's probabilities of
    a block's rows that get a label, with their places in the input (and
    their texts, for --adapt-domain's sample); no explanations, no parts."""

    def __init__(self, plan: _Plan, with_texts: bool = False):
        super().__init__(plan)
        self.with_texts = with_texts

    def __call__(self, table: pa.Table) -> pa.Table:
        import numpy as np

        try:
            _check_columns(table, self.plan)
            self._take_tokens(table)
            rows, texts, probs = self.scorer.labelled_probs(table.column(self.plan.text_column))
            self.segmenter.lookup = {}
            taken = pa.array(rows, pa.int64())
            columns = {FILE_COLUMN: table.column(FILE_COLUMN).take(taken), ROW_COLUMN: table.column(ROW_COLUMN).take(taken),
                       "probs": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(probs, np.float32).ravel()),
                                                                  len(self.scorer.labels))}
            if self.with_texts:
                columns["text"] = pa.array(texts, pa.string())
            return pa.table(columns)
        except SentiscoreError as exc:
            raise type(exc)(_in_block(table, self.plan, exc)) from None
        except Exception as exc:
            raise WorkerError(f"scoring failed on {_where(table, self.plan)}: {type(exc).__name__}: {exc}") from None


# --- parts: order from the row numbers -----------------------------------------

REPORT_SCHEMA = pa.schema([("file", pa.int32()), ("first_row", pa.int64()), ("rows", pa.int64()),
                           ("end", pa.bool_()), ("written", pa.string())])


def part_name(plan: _Plan, file_index: int, first_row: int) -> str:
    """A part's final name: its file's index and its first row, zero-padded so
    that name order is input order."""
    return f"part-{file_index:0{plan.file_digits}d}-{first_row:0{ROW_DIGITS}d}.parquet"


def runs(files, rows) -> list[tuple[int, int]]:
    """[start, stop) offsets of the runs of consecutive rows of one file in
    sorted (file, row) numbers."""
    import numpy as np

    files, rows = np.asarray(files), np.asarray(rows)
    if not len(rows):
        return []
    breaks = np.flatnonzero((files[1:] != files[:-1]) | (rows[1:] != rows[:-1] + 1)) + 1
    bounds = [0, *breaks.tolist(), len(rows)]
    return list(zip(bounds[:-1], bounds[1:]))


def write_parts(scored: pa.Table, plan: _Plan, metadata: dict) -> pa.Table:
    """Sort a scored block by (file, row), split it into runs of consecutive
    rows of one file and write each run to the parts directory, under a
    name unique to this attempt (a task that Ray retries writes again, never
    over a part that was reported). The driver renames the reported parts to
    :func:`part_name`. Returns one REPORT_SCHEMA row per part."""
    import pyarrow.parquet as pq

    order = pc.sort_indices(scored, sort_keys=[(FILE_COLUMN, "ascending"), (ROW_COLUMN, "ascending")])
    scored = scored.take(order)
    files = scored.column(FILE_COLUMN).to_numpy()
    rows = scored.column(ROW_COLUMN).to_numpy()
    ends = scored.column(END_COLUMN).to_numpy(zero_copy_only=False)
    data = scored.drop_columns(list(ORDER_COLUMNS)).replace_schema_metadata(metadata)
    attempt = uuid.uuid4().hex[:12]
    report = []
    for start, stop in runs(files, rows):
        f, first = int(files[start]), int(rows[start])
        name = f".{part_name(plan, f, first)[:-len('.parquet')]}.{attempt}.parquet"  # hidden until renamed
        path = Path(plan.parts_dir) / name
        pq.write_table(data.slice(start, stop - start), str(path) + ".tmp", compression="zstd")
        os.replace(str(path) + ".tmp", path)
        report.append((f, first, stop - start, bool(ends[start:stop].any()), name))
    return pa.Table.from_pylist([dict(zip(REPORT_SCHEMA.names, r)) for r in report], schema=REPORT_SCHEMA)


def check_parts(reports: pa.Table, plan: _Plan, expected_rows: list[int | None]) -> list[tuple[str, str]]:
    """The reported parts in input order, as (written name, final name), after
    checking that they cover every file's rows exactly once: from row 0, with
    no gap and no overlap, up to the row the reader marked as the file's last
    (and, for Parquet, as many rows as the footer says). Rows lost anywhere in
    the cluster stop the run here instead of going missing from OUT."""
    by_file: dict[int, list[tuple[int, int, bool, str]]] = {}
    for f, first, n, end, written in zip(*(reports.column(c).to_pylist() for c in REPORT_SCHEMA.names)):
        by_file.setdefault(f, []).append((first, n, end, written))
    ordered = []
    for f in range(len(plan.files)):
        parts = sorted(by_file.pop(f, []))
        next_row, ended = 0, False
        for first, n, end, written in parts:
            if ended or first != next_row:
                what = "twice" if first < next_row else "not at all"
                low, high = (first, next_row) if first < next_row else (next_row, first)
                if ended and first >= next_row:
                    what, low, high = "after the reader's last row", first, first + n
                raise WorkerError(
                    f"rows {low + 1:,}-{high:,} of {plan.files[f]} came back from the Ray workers {what}; "
                    "no output was written. This is a bug in sentiscore or Ray: please report it"
                )
            next_row, ended = first + n, end
            ordered.append((written, part_name(plan, f, first)))
        expected = expected_rows[f] if f < len(expected_rows) else None
        if (parts and not ended) or (expected is not None and next_row != expected):
            total = f"{expected:,}" if expected is not None else "its end"
            got = f"only rows 1-{next_row:,}" if next_row else "no rows"
            raise WorkerError(
                f"{got} of {plan.files[f]} (of {total}) came back from the Ray workers; no output was "
                "written. This is a bug in sentiscore or Ray: please report it"
            )
    if by_file:
        raise WorkerError(f"the Ray workers returned rows of unknown input files {sorted(by_file)}; this is a bug")
    return ordered


# --- errors from the cluster ---------------------------------------------------


def _as_sentiscore_error(ray, exc: BaseException) -> SentiscoreError:
    """A failure inside Ray as one typed error naming what failed, instead of
    the worker's traceback. The read tasks use the local engine's reader, so
    a file that cannot be read comes back with its message (line, hint)."""
    cause = exc
    for _ in range(10):  # RayTaskError → the exception raised in the worker
        inner = getattr(cause, "cause", None)
        if not isinstance(cause, ray.exceptions.RayTaskError) or inner is None:
            break
        cause = inner
    if isinstance(cause, SentiscoreError):
        return type(cause)(str(cause))
    text = str(cause).strip()
    # An actor whose __init__ raised reaches the driver as ActorDiedError,
    # holding the worker's traceback only as text: find our error's line.
    raised = re.findall(r"^sentiscore\.errors\.(\w+): (.+)$", text, re.MULTILINE)
    if raised:
        from . import errors

        kind = getattr(errors, raised[-1][0], None)
        if isinstance(kind, type) and issubclass(kind, SentiscoreError):
            return kind(raised[-1][1])
    first = text.splitlines()[0] if text else type(cause).__name__
    if isinstance(cause, ray.exceptions.RayError):
        return WorkerError(
            f"a Ray worker failed ({type(cause).__name__}: {first}); no output was written. "
            "The workers' logs are in /tmp/ray/session_latest/logs on each node"
        )
    return WorkerError(f"the Ray run failed: {type(cause).__name__}: {first}; no output was written")


# --- output ------------------------------------------------------------------


def _check_output_dir(out: Path, input_files_: list[str], overwrite: bool) -> None:
    if "://" in str(out):
        raise UsageError(f"--engine ray writes to a path on a file system every node mounts, not a URL ({out})")
    if not out.parent.exists():
        raise OutputError(f"the folder {out.parent} does not exist; create it first")
    if not os.access(out.parent, os.W_OK):
        raise OutputError(f"cannot write to the folder {out.parent} (permission denied)")
    resolved = out.resolve()
    for f in input_files_:
        if Path(f) == resolved or resolved in Path(f).parents:
            raise OutputError(f"OUT {out} holds the input {f}; write the results elsewhere")
    if out.exists():
        if not overwrite:
            raise OutputError(f"{out} already exists; pass --overwrite to replace it")
        if out.is_dir() and any(out.iterdir()) and not (out / RESUME_MANIFEST).is_file():
            raise OutputError(f"{out} is a directory that holds no sentiscore output; refusing to replace it with --overwrite")


# --- the run -----------------------------------------------------------------


def score_with_ray(input_path, output_path, model=None, config: ScoreConfig | None = None, options: RayOptions | None = None,
                   prefix: str = "", expect: dict | None = None):
    """Score IN (a file, directory or glob) into the directory OUT on Ray.
    Returns a :class:`sentiscore.pipeline.ScoreSummary`."""
    from .pipeline import ScoreSummary, plan_run, tally_labels

    config = config or ScoreConfig()
    options = options or RayOptions()
    for flag, used in (("--resume", config.resume), ("--on-bad-lines skip", config.on_bad_lines == "skip"),
                       ("--workers", config.workers is not None), ("--worker-nice", config.worker_nice is not None)):
        if used:
            hint = " (use --num-workers for the scoring actors)" if flag == "--workers" else ""
            raise UsageError(f"{flag} is for the local engine, not --engine ray{hint}")
    if config.output_format not in (None, "parquet"):
        raise UsageError("--engine ray writes a directory of Parquet parts; drop --output-format")
    if is_stdio(output_path):
        raise UsageError("--engine ray writes a directory of Parquet parts, not stdout")
    started = time.perf_counter()
    files, fmt = input_files(input_path, config.input_format)
    out = Path(output_path)
    _check_output_dir(out, files, config.overwrite)

    # Fail here, before any cluster work, on what the driver can see.
    card = read_card(model)
    config = with_chunk_rows(config, card)
    model_dir = card.path
    card.segmenter_config()  # this machine can segment as the model was trained
    columns, expected_rows = file_columns(files, fmt, config.encoding)
    keep = list(plan_run(card, list(zip(files, columns)), config, prefix, expect).keep)
    priors, priors_provenance = None, ()
    if config.adapt_priors:
        check_priors_estimable(card, config.prior_estimator)  # the actors would fail: fail here, before any cluster work
    if config.priors is not None:
        reference_prior_of(card)  # the actors would fail on a card without one: fail here, before any cluster work
        priors = priors_in_label_order(card.labels, config.priors)
        priors_provenance = (("sentiscore.priors", priors_line(card.labels, priors, "given")),)

    ray = import_ray()
    own_ray = not ray.is_initialized()
    if own_ray:
        try:
            ray.init(address=options.address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = options.address or "a new local Ray instance"
            raise UsageError(f"cannot start or reach Ray at {where}: {exc}. "
                             "Start a cluster with `ray start --head`, or drop --ray-address for a local Ray") from exc
    tmp = temp_path_for(out)
    restore = []
    try:
        num_workers = _num_workers(ray, options)
        if model is None or not Path(str(model)).is_dir():
            candidates = (model_dir.name,)  # a built-in model: each node resolves it in its own install
        else:  # a directory: the same absolute path on every node, else relative to the job's working directory
            candidates = tuple(dict.fromkeys([str(model_dir.resolve()), str(model)]))
        plan = _Plan(
            model_candidates=candidates, model_hash=card.hash, text_column=config.text_column, keep=tuple(keep),
            prefix=prefix, batch_size=config.batch_size, top_k=config.top_k, device=config.device, cascade=config.cascade, runtime=config.runtime,
            elmo_precision=config.elmo_precision, provenance=(("sentiscore.engine", f"ray {ray.__version__}"), *priors_provenance),
            files=tuple(files), input_format=fmt, encoding=config.encoding, chunk_size=config.chunk_size, parts_dir=str(tmp),
            priors=None if priors is None else tuple(float(p) for p in priors),
        )
        restore = _quiet_ray(ray, progress=not config.quiet and sys.stderr.isatty())
        remove_stale_temp_files(out)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _check_model_on_every_node(ray, plan)
        if config.adapt_priors or config.adapt_domain or config.priors_mode == "match":
            plan = _adapted_to_input(ray, plan, card, config, num_workers, options.gpus_per_worker)
            priors = plan.priors
        dataset = _scored(ray, _segmented(ray, plan), plan, num_workers, options.gpus_per_worker)
        try:
            with _idle_pool_quiet():
                reports = pa.concat_tables(
                    [REPORT_SCHEMA.empty_table(), *dataset.iter_batches(batch_size=None, batch_format="pyarrow")]
                )
        except Exception as exc:
            raise _as_sentiscore_error(ray, exc) from None
        parts = _rename_parts(tmp, check_parts(reports, plan, expected_rows))
        if not parts:  # no rows at all: still one valid, empty part with the full schema
            parts = [_write_empty_part(tmp, files[0], fmt, config, keep, prefix, model_dir, plan)]
        rows, counts, unlabelled, provenance = _summarise(parts, prefix + "label", card.labels, tally_labels)
        run = {
            "engine": f"ray {ray.__version__}",
            "inputs": files,
            "input_format": fmt,
            "model_hash": card.hash,
            "options": {"text_column": config.text_column, "chunk_size": config.chunk_size, "batch_size": config.batch_size,
                        "top_k": config.top_k, "keep_columns": keep, "prefix": prefix, "encoding": config.encoding,
                        "num_workers": num_workers, "gpus_per_worker": options.gpus_per_worker,
                        "priors": None if priors is None else [round(float(p), 6) for p in priors],
                        **({"adapt_domain": True} if config.adapt_domain else {}),
                        **({"priors_mode": "match"} if config.priors_mode == "match" else {})},
            "rows": rows,
            "provenance": provenance,
        }
        (tmp / RESUME_MANIFEST).write_text(json.dumps({"run": run}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / SUCCESS_MARKER).write_text("", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for undo in reversed(restore):
            undo()
        if own_ray:
            ray.shutdown()
    return ScoreSummary(
        rows=rows,
        seconds=time.perf_counter() - started,
        label_counts={name: int(c) for (_, name), c in zip(card.labels, counts)},
        unlabelled=unlabelled,
        model_name=card.name,
        model_hash=card.hash,
        output=str(output_path),
        provenance=provenance,
    )


def _read(ray, plan: _Plan):
    """IN's files read: blocks of at most ``plan.chunk_size`` rows, each row
    numbered by file and row."""
    blocks = min(len(plan.files), 1000)  # read tasks; each reads its files one after the other
    dataset = ray.data.from_items([{FILE_COLUMN: i} for i in range(len(plan.files))], override_num_blocks=blocks)
    return dataset.map_batches(read_files, fn_kwargs={"plan": plan}, batch_format="pyarrow", batch_size=None, num_cpus=1)


def _segmented(ray, plan: _Plan):
    """IN's files read and segmented, in blocks as :func:`_read`'s."""
    return _read(ray, plan).map_batches(segment_block, fn_kwargs={"plan": plan}, batch_format="pyarrow",
                                        batch_size=plan.chunk_size, num_cpus=1)


def texts_and_places(table: pa.Table, plan: _Plan) -> pa.Table:
    """Ray task (--adapt-domain's first pass): a read block cut down to what
    the driver's sample needs, each row's text (null where it has none) and
    its place in the input."""
    try:
        _check_columns(table, plan)
        texts = as_text(table.column(plan.text_column))
        texts = pa.nulls(table.num_rows, pa.string()) if texts is None else texts
        return pa.table({"text": texts, FILE_COLUMN: table.column(FILE_COLUMN), ROW_COLUMN: table.column(ROW_COLUMN)})
    except SentiscoreError as exc:
        raise type(exc)(_in_block(table, plan, exc)) from None


def _adapted_to_input(ray, plan: _Plan, card, config: ScoreConfig, num_workers: int, gpus_per_worker: float) -> _Plan:
    """The first pass of --adapt-priors / --adapt-domain / --priors-mode match
    on Ray, as the local engine's (all of IN's files as one input); returns
    the plan with what it estimated, and its provenance, for the actors of
    the second pass."""
    from .adapt import FileSample
    from .pipeline import file_priors

    matching = config.priors_mode == "match"
    sample = FileSample() if config.adapt_domain or matching else None
    provenance, priors = list(plan.provenance), plan.priors
    try:
        with _idle_pool_quiet():
            if config.adapt_priors:
                probs = _labelled_probs_in_order(ray, plan, num_workers, gpus_per_worker, len(card.labels), sample)
                estimated = file_priors(card, probs, config.prior_estimator)
                priors = tuple(float(p) for p in estimated)
                provenance.append(("sentiscore.priors", priors_line(card.labels, estimated,
                                                                   f"adapted by {config.prior_estimator.upper()}")))
            elif sample is not None:
                _sample_texts(ray, plan, sample)
    except Exception as exc:
        raise _as_sentiscore_error(ray, exc) from None
    file_model = None
    if config.adapt_domain:
        file_model, line = _fit_file_model(ray, card, config, sample)
        provenance.append(("sentiscore.adapted_domain", line))
    if matching:
        given = priors
        priors, rows = _on_driver(card, config, lambda scorer: scorer.matched_priors(sample, given))
        line = priors_line(card.labels, given, matched_how(card.labels, priors, rows))
        provenance = [(k, line if k == "sentiscore.priors" else v) for k, v in provenance]
        priors = tuple(float(p) for p in priors)
    return dataclasses.replace(plan, file_model=file_model, priors=priors, priors_matched=matching, provenance=tuple(provenance))


def _labelled_probs_in_order(ray, plan: _Plan, num_workers: int, gpus_per_worker: float, n_labels: int, sample=None):
    """--adapt-priors' first pass: the actors score every row and send each
    labelled row's probabilities and place (and, for ``sample``, its text);
    returns the probabilities in input order, as the local engine's pass
    collects them, so the estimate is the same bit for bit."""
    import numpy as np

    first = _scored(ray, _segmented(ray, plan), plan, num_workers, gpus_per_worker, actor=ProbsActor,
                    with_texts=sample is not None)
    files, rows, probs = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)], [np.zeros((0, n_labels), np.float32)]
    for block in first.iter_batches(batch_size=None, batch_format="pyarrow"):
        files.append(block.column(FILE_COLUMN).to_numpy())
        rows.append(block.column(ROW_COLUMN).to_numpy())
        probs.append(block.column("probs").combine_chunks().flatten().to_numpy().reshape(block.num_rows, n_labels))
        if sample is not None:
            sample.add(block.column("text"), probs[-1], files=files[-1], rows=rows[-1])
    return np.concatenate(probs)[np.lexsort((np.concatenate(rows), np.concatenate(files)))]


def _sample_texts(ray, plan: _Plan, sample) -> None:
    """--adapt-domain's first pass without --adapt-priors: the read tasks
    send each row's text and place, and ``sample`` keeps its uniform sample
    (keys from the places, so Ray's block order does not change it)."""
    places = _read(ray, plan).map_batches(texts_and_places, fn_kwargs={"plan": plan}, batch_format="pyarrow",
                                          batch_size=None, num_cpus=1)
    for block in places.iter_batches(batch_size=None, batch_format="pyarrow"):
        sample.add(block.column("text"), files=block.column(FILE_COLUMN).to_numpy(), rows=block.column(ROW_COLUMN).to_numpy())


def _fit_file_model(ray, card, config: ScoreConfig, sample):
    """The file model of ``sample`` (scored first, where its pass did not),
    fitted on the driver as an actor would (at most adapt.SAMPLE_ROWS rows,
    whatever IN's size), in Ray's object store for the actors; and its
    provenance line."""
    from .pipeline import adaptation_line

    def fit(scorer):
        scorer.adapt_to_sample(sample)
        return (None if scorer.file_model is None else ray.put(scorer.file_model)), adaptation_line(scorer)

    return _on_driver(card, config, fit)


def _on_driver(card, config: ScoreConfig, work):
    """``work(scorer)`` with the model loaded on the driver as an actor loads
    it (one process: the driver only scores a sample)."""
    from .pipeline import Scorer

    with Scorer.from_card(card, workers=1, batch_size=config.batch_size, top_k=0, device=config.device,
                          cascade=config.cascade, runtime=config.runtime, start_workers=False) as scorer:
        scorer.set_elmo_precision(config.elmo_precision)
        return work(scorer)


@contextmanager
def _idle_pool_quiet():
    """An input with no rows leaves an actor pool idle: nothing to warn about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)
        yield


def _scored(ray, dataset, plan: _Plan, num_workers: int, gpus_per_worker: float, actor=None, **actor_kwargs):
    """The scoring actors on the segmented blocks; each writes its blocks as
    parts and returns one REPORT_SCHEMA row per part (``actor``: another
    ScoreActor class for a first pass, with ``actor_kwargs``)."""
    # Each actor reserves the memory a loaded model takes, so Ray does not
    # crowd one node with actors. The differing requests also keep Ray Data
    # from fusing segmentation into the actors (it fuses stages with equal
    # requests only): the next block is segmented while an actor runs the
    # model on this one (11% faster on 20k rows here than fused).
    return dataset.map_batches(
        actor or ScoreActor, fn_constructor_kwargs={"plan": plan, **actor_kwargs}, batch_format="pyarrow",
        batch_size=plan.chunk_size, compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=1,
        memory=ACTOR_MEMORY_BYTES, **({"num_gpus": gpus_per_worker} if gpus_per_worker else {}),
    )


def _rename_parts(directory: Path, ordered: list[tuple[str, str]]) -> list[Path]:
    """The checked parts under their final names, in input order; parts that
    no report names (written by a task attempt that Ray retried) are removed."""
    parts = []
    for written, final in ordered:
        os.replace(directory / written, directory / final)
        parts.append(directory / final)
    for leftover in directory.glob(".part-*"):
        leftover.unlink()
    return parts


def _num_workers(ray, options: RayOptions) -> int:
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if options.gpus_per_worker:
        if gpus < options.gpus_per_worker:
            raise UsageError(f"--gpus-per-worker {options.gpus_per_worker:g}: the Ray cluster has {gpus:g} GPUs")
        wanted = options.num_workers or max(1, int(gpus // options.gpus_per_worker))
    else:
        wanted = options.num_workers or max(1, cpus // 2)
    if wanted >= cpus:
        raise UsageError(
            f"--num-workers {wanted}: the Ray cluster has {cpus} CPUs, and besides one per scoring actor the "
            f"segmentation and write tasks need at least one; use --num-workers {max(1, cpus - 1)} or fewer"
            if cpus >= 2 else f"the Ray cluster has {cpus} CPUs; --engine ray needs at least 2"
        )
    return wanted


def _quiet_ray(ray, progress: bool) -> list:
    """Ray Data settings for this run (restored afterwards): blocks move in
    whatever order they are ready (the parts' names keep the rows' order, not
    Ray); errors raised in our tasks reach the driver as themselves; Ray
    Data's console log stays quiet (its log file keeps everything)."""
    context = ray.data.DataContext.get_current()
    undo = []
    for owner, name, value in ((context.execution_options, "preserve_order", False),
                               (context, "raise_original_map_exception", True),
                               (context, "enable_progress_bars", progress)):
        old = getattr(owner, name)
        setattr(owner, name, value)
        undo.append(lambda owner=owner, name=name, old=old: setattr(owner, name, old))
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ != "SessionFileHandler":
            old_level = handler.level
            handler.setLevel(logging.CRITICAL)
            undo.append(lambda handler=handler, old_level=old_level: handler.setLevel(old_level))
    return undo


def _summarise(parts: list[Path], label_column: str, labels, tally):
    """Rows, label counts and provenance, read back from what was written
    (one column at a time: memory stays bounded)."""
    import numpy as np
    import pyarrow.parquet as pq

    counts = np.zeros(len(labels), np.int64)
    rows = unlabelled = 0
    for part in parts:
        pf = pq.ParquetFile(part)
        rows += pf.metadata.num_rows
        for batch in pf.iter_batches(columns=[label_column]):
            unlabelled += tally(batch.column(0), labels, counts)
    metadata = pq.read_schema(parts[0]).metadata or {}
    provenance = {k.decode(): v.decode() for k, v in metadata.items() if k.startswith(b"sentiscore.")}
    return rows, counts, unlabelled, provenance


def _write_empty_part(directory: Path, first_file: str, fmt: str, config: ScoreConfig, keep, prefix, model_dir, plan) -> Path:
    import pyarrow.parquet as pq

    from .pipeline import Scorer

    schema = open_input(first_file, fmt, 1, config.encoding).schema
    empty = pa.RecordBatch.from_pylist([], schema=schema)
    with Scorer.from_model(model_dir, workers=1) as scorer:
        out = scorer.score_batch(empty, config.text_column, keep_columns=keep, prefix=prefix)
        metadata = {**scorer.provenance, **dict(plan.provenance)}
    path = directory / part_name(plan, 0, 0)
    pq.write_table(pa.Table.from_batches([out]).replace_schema_metadata(metadata), path, compression="zstd")
    return path
