"""Readers that yield Arrow record batches of a fixed number of rows, and
writers that write one batch at a time to a temp file renamed on success.

CSV columns are read as strings so ids like ``007`` pass through unchanged
and a column that looks numeric for 10,000 rows and then holds text cannot
break a streaming read halfway through a file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from .errors import InputError, OutputError, UsageError

INPUT_FORMATS = ("csv", "tsv", "parquet", "jsonl")
OUTPUT_FORMATS = ("parquet", "csv", "tsv", "jsonl")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")
_HEAD_BYTES = 1 << 16
_BLOCK_BYTES = 4 << 20


def is_stdio(path) -> bool:
    return str(path) == "-"


def detect_format(path, explicit: str | None, allowed: tuple[str, ...], option: str) -> str:
    if explicit:
        if explicit not in allowed:
            raise UsageError(f"{option} must be one of {', '.join(allowed)}")
        return explicit
    if is_stdio(path):
        raise UsageError(f"{option} is needed when the file is '-' (stdin/stdout)")
    suffixes = [s.lower() for s in Path(str(path)).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    fmt = _EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if fmt is None or fmt not in allowed:
        raise UsageError(f"cannot tell the format of {path} from its extension; pass {option} ({', '.join(allowed)})")
    return fmt


class _PrefixedStream(io.RawIOBase):
    """A non-seekable stream with bytes already read put back in front."""

    def __init__(self, head: bytes, rest):
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if len(self._head):
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _open_binary(path):
    if is_stdio(path):
        return sys.stdin.buffer
    if not Path(path).exists():
        raise InputError(f"input file {path} does not exist")
    if Path(path).is_dir():
        raise InputError(f"input {path} is a directory; give a file (directories need --engine ray)")
    return pa.input_stream(str(path), compression="detect")


def _csv_header(head: bytes, encoding: str, delimiter: str) -> list[str]:
    text = head.decode(encoding, errors="replace").lstrip("\ufeff")
    row = next(csv.reader(io.StringIO(text), delimiter=delimiter), None)
    if not row:
        raise InputError("the CSV file is empty: it has no header line")
    return row


@dataclass
class InputSource:
    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    total_rows: int | None
    bad_lines: list[str] = field(default_factory=list)  # raw text of CSV rows skipped with on_bad_lines="skip"


def _rechunk(batches: Iterator[pa.RecordBatch], schema: pa.Schema, chunk_size: int) -> Iterator[pa.RecordBatch]:
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        count += batch.num_rows
        while count >= chunk_size:
            table = pa.Table.from_batches(pending, schema=schema)
            head = table.slice(0, chunk_size).combine_chunks()
            yield head.to_batches()[0] if head.num_rows else pa.RecordBatch.from_pylist([], schema=schema)
            rest = table.slice(chunk_size)
            pending = rest.combine_chunks().to_batches() if rest.num_rows else []
            count -= chunk_size
    if count:
        yield pa.Table.from_batches(pending, schema=schema).combine_chunks().to_batches()[0]


def first_undecodable_line(path, encoding: str) -> int | None:
    """1-based number of the first line that does not decode, for the error
    message (pyarrow's own message names no line)."""
    if is_stdio(path):
        return None
    try:
        with pa.input_stream(str(path), compression="detect") as f:
            for number, line in enumerate(io.BufferedReader(f), start=1):
                try:
                    line.decode(encoding)
                except UnicodeDecodeError:
                    return number
    except (OSError, LookupError):
        return None
    return None


def _decode_hint(path, fmt: str, encoding: str, message: str) -> str:
    if fmt not in ("csv", "tsv") or not ("UTF8" in message or "decode" in message.lower() or "codec" in message):
        return ""
    line = first_undecodable_line(path, encoding)
    where = f" (line {line} is not valid {encoding})" if line else ""
    return f"{where}; if the file is not {encoding}, try --encoding gb18030"


def locate_lines(path, texts: list[str], encoding: str) -> list[int | None]:
    """1-based line numbers where each raw row text first starts in the file
    (pyarrow cannot number rows once quoted fields may hold newlines)."""
    found: list[int | None] = [None] * len(texts)
    if is_stdio(path) or not texts:
        return found
    wanted: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        wanted.setdefault(text.split("\n")[0].rstrip("\r"), []).append(i)
    try:
        with open(path, encoding=encoding, errors="replace", newline="") as f:
            for number, line in enumerate(f, start=1):
                key = line.rstrip("\r\n")
                if key in wanted:
                    for i in wanted.pop(key):
                        found[i] = number
                    if not wanted:
                        break
    except OSError:
        pass
    return found


_ROW_NUMBER = re.compile(r"Row #\d+: ")


def _ragged_hint(path, fmt: str, encoding: str, message: str) -> str:
    if fmt not in ("csv", "tsv") or "Expected" not in message or "columns, got" not in message:
        return ""
    line = locate_lines(path, [message.split(": ", 2)[-1]], encoding)[0]
    where = f" at line {line}" if line else ""
    return f"{where}; fix the row, or pass --on-bad-lines skip to skip such rows (they are listed in OUT.bad-lines.tsv)"


def _read_error(path, fmt: str, encoding: str, exc: Exception) -> InputError:
    # pyarrow's serial CSV parser (one CPU, as in a Ray worker) says "Row #N: ",
    # N counting parsed rows, not lines: drop it, so both parsers give one message.
    message = _ROW_NUMBER.sub("", str(exc), count=1)
    hint = _decode_hint(path, fmt, encoding, message) or _ragged_hint(path, fmt, encoding, message)
    return InputError(f"cannot read {path} as {fmt}: {message}{hint}")


def _wrap_read_errors(batches: Iterator[pa.RecordBatch], path, fmt: str, encoding: str) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError, OSError) as exc:
        raise _read_error(path, fmt, encoding, exc) from exc


