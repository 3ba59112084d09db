import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentiscore.errors import InputError, OutputError, UsageError
from sentiscore.io import BatchWriter, check_output_path, detect_format, open_input, read_table, INPUT_FORMATS, OUTPUT_FORMATS


@pytest.mark.parametrize("name,fmt", [("a.csv", "csv"), ("a.TSV", "tsv"), ("a.parquet", "parquet"), ("a.jsonl", "jsonl"),
                                      ("a.csv.gz", "csv"), ("x/y.ndjson", "jsonl")])
def test_format_from_extension(name, fmt):
    assert detect_format(name, None, INPUT_FORMATS, "--input-format") == fmt


def test_stdin_needs_an_explicit_format():
    with pytest.raises(UsageError, match="--input-format is needed when the file is '-'"):
        detect_format("-", None, INPUT_FORMATS, "--input-format")


def test_unknown_extension_asks_for_the_option():
    with pytest.raises(UsageError, match=r"pass --output-format"):
        detect_format("out.xlsx", None, OUTPUT_FORMATS, "--output-format")


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_every_sample_format_reads_the_same_rows(sample_dir, ext):
    table = read_table(sample_dir / f"reviews.{ext}", ext)
    assert table.num_rows == 300
    assert table.column("id").to_pylist()[:3] == read_table(sample_dir / "reviews.csv", "csv").column("id").to_pylist()[:3]


@pytest.mark.parametrize("chunk", [1, 7, 299, 300, 1000])
def test_chunks_have_exactly_chunk_size_rows(sample_dir, chunk):
    sizes = [b.num_rows for b in open_input(sample_dir / "reviews.csv", "csv", chunk).batches]
    assert sum(sizes) == 300
    assert all(s == chunk for s in sizes[:-1]) and 0 < sizes[-1] <= chunk


def test_csv_columns_pass_through_as_text(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("id,txt,score\n007,好,1.50\n010,差,2\n", encoding="utf-8")
    table = read_table(path, "csv")
    assert table.column("id").to_pylist() == ["007", "010"]
    assert table.column("score").to_pylist() == ["1.50", "2"]


def test_bom_crlf_and_quoted_newlines(tmp_path):
    path = tmp_path / "win.csv"
    path.write_bytes('\ufeffid,txt\r\n1,"第一行\n第二行"\r\n2,好\r\n'.encode("utf-8"))
    table = read_table(path, "csv")
    assert table.column_names == ["id", "txt"]
    assert table.column("txt").to_pylist() == ["第一行\n第二行", "好"]


def test_gb18030_needs_encoding_and_works_with_it(tmp_path):
    path = tmp_path / "gbk.csv"
    path.write_bytes("id,txt\n1,质量很好\n".encode("gb18030"))
    with pytest.raises(InputError, match="try --encoding gb18030"):
        read_table(path, "csv")
    assert read_table(path, "csv", encoding="gb18030").column("txt").to_pylist() == ["质量很好"]


def test_empty_csv_is_an_input_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(InputError, match="is empty"):
        open_input(path, "csv", 10)


def test_duplicate_column_names_are_refused(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("txt,txt\n好,差\n", encoding="utf-8")
    with pytest.raises(InputError, match="duplicate column names: txt"):
        open_input(path, "csv", 10)


def test_corrupt_parquet_is_an_input_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match="cannot read .* as Parquet"):
        open_input(path, "parquet", 10)


def test_missing_input_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_input(tmp_path / "none.csv", "csv", 10)


def test_output_checks(tmp_path):
    existing = tmp_path / "out.parquet"
    existing.write_bytes(b"x")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        check_output_path(existing, tmp_path / "in.csv", overwrite=False)
    check_output_path(existing, tmp_path / "in.csv", overwrite=True)
    with pytest.raises(OutputError, match="does not exist; create it first"):
        check_output_path(tmp_path / "missing" / "out.parquet", tmp_path / "in.csv", overwrite=False)
    with pytest.raises(OutputError, match="same file as IN"):
        check_output_path(existing, existing, overwrite=True)


def test_writer_renames_only_on_commit_and_abort_leaves_nothing(tmp_path):
    out = tmp_path / "out.parquet"
    batch = pa.RecordBatch.from_pydict({"a": [1, 2]})
    writer = BatchWriter(out, "parquet", batch.schema, {"sentiscore.model": "m"})
    writer.write(batch)
    assert not out.exists() and writer.tmp.exists()
    writer.commit()
    assert pq.read_table(out).num_rows == 2
    assert pq.read_schema(out).metadata[b"sentiscore.model"] == b"m"
    assert not writer.tmp.exists()

    second = BatchWriter(tmp_path / "other.parquet", "parquet", batch.schema)
    second.write(batch)
    second.abort()
    assert not (tmp_path / "other.parquet").exists() and os.listdir(tmp_path) == ["out.parquet"]


def test_csv_writer_writes_lists_as_json(tmp_path):
    out = tmp_path / "out.csv"
    batch = pa.RecordBatch.from_pydict({"words": pa.array([["好", "差"], []], pa.list_(pa.string()))})
    writer = BatchWriter(out, "csv", batch.schema)
    writer.write(batch)
    writer.commit()
    assert out.read_text(encoding="utf-8").splitlines() == ['"words"', '"[""好"", ""差""]"', '"[]"']


def test_undecodable_line_is_named(tmp_path):
    path = tmp_path / "mixed.csv"
    good = "".join(f"{i},好评{i}\n" for i in range(5000)).encode("utf-8")
    path.write_bytes(b"id,txt\n" + good + "5001,差评\n".encode("gb18030"))
    with pytest.raises(InputError, match=r"line 5002 is not valid utf-8\); if the file is not utf-8, try --encoding gb18030"):
        read_table(path, "csv")


def test_truncated_parquet_is_an_input_error(tmp_path, sample_dir):
    data = (sample_dir / "reviews.parquet").read_bytes()
    path = tmp_path / "cut.parquet"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="as Parquet"):
        open_input(path, "parquet", 10)


