"""--engine ray keeps input order by its own row numbers, not by Ray's
preserve_order: blocks handed to the scoring actors in a shuffled order (as
Ray 2.60.0 was seen to do before the Parquet writer) give the same output,
row for row, as the local engine; the driver refuses parts that do not
cover every row exactly once."""

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentiscore.config import ScoreConfig
from sentiscore.errors import WorkerError
from sentiscore.pipeline import score_file

ray = pytest.importorskip("ray")

from sentiscore import ray_engine  # noqa: E402
from sentiscore.ray_engine import (  # noqa: E402
    END_COLUMN,
    FILE_COLUMN,
    ROW_COLUMN,
    RayOptions,
    check_parts,
    score_with_ray,
    write_parts,
)

FLOATS = ("confidence", "prob_负评", "prob_中评", "prob_正评")


@pytest.fixture(scope="module")
def three_files(sample_dir, tmp_path_factory):
    """The 300 sample reviews as three Parquet files of 90, 110 and 100 rows."""
    table = pq.read_table(sample_dir / "reviews.parquet")
    inp = tmp_path_factory.mktemp("in")
    for name, start, stop in (("a.parquet", 0, 90), ("b.parquet", 90, 200), ("c.parquet", 200, 300)):
        pq.write_table(table.slice(start, stop - start), inp / name)
    return inp


@pytest.fixture(scope="module")
def local_output(tiny_model, three_files, tmp_path_factory):
    """The local engine's output for each file, concatenated in file order."""
    out = tmp_path_factory.mktemp("local")
    tables = []
    for path in sorted(three_files.iterdir()):
        score_file(path, out / path.name, model=tiny_model, config=ScoreConfig(workers=1, chunk_size=16))
        tables.append(pq.read_table(out / path.name))
    return pa.concat_tables(tables)


def read_parts(out):
    parts = sorted(out.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts]), [p.name for p in parts]


def assert_same_rows(ray_table, local_table):
    """Row for row: every column equal (floats to 1e-6, as batch shapes differ)."""
    assert ray_table.column_names == local_table.column_names
    assert ray_table.num_rows == local_table.num_rows
    for name in ray_table.column_names:
        if name in FLOATS:
            np.testing.assert_allclose(ray_table.column(name).to_numpy(), local_table.column(name).to_numpy(), atol=1e-6)
        else:
            assert ray_table.column(name).to_pylist() == local_table.column(name).to_pylist(), name


def _blocks_permuted(ray_, dataset):
    """Blocks of 16 rows, each whole, in a random order (Ray's bug as seen
    with 2.60.0). Ray merges a task's small outputs into one block, so the
    blocks are cut here; randomize_block_order would not do either: Ray's
    optimizer moves it after the map stages."""
    tables = [ray_.get(ref) for ref in dataset.to_arrow_refs()]
    blocks = [table.slice(start, 16) for table in tables for start in range(0, table.num_rows, 16)]
    random.Random(5).shuffle(blocks)
    return ray_.data.from_arrow(blocks)


def _rows_shuffled(ray_, dataset):
    """Worse than the bug: every row in a random block, at a random place."""
    return dataset.random_shuffle(seed=5)


@pytest.mark.parametrize("disorder", [_blocks_permuted, _rows_shuffled])
def test_blocks_out_of_order_give_the_local_engines_rows(disorder, local_ray, tiny_model, three_files, local_output,
                                                        tmp_path, monkeypatch):
    """Ray's order bug, forced: the segmented rows reach the scoring actor
    (which writes the parts) out of order. The output does not change."""
    segmented = ray_engine._segmented
    monkeypatch.setattr(ray_engine, "_segmented", lambda ray_, plan: disorder(ray_, segmented(ray_, plan)))
    arrived = []
    check = ray_engine.check_parts

    def spy(reports, plan, expected_rows):
        arrived.extend(zip(reports.column("file").to_pylist(), reports.column("first_row").to_pylist()))
        return check(reports, plan, expected_rows)

    monkeypatch.setattr(ray_engine, "check_parts", spy)
    out = tmp_path / "scored"
    summary = score_with_ray(three_files, out, model=tiny_model, config=ScoreConfig(chunk_size=16),
                             options=RayOptions(num_workers=1))
    assert len(arrived) >= 19 and arrived != sorted(arrived)  # the parts really came back out of order
    assert summary.rows == 300
    table, names = read_parts(out)
    assert_same_rows(table, local_output)
    # Parts are named by their first row: file index and row index within it.
    assert names[0] == "part-00000-0000000000.parquet" and len(names) == len(arrived)
    assert {n.split("-")[1] for n in names} == {"00000", "00001", "00002"}
    assert not list(out.glob(".*")) and not any(c.startswith("__sentiscore") for c in table.column_names)


