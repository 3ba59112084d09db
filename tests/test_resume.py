"""--resume: a directory of part files that a rerun completes."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from sentiscore.config import ScoreConfig
from sentiscore.errors import OutputError, UsageError
from sentiscore.pipeline import score_file


def read_parts(directory):
    parts = sorted(directory.glob("part-*.parquet"))
    return pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)


def test_resume_writes_numbered_parts_and_a_success_marker(tiny_scorer, sample_dir, tmp_path):
    out = tmp_path / "scored"
    summary = score_file(sample_dir / "reviews.csv", out, config=ScoreConfig(chunk_size=100, resume=True), scorer=tiny_scorer)
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "_sentiscore_run.json", "part-00000.parquet",
                                                     "part-00001.parquet", "part-00002.parquet"]
    assert summary.rows == 300
    whole = tmp_path / "whole.parquet"
    score_file(sample_dir / "reviews.csv", whole, config=ScoreConfig(chunk_size=100), scorer=tiny_scorer)
    pd.testing.assert_frame_equal(read_parts(out), pq.read_table(whole).to_pandas())
    run = json.loads((out / "_sentiscore_run.json").read_text())["run"]
    assert run["model_hash"] == tiny_scorer.loaded.hash and len(run["input"]["sha256"]) == 64


def test_rerun_after_a_crash_skips_finished_parts_and_matches(tiny_scorer, sample_dir, tmp_path, monkeypatch):
    from sentiscore import io as sio

    out = tmp_path / "scored"
    config = ScoreConfig(chunk_size=50, resume=True)
    real_write = sio.PartsSink.write

    def crash_at_chunk_4(self, index, batch):
        if index == 3:
            raise KeyboardInterrupt  # as if killed here
        return real_write(self, index, batch)

    monkeypatch.setattr(sio.PartsSink, "write", crash_at_chunk_4)
    with pytest.raises(KeyboardInterrupt):
        score_file(sample_dir / "reviews.parquet", out, config=config, scorer=tiny_scorer)
    monkeypatch.setattr(sio.PartsSink, "write", real_write)
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert sorted(done) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert not (out / "_SUCCESS").exists()

    written = []
    monkeypatch.setattr(sio.PartsSink, "write", lambda self, i, b: (written.append(i), real_write(self, i, b)))
    summary = score_file(sample_dir / "reviews.parquet", out, config=config, scorer=tiny_scorer)
    assert written == [3, 4, 5]
    assert summary.rows == 300 and (out / "_SUCCESS").exists()
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-0000[012].parquet")} == done
    whole = tmp_path / "whole.parquet"
    score_file(sample_dir / "reviews.parquet", whole, config=ScoreConfig(chunk_size=50), scorer=tiny_scorer)
    pd.testing.assert_frame_equal(read_parts(out), pq.read_table(whole).to_pandas())


def test_resume_refuses_parts_of_another_run(tiny_scorer, sample_dir, tmp_path):
    out = tmp_path / "scored"
    score_file(sample_dir / "reviews.csv", out, config=ScoreConfig(chunk_size=100, resume=True), scorer=tiny_scorer)
    with pytest.raises(OutputError, match=r"holds parts of another run \(options differ\)"):
        score_file(sample_dir / "reviews.csv", out, config=ScoreConfig(chunk_size=60, resume=True), scorer=tiny_scorer)
    with pytest.raises(OutputError, match=r"holds parts of another run \(input, options differ\)"):
        score_file(sample_dir / "reviews.parquet", out, config=ScoreConfig(chunk_size=100, resume=True), scorer=tiny_scorer)


def test_resume_refuses_a_foreign_directory_and_stdin(tiny_scorer, sample_dir, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError, match="is not empty and holds no sentiscore run"):
        score_file(sample_dir / "reviews.csv", tmp_path, config=ScoreConfig(resume=True), scorer=tiny_scorer)
    with pytest.raises(UsageError, match="--resume needs a real input file"):
        score_file("-", tmp_path / "x", config=ScoreConfig(resume=True, input_format="csv"), scorer=tiny_scorer)


def test_resume_refuses_a_rerun_scored_another_way_but_not_another_batch_size(tiny_model, sample_dir, tmp_path):
    """The flags that change how rows are scored (--runtime, --no-cascade)
    are part of the run; --batch-size is not, so a run that ran out of
    memory can resume with smaller batches."""
    src, out = sample_dir / "reviews.csv", tmp_path / "scored"
    first = score_file(src, out, model=tiny_model, config=ScoreConfig(chunk_size=100, resume=True, workers=1, runtime="onnx"))
    scoring = json.loads((out / "_sentiscore_run.json").read_text())["run"]["scoring"]
    assert scoring["runtime"].startswith("onnxruntime ") and scoring["cascade"].startswith("n-gram >= ")
    assert first.provenance["sentiscore.cascade"] == scoring["cascade"] and " cascade n-gram >= " in first.line()
    (out / "part-00002.parquet").unlink()  # as if the run had stopped there

    with pytest.raises(OutputError, match=r"\(scoring differ; runtime: onnxruntime \S+ -> tensorflow "):
        score_file(src, out, model=tiny_model, config=ScoreConfig(chunk_size=100, resume=True, workers=1, runtime="tensorflow"))
    with pytest.raises(OutputError, match=r"\(scoring differ; cascade: n-gram >= [0-9.]+ -> off\)"):
        score_file(src, out, model=tiny_model, config=ScoreConfig(chunk_size=100, resume=True, workers=1, runtime="onnx", cascade=False))
    assert not (out / "part-00002.parquet").exists()

    summary = score_file(src, out, model=tiny_model, config=ScoreConfig(chunk_size=100, resume=True, workers=1, runtime="onnx", batch_size=7))
    assert summary.rows == 300 and (out / "_SUCCESS").exists()


def test_resume_says_when_the_parts_come_from_a_version_that_did_not_record_scoring(tiny_scorer, sample_dir, tmp_path):
    out = tmp_path / "scored"
    config = ScoreConfig(chunk_size=100, resume=True)
    score_file(sample_dir / "reviews.csv", out, config=config, scorer=tiny_scorer)
    manifest = out / "_sentiscore_run.json"
    recorded = json.loads(manifest.read_text())
    del recorded["run"]["scoring"]
    manifest.write_text(json.dumps(recorded))
    with pytest.raises(OutputError, match="scoring differ; its parts were written by a sentiscore that did not record"):
        score_file(sample_dir / "reviews.csv", out, config=config, scorer=tiny_scorer)


def test_a_matched_priors_run_resumes_with_the_priors_it_fitted(tiny_scorer, sample_dir, tmp_path):
    """--priors-mode match fits its priors on the file's sample before any
    part is written; a rerun fits the same ones, so it resumes, and the
    parts equal an uninterrupted run's. Reweighting by the same shares is
    another run."""
    src, out = sample_dir / "reviews.csv", tmp_path / "scored"
    shares = (("-1", 0.3), ("0", 0.3), ("1", 0.4))
    matched = ScoreConfig(chunk_size=100, resume=True, priors=shares, priors_mode="match")
    score_file(src, out, config=matched, scorer=tiny_scorer)
    run = json.loads((out / "_sentiscore_run.json").read_text())["run"]
    assert run["options"]["priors_mode"] == "match"
    whole = read_parts(out)
    (out / "part-00002.parquet").unlink()  # as if the run had stopped there
    (out / "_SUCCESS").unlink()
    with pytest.raises(OutputError, match=r"holds parts of another run \(options differ\)"):
        score_file(src, out, config=ScoreConfig(chunk_size=100, resume=True, priors=shares), scorer=tiny_scorer)
    summary = score_file(src, out, config=matched, scorer=tiny_scorer)
    assert summary.rows == 300 and (out / "_SUCCESS").exists()
    pd.testing.assert_frame_equal(read_parts(out), whole)