def test_a_parquet_file_of_one_huge_row_group_is_read_a_chunk_at_a_time(tmp_path):
    """pandas and Spark write one row group of up to a million rows; reading
    a chunk must not hold that whole group in memory."""
    import numpy as np

    rng = np.random.default_rng(0)
    words = np.array(["很好", "质量", "一般", "物流", "太慢了", "满意", "不推荐", "还行"])
    texts = ["".join(rng.choice(words, 12)) + str(i) for i in range(120_000)]  # distinct, ~9 MB of text
    path = tmp_path / "one-group.parquet"
    pq.write_table(pa.table({"txt": texts}), path, row_group_size=len(texts), compression="none", use_dictionary=False)
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    before = pa.total_allocated_bytes()
    source = open_input(path, "parquet", 1000)
    first = next(iter(source.batches))
    held = pa.total_allocated_bytes() - before
    assert first.num_rows == 1000
    group = pq.ParquetFile(path).metadata.row_group(0).total_byte_size
    assert held < group / 3, f"{held:,} bytes held for a 1,000-row chunk of a {group:,}-byte row group"


def test_ragged_row_is_located_when_pyarrow_parses_serially(tmp_path):
    """With one CPU (a Ray worker) pyarrow prefixes "Row #N: " to the row
    text; the error is the parallel parser's, naming the file's line."""
    import pyarrow as pa

    from sentiscore.errors import InputError
    from sentiscore.io import open_input

    path = tmp_path / "ragged.csv"
    path.write_text('id,txt\n1,好\n2,"多行\n文本"\n3,差,多余\n4,一般\n', encoding="utf-8")
    before = pa.cpu_count()
    pa.set_cpu_count(1)
    try:
        with pytest.raises(InputError, match="CSV parse error: Expected 2 columns, got 3: 3,差,多余 at line 5; fix the row"):
            list(open_input(path, "csv", 100).batches)
    finally:
        pa.set_cpu_count(before)


def test_source_groups_take_the_part_before_the_colon():
    import pyarrow as pa

    from sentiscore.io import source_groups

    assert source_groups(["online_shopping:手机", "weibo", None, "a:b:c"]).tolist() == ["online_shopping", "weibo", "", "a"]
    assert source_groups(pa.array([7, None])).tolist() == ["7", ""]  # a numeric column reads as text