def open_input(path, fmt: str, chunk_size: int, encoding: str = "utf-8", on_bad_lines: str = "error") -> InputSource:
    """Open a file (or '-' for stdin) and return its schema and a generator of
    record batches of exactly ``chunk_size`` rows (the last may be shorter).
    ``on_bad_lines="skip"`` drops CSV rows with the wrong number of fields
    and collects their text in ``bad_lines``."""
    if on_bad_lines not in ("error", "skip"):
        raise UsageError("--on-bad-lines must be error or skip")
    bad_lines: list[str] = []
    if fmt == "parquet":
        import pyarrow.parquet as pq

        if is_stdio(path):
            source = pa.BufferReader(sys.stdin.buffer.read())
        elif not Path(path).is_file():
            raise InputError(f"input file {path} does not exist")
        else:
            source = str(path)
        try:
            # Buffered, not pre-buffered: pages are read as the chunks need them, so
            # a file written as one huge row group (pandas, Spark) is not held whole.
            pf = pq.ParquetFile(source, buffer_size=1 << 20, pre_buffer=False)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"cannot read {path} as Parquet: {exc}") from exc
        batches = pf.iter_batches(batch_size=chunk_size)
        schema = pf.schema_arrow
        total = pf.metadata.num_rows
    elif fmt in ("csv", "tsv"):
        import pyarrow.csv as pacsv

        delimiter = "\t" if fmt == "tsv" else ","
        raw = _open_binary(path)
        head = raw.read(_HEAD_BYTES)
        if not head.strip(b"\xef\xbb\xbf \r\n\t"):
            raise InputError(f"{path} is empty: a CSV needs at least a header line")
        names = _csv_header(head, encoding, delimiter)
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise InputError(f"{path} has duplicate column names: {', '.join(dupes)}; rename them")
        stream = io.BufferedReader(_PrefixedStream(head, raw), buffer_size=_HEAD_BYTES)
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(encoding=encoding, block_size=_BLOCK_BYTES),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter, newlines_in_values=True,
                    invalid_row_handler=(lambda row: bad_lines.append(row.text) or "skip") if on_bad_lines == "skip" else None,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in names}, strings_can_be_null=False, quoted_strings_can_be_null=False
                ),
            )
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise _read_error(path, fmt, encoding, exc) from exc
        schema = reader.schema
        batches = iter(reader)
        total = None
    elif fmt == "jsonl":
        import pyarrow.json as pajson

        raw = _open_binary(path)
        try:
            reader = pajson.open_json(raw, read_options=pajson.ReadOptions(block_size=_BLOCK_BYTES))
        except pa.ArrowInvalid as exc:
            if "Empty JSON file" in str(exc):
                raise InputError(f"{path} is empty: no JSON lines to score") from exc
            raise InputError(f"cannot read {path} as JSON lines: {exc}") from exc
        schema = reader.schema
        batches = iter(reader)
        total = None
    else:  # pragma: no cover - detect_format guards this
        raise UsageError(f"unknown input format {fmt}")
    return InputSource(schema, _rechunk(_wrap_read_errors(batches, path, fmt, encoding), schema, chunk_size), total, bad_lines)


