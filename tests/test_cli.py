"""CLI tests with click's CliRunner: help texts, exit codes and the exact
messages users see."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sentiscore import __version__
from sentiscore.artifacts import read_card
from sentiscore.cli import cli
from tests.conftest import SAMPLE as ROOT_SAMPLE


@pytest.fixture
def runner():
    return CliRunner()


@pytest.mark.parametrize("command,phrase", [
    ([], "Batch sentiment scoring for Chinese text"),
    (["score"], "Score IN (CSV/TSV/Parquet/JSONL, or '-' for stdin)"),
    (["train"], "Train a model on DATA"),
    (["evaluate"], "Measure a model on labelled DATA"),
    (["info"], "Show a model's card"),
    (["explain"], "Show why the model chose a label"),
])
def test_every_command_has_help(runner, command, phrase):
    result = runner.invoke(cli, command + ["--help"])
    assert result.exit_code == 0
    assert phrase in " ".join(result.output.split())


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_help_does_not_import_heavy_frameworks():
    code = ("import sys; from sentiscore.cli import cli; heavy = {'tensorflow', 'keras', 'torch', 'elmoformanylangs', 'ray'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_score_writes_output_and_summary(runner, tiny_model, sample_dir, tmp_path):
    out = tmp_path / "out.parquet"
    result = runner.invoke(cli, ["score", str(sample_dir / "reviews.csv"), str(out), "--model", str(tiny_model), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).num_rows == 300
    assert "sentiscore: 300 rows in" in result.stderr and "model tiny@" in result.stderr


def test_score_quiet_prints_nothing(runner, tiny_model, sample_dir, tmp_path):
    result = runner.invoke(cli, ["score", str(sample_dir / "reviews.csv"), str(tmp_path / "o.csv"), "-m", str(tiny_model), "--quiet", "--workers", "1"])
    assert result.exit_code == 0 and result.stderr == "" and result.stdout == ""


def test_existing_output_needs_overwrite(runner, tiny_model, sample_dir, tmp_path):
    out = tmp_path / "o.parquet"
    out.write_bytes(b"old")
    args = ["score", str(sample_dir / "reviews.csv"), str(out), "-m", str(tiny_model), "--workers", "1"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2
    assert f"Error: {out} already exists; pass --overwrite to replace it" in result.stderr
    assert out.read_bytes() == b"old"
    assert runner.invoke(cli, args + ["--overwrite"]).exit_code == 0


def test_missing_text_column_exit_code_and_message(runner, tiny_model, sample_dir, tmp_path):
    result = runner.invoke(cli, ["score", str(sample_dir / "reviews.csv"), str(tmp_path / "o.parquet"), "-m", str(tiny_model), "--text-column", "content"])
    assert result.exit_code == 2
    assert "Error: no text column 'content' in" in result.stderr
    assert "its columns are: id, txt, source. Pick one with --text-column" in result.stderr


def test_bad_model_path(runner, sample_dir, tmp_path):
    result = runner.invoke(cli, ["score", str(sample_dir / "reviews.csv"), str(tmp_path / "o.parquet"), "-m", str(tmp_path)])
    assert result.exit_code == 2
    assert f"Error: {tmp_path} is not a sentiscore model: meta.json is missing" in result.stderr


def test_stdout_needs_output_format(runner, tiny_model, sample_dir):
    result = runner.invoke(cli, ["score", str(sample_dir / "reviews.csv"), "-", "-m", str(tiny_model)])
    assert result.exit_code == 2
    assert "Error: --output-format is needed when the file is '-' (stdin/stdout)" in result.stderr


def test_stdin_to_stdout_in_a_shell_pipeline(tiny_model, sample_dir):
    """A real pipeline: CSV on stdin, JSONL on stdout."""
    data = (sample_dir / "reviews.csv").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "sentiscore", "score", "-", "-", "--input-format", "csv", "--output-format", "jsonl",
         "-m", str(tiny_model), "--workers", "1"],
        input=data, capture_output=True, check=True,
    )
    rows = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    assert len(rows) == 300 and rows[0]["id"] == "r04318"
    assert {"label", "confidence", "top_words", "status"} <= set(rows[0])
    assert b"sentiscore: 300 rows" in proc.stderr


def test_stdin_parquet_to_stdout_parquet(tiny_model, sample_dir, tmp_path):
    data = (sample_dir / "reviews.parquet").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "sentiscore", "score", "-", "-", "--input-format", "parquet", "--output-format", "parquet",
         "-m", str(tiny_model), "--workers", "1", "--quiet"],
        input=data, capture_output=True, check=True,
    )
    out = tmp_path / "piped.parquet"
    out.write_bytes(proc.stdout)
    assert pq.read_table(out).num_rows == 300


def test_train_and_evaluate_commands(runner, sample_dir, tmp_path):
    model = tmp_path / "cli-model"
    result = runner.invoke(cli, ["train", str(sample_dir / "labelled.csv"), "--out", str(model), "--epochs", "1",
                                 "--maxlen", "32", "--embed-dim", "8", "--lstm-units", "4", "--min-count", "1",
                                 "--vectors", "none", "--workers", "1", "--quiet", "--labels", "-1=负评,0=中评,1=正评"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {model}: validation accuracy")
    report = tmp_path / "m.json"
    result = runner.invoke(cli, ["evaluate", str(sample_dir / "labelled.csv"), "-m", str(model), "--json", str(report), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "macro-F1" in result.stdout and "confusion matrix" in result.stdout
    metrics = json.loads(report.read_text())
    assert metrics["rows"] == 600 and 0 <= metrics["macro_f1"] <= 1


def test_train_rejects_bad_labels_spec(runner, sample_dir, tmp_path):
    result = runner.invoke(cli, ["train", str(sample_dir / "labelled.csv"), "--out", str(tmp_path / "m"), "--labels", "1正评"])
    assert result.exit_code == 2
    assert "Error: --labels: cannot read '1正评'; write VALUE=NAME pairs" in result.stderr


def test_info_prints_the_card(runner, tiny_model):
    result = runner.invoke(cli, ["info", str(tiny_model)])
    assert result.exit_code == 0
    assert result.stdout.startswith("tiny  (") and "architecture: wide-deep" in result.stdout
    assert "class biases none (fitted only with train --class-bias)" in result.stdout
    cascade = read_card(tiny_model).cascade
    assert ("cascade: none" in result.stdout) if cascade is None else (f"≥ {cascade.threshold:.3f} sure" in result.stdout)
    assert "n-gram counts over √count, 4,096 buckets" in result.stdout
    as_json = runner.invoke(cli, ["info", str(tiny_model), "--json"])
    assert json.loads(as_json.stdout)["name"] == "tiny"


def test_train_cli_defaults_idf_ngrams_and_no_class_weights_and_records_them(runner, sample_dir, tmp_path):
    out = tmp_path / "idf"
    result = runner.invoke(cli, ["train", str(sample_dir / "labelled.csv"), "--out", str(out), "--epochs", "1", "--maxlen", "32",
                                 "--embed-dim", "8", "--vectors", "none", "--lstm-units", "4", "--workers", "1", "-q", "--wide-buckets", "4096"])
    assert result.exit_code == 0, result.output
    card = read_card(out)
    assert (card.wide.weighting, card.wide.num_buckets) == ("idf", 4096)
    # No class weights by default: square-root weights over-called 中评 on held-out sources (README).
    assert card.training["class_weighting"] == "none" and card.training["class_weights"] is None
    info = runner.invoke(cli, ["info", str(out)])
    assert "idf-weighted distinct n-grams over the L2 norm, 4,096 buckets" in info.stdout
    assert "class weights: none" in info.stdout
    joint = runner.invoke(cli, ["train", str(sample_dir / "labelled.csv"), "--out", str(tmp_path / "j"),
                                "--wide-weighting", "idf", "--wide-training", "joint"])
    assert joint.exit_code == 2 and "--wide-weighting idf needs --wide-training prefit" in joint.stderr


def test_score_runtime_and_cascade_flags_reach_the_output(runner, tiny_model, sample_dir, tmp_path):
    out = tmp_path / "scored.parquet"
    result = runner.invoke(cli, ["score", str(sample_dir / "reviews.csv"), str(out), "--model", str(tiny_model),
                                 "--runtime", "tensorflow", "--no-cascade", "--workers", "1"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.schema.metadata[b"sentiscore.runtime"].decode().startswith("tensorflow ")
    assert set(table.column("scored_by").drop_null().to_pylist()) == {"full"}
    assert "runtime tensorflow" in result.stderr
    bad = runner.invoke(cli, ["score", str(sample_dir / "reviews.csv"), str(out), "--runtime", "jax", "--overwrite"])
    assert bad.exit_code == 2 and "jax" in bad.output


def test_default_model_smoke(runner, sample_dir, tmp_path):
    """The shipped default model scores the sample file out of the box."""
    out = tmp_path / "scored.parquet"
    result = runner.invoke(cli, ["score", str(sample_dir / "reviews.parquet"), str(out)])
    assert result.exit_code == 0, result.output
    frame = pq.read_table(out).to_pandas()
    assert len(frame) == 300 and (frame.status == "ok").mean() > 0.95
    assert "model zh-fast@" in result.stderr
    easy = runner.invoke(cli, ["info"])
    assert easy.exit_code == 0 and "zh-fast" in easy.stdout
    elmo_out = tmp_path / "scored-elmo.parquet"
    elmo = runner.invoke(cli, ["score", str(sample_dir / "reviews.parquet"), str(elmo_out), "--model", "zh-elmo"])
    assert elmo.exit_code == 0, elmo.output
    assert "model zh-elmo@" in elmo.stderr and "embedder elmo+vocab zh-small" in elmo.stderr
    elmo_frame = pq.read_table(elmo_out).to_pandas()
    assert len(elmo_frame) == 300 and (elmo_frame.status == "ok").mean() > 0.95


@pytest.mark.parametrize("sig,code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_signals_stop_cleanly_without_partial_output(tiny_model, tmp_path, sig, code):
    """A long run killed mid-way exits with 128+signal, leaves no OUT, no temp file, no workers."""
    import signal
    import time

    import pandas as pd

    big = tmp_path / "big.csv"
    frame = pd.read_csv(ROOT_SAMPLE / "reviews.csv")
    pd.concat([frame] * 200, ignore_index=True).assign(txt=lambda f: f.txt + f.index.astype(str)).to_csv(big, index=False)
    out = tmp_path / "out" / "scored.parquet"
    out.parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentiscore", "score", str(big), str(out), "-m", str(tiny_model), "--workers", "2",
         "--chunk-size", "2000"],
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.parent.glob(".scored.parquet.sentiscore-*.tmp")):
        time.sleep(0.2)
    assert list(out.parent.glob("*.tmp")), "the run never started writing"
    proc.send_signal(getattr(signal, sig))
    stderr = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == code, stderr
    assert list(out.parent.iterdir()) == []
    assert ("terminated" if sig == "SIGTERM" else "interrupted") in stderr


def test_stale_temp_file_of_a_killed_run_is_removed(tiny_model, sample_dir, tmp_path):
    out = tmp_path / "scored.parquet"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".scored.parquet.sentiscore-{dead.pid}.tmp"
    stale.write_bytes(b"half a file")
    result = CliRunner().invoke(cli, ["score", str(sample_dir / "reviews.csv"), str(out), "-m", str(tiny_model), "--workers", "1"])
    assert result.exit_code == 0
    assert not stale.exists() and out.exists()


def test_ragged_csv_rows_error_names_the_line_or_are_skipped(runner, tiny_model, tmp_path):
    src = tmp_path / "ragged.csv"
    src.write_text('id,txt\n1,好\n2,"多行\n文本"\n3,差,多余\n4,一般\n5\n', encoding="utf-8")
    out = tmp_path / "out.csv"
    args = ["score", str(src), str(out), "-m", str(tiny_model), "--workers", "1"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2
    assert "Expected 2 columns, got 3: 3,差,多余 at line 5; fix the row, or pass --on-bad-lines skip" in result.stderr
    assert not out.exists()
    result = runner.invoke(cli, args + ["--on-bad-lines", "skip"])
    assert result.exit_code == 0, result.output
    assert "skipped 2 bad CSV lines (listed in" in result.stderr
    import pandas as pd

    assert pd.read_csv(out, dtype=str).id.tolist() == ["1", "2", "4"]
    side = (tmp_path / "out.csv.bad-lines.tsv").read_text(encoding="utf-8").splitlines()
    assert side == ["line\ttext", "5\t3,差,多余", "7\t5"]


def test_resume_after_sigkill_finishes_with_identical_output(tiny_model, tmp_path):
    import signal
    import time

    import pandas as pd

    big = tmp_path / "big.parquet"
    frame = pd.read_csv(ROOT_SAMPLE / "reviews.csv", dtype=str)
    pd.concat([frame] * 40, ignore_index=True).assign(txt=lambda f: f.txt + f.index.astype(str)).to_parquet(big)
    out = tmp_path / "parts"
    cmd = [sys.executable, "-m", "sentiscore", "score", str(big), str(out), "-m", str(tiny_model), "--workers", "1",
           "--chunk-size", "500", "--resume", "--quiet"]
    proc = subprocess.Popen(cmd)
    deadline = time.time() + 90
    while time.time() < deadline and len(list(out.glob("part-*.parquet"))) < 2:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survivors = {p.name for p in out.glob("part-*.parquet")}
    assert 2 <= len(survivors) < 24 and not (out / "_SUCCESS").exists()
    subprocess.run(cmd, check=True)
    assert (out / "_SUCCESS").exists() and len(list(out.glob("part-*.parquet"))) == 24
    assert not list(out.glob(".*.tmp"))
    whole = tmp_path / "whole.parquet"
    subprocess.run(cmd[:5] + [str(whole)] + cmd[6:12] + ["--quiet"], check=True)  # same run without --resume
    parts = pd.concat([pq.read_table(p).to_pandas() for p in sorted(out.glob("part-*.parquet"))], ignore_index=True)
    pd.testing.assert_frame_equal(parts, pq.read_table(whole).to_pandas())


@pytest.mark.parametrize("value", ["-1", "20"])
def test_worker_nice_outside_the_unix_range_is_refused_before_any_work(value, tiny_model, sample_dir, tmp_path):
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(cli, ["score", str(sample_dir / "reviews.csv"), str(out), "-m", str(tiny_model), "--worker-nice", value])
    assert result.exit_code == 2 and "--worker-nice" in result.output + (result.stderr or "") and not out.exists()


_POOL_AFTER_SCORE_STARTS = (
    "from sentiscore.cli import prefer_releasing_memory_pool as prefer\n"
    "prefer()\n"
    "import pyarrow as pa\n"
    "print(pa.default_memory_pool().backend_name)\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="jemalloc is preferred on Linux only")
def test_score_takes_arrows_buffers_from_jemalloc_unless_told_otherwise():
    import os

    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    chosen = subprocess.run([sys.executable, "-c", _POOL_AFTER_SCORE_STARTS], env=env, capture_output=True, text=True, check=True)
    assert chosen.stdout.strip() == "jemalloc" and chosen.stderr == ""
    env["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    kept = subprocess.run([sys.executable, "-c", _POOL_AFTER_SCORE_STARTS], env=env, capture_output=True, text=True, check=True)
    assert kept.stdout.strip() == "system"