def test_csv_directory_with_uneven_files_in_order(local_ray, tiny_model, sample_dir, tmp_path):
    """Blocks of several files (chunks do not line up with file ends) and an
    empty file: the parts still concatenate to the local engine's rows."""
    lines = (sample_dir / "reviews.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    inp = tmp_path / "in"
    inp.mkdir()
    cuts = [0, 7, 7, 130, 131, 300]  # b.csv holds only the header
    for i, (start, stop) in enumerate(zip(cuts[:-1], cuts[1:])):
        (inp / f"{'abcde'[i]}.csv").write_text(header + "".join(rows[start:stop]), encoding="utf-8")
    local = pa.concat_tables([_local(tiny_model, p, tmp_path) for p in sorted(inp.iterdir())])
    out = tmp_path / "scored"
    summary = score_with_ray(inp, out, model=tiny_model, config=ScoreConfig(chunk_size=25), options=RayOptions(num_workers=1))
    assert summary.rows == 300
    table, names = read_parts(out)
    assert_same_rows(table, local)
    assert not any(n.startswith("part-00001-") for n in names)  # the empty file has no part


def _local(model, path, tmp_path):
    out = tmp_path / f"local-{path.stem}.parquet"
    score_file(path, out, model=model, config=ScoreConfig(workers=1, chunk_size=25))
    return pq.read_table(out)


# --- the parts, without a cluster -----------------------------------------------


def _plan(files, tmp_path):
    return ray_engine._Plan(model_candidates=(), model_hash="", text_column="txt", keep=("id", "txt"), prefix="",
                            batch_size=None, top_k=3, files=tuple(files), parts_dir=str(tmp_path))


def test_write_parts_sorts_a_block_and_splits_it_into_runs(tmp_path):
    # A block as Ray might hand it over: rows of two files, shuffled, with a gap
    # (rows 3-4 of file 1 are in another block) and file 1's last row.
    numbers = [(1, 6), (0, 2), (1, 0), (1, 5), (0, 1), (1, 1), (1, 2), (0, 3)]
    block = pa.table({
        "id": [f"{f}:{r}" for f, r in numbers],
        FILE_COLUMN: pa.array([f for f, _ in numbers], pa.int32()),
        ROW_COLUMN: pa.array([r for _, r in numbers], pa.int64()),
        END_COLUMN: [(f, r) == (1, 6) for f, r in numbers],
    })
    plan = _plan([f"/in/{i}.csv" for i in range(12)], tmp_path)
    report = write_parts(block, plan, {b"sentiscore.model": b"tiny"})
    assert report.to_pylist() == [
        {"file": 0, "first_row": 1, "rows": 3, "end": False, "written": report["written"][0].as_py()},
        {"file": 1, "first_row": 0, "rows": 3, "end": False, "written": report["written"][1].as_py()},
        {"file": 1, "first_row": 5, "rows": 2, "end": True, "written": report["written"][2].as_py()},
    ]
    for row in report.to_pylist():
        part = pq.read_table(tmp_path / row["written"])
        assert part.column_names == ["id"] and part.schema.metadata == {b"sentiscore.model": b"tiny"}
        assert part["id"].to_pylist() == [f"{row['file']}:{r}" for r in range(row["first_row"], row["first_row"] + row["rows"])]
        assert row["written"].startswith(f".part-{row['file']:05d}-{row['first_row']:010d}.")
    assert ray_engine.part_name(plan, 11, 12345) == "part-00011-0000012345.parquet"
    assert ray_engine.part_name(_plan([f"/in/{i}" for i in range(123_456)], tmp_path), 7, 0) == "part-000007-0000000000.parquet"


def _reports(*parts):
    names = ["file", "first_row", "rows", "end", "written"]
    return pa.Table.from_pylist([dict(zip(names, (*p, f"w{i}"))) for i, p in enumerate(parts)],
                                schema=ray_engine.REPORT_SCHEMA)


def test_check_parts_puts_parts_in_input_order(tmp_path):
    plan = _plan(["/in/a.csv", "/in/b.csv", "/in/c.csv"], tmp_path)
    # Out of order, as they may come back; b.csv is empty.
    reports = _reports((2, 40, 5, True, ), (0, 10, 10, True), (2, 0, 40, False), (0, 0, 10, False))
    assert check_parts(reports, plan, [None, None, None]) == [
        ("w3", "part-00000-0000000000.parquet"), ("w1", "part-00000-0000000010.parquet"),
        ("w2", "part-00002-0000000000.parquet"), ("w0", "part-00002-0000000040.parquet"),
    ]


@pytest.mark.parametrize("parts,expected_rows,message", [
    ([(0, 0, 10, False), (0, 20, 5, True)], [None], r"rows 11-20 of /in/a.csv came back from the Ray workers not at all"),
    ([(0, 0, 10, False), (0, 5, 10, True)], [None], r"rows 6-10 of /in/a.csv came back from the Ray workers twice"),
    ([(0, 0, 10, False), (0, 0, 10, False), (0, 10, 1, True)], [None], r"rows 1-10 of /in/a.csv came back .* twice"),
    ([(0, 0, 10, False)], [None], r"only rows 1-10 of /in/a.csv \(of its end\) came back"),
    ([(0, 0, 10, True)], [12], r"only rows 1-10 of /in/a.csv \(of 12\) came back"),
    ([], [12], r"no rows of /in/a.csv \(of 12\) came back"),
    ([(0, 0, 10, True), (0, 10, 2, True)], [None], r"rows 11-12 of /in/a.csv came back .* after the reader's last row"),
    ([(3, 0, 1, True)], [None], r"rows of unknown input files \[3\]"),
])
def test_check_parts_refuses_missing_or_repeated_rows(parts, expected_rows, message, tmp_path):
    with pytest.raises(WorkerError, match=message):
        check_parts(_reports(*parts), _plan(["/in/a.csv"], tmp_path), expected_rows)