def read_table(path, fmt: str, columns: list[str] | None = None, encoding: str = "utf-8") -> pa.Table:
    """Read a whole file (training and evaluation data)."""
    source = open_input(path, fmt, chunk_size=1 << 20, encoding=encoding)
    batches = list(source.batches)
    table = pa.Table.from_batches(batches, schema=source.schema)
    if columns:
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise InputError(
                f"{path} has no column {', '.join(map(repr, missing))}; its columns are: {', '.join(table.column_names)}"
            )
        table = table.select(columns)
    return table


def source_groups(values) -> np.ndarray:
    """Each row's source group: the part of a ``source`` value before ':'
    (``online_shopping:手机`` → ``online_shopping``), '' where missing."""
    import pyarrow.compute as pc

    column = pc.cast(pa.array(values) if not isinstance(values, (pa.Array, pa.ChunkedArray)) else values, pa.string())
    head = pc.list_element(pc.split_pattern(column, ":", max_splits=1), 0)
    return pc.fill_null(head, "").to_numpy(zero_copy_only=False).astype(str)


# --- output ----------------------------------------------------------------


def temp_path_for(out: Path) -> Path:
    """Where a run writes OUT before renaming it into place: beside it, named
    by this process, so a crash never leaves a half output under OUT's name
    (a file for the local engine, a directory of parts for Ray)."""
    return out.with_name(f".{out.name}.sentiscore-{os.getpid()}.tmp")


def remove_stale_temp_files(out: Path) -> list[Path]:
    """Temp files or directories of earlier runs for OUT whose process is
    gone (a run killed with SIGKILL cannot clean up after itself)."""
    removed = []
    for path in out.parent.glob(f".{out.name}.sentiscore-*.tmp"):
        pid_text = path.name[len(f".{out.name}.sentiscore-") : -len(".tmp")]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # still running: another run's output
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def check_output_path(out, inp, overwrite: bool) -> None:
    """Fail before any work if OUT cannot or must not be written."""
    if is_stdio(out):
        return
    out = Path(out)
    if not out.parent.exists():
        raise OutputError(f"the folder {out.parent} does not exist; create it first")
    if out.is_dir():
        raise OutputError(f"{out} is a directory; give a file name")
    if not is_stdio(inp) and out.exists() and Path(inp).exists() and out.resolve() == Path(inp).resolve():
        raise OutputError("OUT is the same file as IN; write the results to another file")
    if out.exists() and not overwrite:
        raise OutputError(f"{out} already exists; pass --overwrite to replace it")
    if not os.access(out.parent, os.W_OK):
        raise OutputError(f"cannot write to the folder {out.parent} (permission denied)")


class _CountingStdout(io.RawIOBase):
    """stdout for writers that call tell()."""

    def __init__(self, target):
        self._target = target
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._target.write(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        self._target.flush()


def _lists_as_json(batch: pa.RecordBatch) -> pa.RecordBatch:
    """CSV cannot hold lists: write them as JSON arrays."""
    columns = []
    for col, column_field in zip(batch.columns, batch.schema):
        kind = column_field.type
        if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_struct(kind):
            col = pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in col.to_pylist()], pa.string())
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


class BatchWriter:
    """Writes record batches to OUT in the given format: into a temp file
    beside OUT, renamed over OUT by ``commit``; ``abort`` removes it. With
    OUT = '-', writes to stdout as it goes."""

    def __init__(self, out, fmt: str, schema: pa.Schema, metadata: dict[str, str] | None = None):
        self.fmt = fmt
        self.out = out
        self.metadata = metadata or {}
        self.schema = schema.with_metadata({**(schema.metadata or {}), **{k.encode(): v.encode() for k, v in self.metadata.items()}})
        if is_stdio(out):
            self.tmp = None
            self._sink = _CountingStdout(sys.stdout.buffer)
        else:
            remove_stale_temp_files(Path(out))
            self.tmp = temp_path_for(Path(out))
            try:
                self._sink = open(self.tmp, "wb")
            except OSError as exc:
                raise OutputError(f"cannot create {self.tmp}: {exc.strerror}") from exc
        self._writer = None
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        try:
            self._write(batch)
        except OSError as exc:
            raise OutputError(f"writing {self.out} failed: {exc.strerror or exc}") from exc
        self.rows += batch.num_rows

    def _write(self, batch: pa.RecordBatch) -> None:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            if self._writer is None:
                self._writer = pq.ParquetWriter(self._sink, self.schema, compression="zstd")
            self._writer.write_batch(batch)
        elif self.fmt in ("csv", "tsv"):
            import pyarrow.csv as pacsv

            batch = _lists_as_json(batch)
            if self._writer is None:
                options = pacsv.WriteOptions(delimiter="\t" if self.fmt == "tsv" else ",", include_header=True)
                self._writer = pacsv.CSVWriter(self._sink, batch.schema, write_options=options)
            self._writer.write_batch(batch)
        elif self.fmt == "jsonl":
            lines = [json.dumps(row, ensure_ascii=False, default=str) for row in batch.to_pylist()]
            if lines:
                self._sink.write(("\n".join(lines) + "\n").encode("utf-8"))
        else:  # pragma: no cover
            raise UsageError(f"unknown output format {self.fmt}")

    def commit(self) -> None:
        try:
            if self._writer is None and self.fmt != "jsonl":
                self._write(pa.RecordBatch.from_pylist([], schema=self.schema))  # zero rows: still a valid file
            if self._writer is not None:
                self._writer.close()
            self._sink.flush()
            if self.tmp is not None:
                os.fsync(self._sink.fileno())
                self._sink.close()
                os.replace(self.tmp, self.out)
        except OSError as exc:
            self.abort()
            raise OutputError(f"writing {self.out} failed: {exc.strerror or exc}") from exc

    def abort(self) -> None:
        if self.tmp is None:
            return
        writer, self._writer = self._writer, None
        for closer in (writer.close if writer is not None else None, self._sink.close):
            try:
                if closer is not None:
                    closer()
            except Exception:  # already failing: removing the temp file is what matters
                pass
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass


# --- sinks: where scored chunks go -----------------------------------------


class FileSink:
    """All chunks into one file (or stdout), renamed into place at the end."""

    def __init__(self, out, fmt: str, metadata: dict[str, str]):
        self.out, self.fmt, self.metadata = out, fmt, metadata
        self._writer: BatchWriter | None = None

    @property
    def rows(self) -> int:
        return self._writer.rows if self._writer is not None else 0

    def is_done(self, index: int) -> bool:
        return False

    def write(self, index: int, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self._writer = BatchWriter(self.out, self.fmt, batch.schema, self.metadata)
        self._writer.write(batch)

    def finish(self, empty_schema) -> None:
        if self._writer is None:  # no rows at all: still a valid, empty file
            self._writer = BatchWriter(self.out, self.fmt, empty_schema(), self.metadata)
        self._writer.commit()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


RESUME_MANIFEST = "_sentiscore_run.json"
SUCCESS_MARKER = "_SUCCESS"


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(path) -> dict:
    return {"path": str(Path(path).resolve()), "size": Path(path).stat().st_size, "sha256": sha256_of(path)}


def _run_difference(recorded: dict, run: dict) -> str:
    """What differs between a ``--resume`` directory's run and this one, with
    the scorer's settings spelled out (they come from flags a rerun may have
    dropped: --runtime, --no-cascade, --elmo-precision, --device)."""
    changed = sorted(k for k in set(run) | set(recorded) if run.get(k) != recorded.get(k))
    text = f"{', '.join(changed)} differ"
    if "scoring" in changed:
        before, now = recorded.get("scoring"), run.get("scoring") or {}
        if before is None:
            return text + "; its parts were written by a sentiscore that did not record its scoring settings"
        details = [f"{key}: {before.get(key, '-')} -> {now.get(key, '-')}" for key in sorted(set(before) | set(now))
                   if before.get(key) != now.get(key)]
        text += f"; {'; '.join(details)}"
    return text


class PartsSink:
    """One Parquet part file per chunk in a directory, for ``--resume``: each
    part is written to a temp file and renamed, so a part that exists is
    whole; a rerun with the same input, model and options skips those chunks.
    ``_sentiscore_run.json`` records what the parts were made from."""

    def __init__(self, directory, run: dict, metadata: dict[str, str]):
        self.directory = Path(directory)
        self.metadata = metadata
        manifest = self.directory / RESUME_MANIFEST
        if self.directory.exists() and not self.directory.is_dir():
            raise OutputError(f"--resume writes a directory of parts, but {directory} is a file")
        self.directory.mkdir(exist_ok=True)
        if manifest.is_file():
            recorded = json.loads(manifest.read_text(encoding="utf-8"))
            if recorded.get("run") != run:
                raise OutputError(f"{directory} holds parts of another run ({_run_difference(recorded.get('run', {}), run)}); "
                                  "remove it or write to another directory")
        elif any(self.directory.iterdir()):
            raise OutputError(f"{directory} is not empty and holds no sentiscore run; give an empty or new directory")
        else:
            manifest.write_text(json.dumps({"run": run}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (self.directory / SUCCESS_MARKER).unlink(missing_ok=True)
        self.done = {int(p.name[5:10]) for p in self.directory.glob("part-[0-9][0-9][0-9][0-9][0-9].parquet")}
        self.rows = 0

    def part(self, index: int) -> Path:
        return self.directory / f"part-{index:05d}.parquet"

    def is_done(self, index: int) -> bool:
        return index in self.done

    def read_done(self, index: int, columns: list[str]) -> pa.Table:
        import pyarrow.parquet as pq

        table = pq.read_table(self.part(index), columns=columns)
        self.rows += table.num_rows
        return table

    def write(self, index: int, batch: pa.RecordBatch) -> None:
        writer = BatchWriter(self.part(index), "parquet", batch.schema, self.metadata)
        try:
            writer.write(batch)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        self.rows += batch.num_rows

    def finish(self, empty_schema) -> None:
        if not any(self.directory.glob("part-*.parquet")):  # no rows at all: still one valid, empty part
            self.write(0, pa.RecordBatch.from_pylist([], schema=empty_schema()))
        (self.directory / SUCCESS_MARKER).write_text("", encoding="utf-8")

    def abort(self) -> None:
        pass  # finished parts stay: they are what --resume resumes from
