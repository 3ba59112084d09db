"""--engine ray: a local Ray (2 CPUs, started and stopped here) gives the
same labels and probabilities per row as the local engine; directories of
files; a bad block stops the run with a typed error naming the file."""

import json
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sentiscore.cli import cli
from sentiscore.config import ScoreConfig
from sentiscore.errors import InputError, UsageError
from sentiscore.pipeline import score_file

ray = pytest.importorskip("ray")

from sentiscore import ray_engine  # noqa: E402
from sentiscore.ray_engine import RayOptions, score_with_ray  # noqa: E402

PROBS = ["prob_负评", "prob_中评", "prob_正评"]


@pytest.fixture(scope="module")
def local_result(tiny_model, sample_dir, tmp_path_factory):
    """The local engine's output for the sample reviews."""
    out = tmp_path_factory.mktemp("local") / "scored.parquet"
    score_file(sample_dir / "reviews.parquet", out, model=tiny_model, config=ScoreConfig(workers=1))
    return pq.read_table(out).to_pandas()


def read_dir(path):
    parts = sorted(path.glob("part-*.parquet"))
    return pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)


def assert_same_scores(ray_frame, local_frame):
    ray_frame = ray_frame.set_index("id").loc[local_frame["id"]].reset_index()
    assert list(ray_frame.columns) == list(local_frame.columns)
    for column in ["txt", "source", "label", "label_id", "status"]:
        assert ray_frame[column].tolist() == local_frame[column].tolist(), column
    np.testing.assert_allclose(ray_frame[PROBS + ["confidence"]].to_numpy(float),
                               local_frame[PROBS + ["confidence"]].to_numpy(float), atol=1e-5)
    assert [list(w) for w in ray_frame["top_words"]] == [list(w) for w in local_frame["top_words"]]


def test_same_labels_and_probabilities_as_the_local_engine(local_ray, tiny_model, sample_dir, local_result, tmp_path):
    out = tmp_path / "scored"
    summary = score_with_ray(sample_dir / "reviews.parquet", out, model=tiny_model, config=ScoreConfig(chunk_size=64),
                             options=RayOptions(num_workers=1))
    assert summary.rows == 300 and sum(summary.label_counts.values()) + summary.unlabelled == 300
    frame = read_dir(out)
    assert frame["id"].tolist() == local_result["id"].tolist()  # input order kept
    assert_same_scores(frame, local_result)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("part-")) == ["_SUCCESS", "_sentiscore_run.json"]
    metadata = pq.read_schema(next(out.glob("part-*.parquet"))).metadata
    assert metadata[b"sentiscore.model_hash"] == summary.model_hash.encode()
    assert metadata[b"sentiscore.engine"] == f"ray {ray.__version__}".encode()
    run = json.loads((out / "_sentiscore_run.json").read_text())["run"]
    assert run["rows"] == 300 and run["provenance"]["sentiscore.model"] == "tiny"
    assert not list(tmp_path.glob(".scored.sentiscore-*"))  # temp directory renamed into place


def test_known_priors_score_as_in_the_local_engine(local_ray, tiny_model, sample_dir, tmp_path):
    """--priors on Ray: every actor scores under the given shares, as the
    local engine does; binary data's "-1=0.5,0=0,1=0.5" never calls 中评."""
    binary = (("-1", 0.5), ("0", 0.0), ("1", 0.5))
    local = tmp_path / "local.parquet"
    score_file(sample_dir / "reviews.parquet", local, model=tiny_model, config=ScoreConfig(workers=1, priors=binary))
    out = tmp_path / "scored"
    summary = score_with_ray(sample_dir / "reviews.parquet", out, model=tiny_model, config=ScoreConfig(chunk_size=64, priors=binary),
                             options=RayOptions(num_workers=1))
    frame, local_frame = read_dir(out), pq.read_table(local).to_pandas()
    assert_same_scores(frame, local_frame)
    assert "中评" not in set(frame["label"].dropna()) and summary.label_counts["中评"] == 0
    line = pq.read_schema(next(out.glob("part-*.parquet"))).metadata[b"sentiscore.priors"].decode()
    assert line == "负评 0.5000, 中评 0.0000, 正评 0.5000 (given)" == pq.read_schema(local).metadata[b"sentiscore.priors"].decode()
    assert "priors 负评 0.5000, 中评 0.0000, 正评 0.5000 (given)" in summary.line()
    assert json.loads((out / "_sentiscore_run.json").read_text())["run"]["options"]["priors"] == [0.5, 0.0, 0.5]


def test_adapt_domain_fits_the_local_engines_file_model_and_every_actor_uses_it(local_ray, tiny_model, sample_dir, tmp_path):
    """--adapt-domain on Ray: the driver draws the local engine's sample from
    the read tasks' blocks (in whatever order Ray delivers them), fits the
    same file model, and the actors average it in: the same output row for
    row, 'file' on the same rows, the same provenance."""
    local = tmp_path / "local.parquet"
    score_file(sample_dir / "reviews.parquet", local, model=tiny_model, config=ScoreConfig(workers=1, adapt_domain=True))
    out = tmp_path / "scored"
    result = CliRunner().invoke(cli, ["score", str(sample_dir / "reviews.parquet"), str(out), "--model", str(tiny_model),
                                      "--engine", "ray", "--num-workers", "1", "--chunk-size", "64", "--adapt-domain"])
    assert result.exit_code == 0, result.output
    frame, local_frame = read_dir(out), pq.read_table(local).to_pandas()
    assert_same_scores(frame, local_frame)
    assert frame["scored_by"].tolist() == local_frame["scored_by"].tolist()
    line = pq.read_schema(local).metadata[b"sentiscore.adapted_domain"].decode()
    assert line.startswith("self-trained") and "of 300 rows" in line
    assert pq.read_schema(next(out.glob("part-*.parquet"))).metadata[b"sentiscore.adapted_domain"].decode() == line
    assert "adapted to the file: " + line in " ".join(result.stderr.split())
    assert json.loads((out / "_sentiscore_run.json").read_text())["run"]["options"]["adapt_domain"] is True


@pytest.mark.parametrize("flags", [["--adapt-priors"], ["--adapt-priors", "--prior-estimator", "em", "--adapt-domain"]])
def test_adapted_priors_are_estimated_as_in_the_local_engine(local_ray, tiny_model, sample_dir, tmp_path, flags):
    """--adapt-priors on Ray: a first pass of the actors sends every labelled
    row's probabilities to the driver, which estimates the priors in input
    order, as the local engine does; with --adapt-domain too, its sample is
    of those rows."""
    config = ScoreConfig(workers=1, adapt_priors=True, adapt_domain="--adapt-domain" in flags,
                         prior_estimator="em" if "em" in flags else "bbse")
    local = tmp_path / "local.parquet"
    score_file(sample_dir / "reviews.parquet", local, model=tiny_model, config=config)
    out = tmp_path / "scored"
    result = CliRunner().invoke(cli, ["score", str(sample_dir / "reviews.parquet"), str(out), "--model", str(tiny_model),
                                      "--engine", "ray", "--num-workers", "1", "--chunk-size", "64", *flags])
    assert result.exit_code == 0, result.output
    frame, local_frame = read_dir(out), pq.read_table(local).to_pandas()
    assert_same_scores(frame, local_frame)
    assert frame["scored_by"].tolist() == local_frame["scored_by"].tolist()
    expected = pq.read_schema(local).metadata
    written = pq.read_schema(next(out.glob("part-*.parquet"))).metadata
    estimator = "EM" if "em" in flags else "BBSE"
    assert written[b"sentiscore.priors"] == expected[b"sentiscore.priors"] and f"(adapted by {estimator})".encode() in written[b"sentiscore.priors"]
    assert written.get(b"sentiscore.adapted_domain") == expected.get(b"sentiscore.adapted_domain")
    run = json.loads((out / "_sentiscore_run.json").read_text())["run"]
    np.testing.assert_allclose(run["options"]["priors"], _priors_of(expected[b"sentiscore.priors"].decode()), atol=5e-5)


def test_matched_priors_are_fitted_as_in_the_local_engine(local_ray, tiny_model, sample_dir, tmp_path):
    """--priors-mode match on Ray: the driver scores the local engine's sample
    and fits the same priors; the actors score under them."""
    config = ScoreConfig(workers=1, priors=(("-1", 0.3), ("0", 0.3), ("1", 0.4)), priors_mode="match")
    local = tmp_path / "local.parquet"
    score_file(sample_dir / "reviews.parquet", local, model=tiny_model, config=config)
    out = tmp_path / "scored"
    result = CliRunner().invoke(cli, ["score", str(sample_dir / "reviews.parquet"), str(out), "--model", str(tiny_model),
                                      "--engine", "ray", "--num-workers", "1", "--chunk-size", "64",
                                      "--priors", "-1=0.3,0=0.3,1=0.4", "--priors-mode", "match"])
    assert result.exit_code == 0, result.output
    assert_same_scores(read_dir(out), pq.read_table(local).to_pandas())
    line = pq.read_schema(local).metadata[b"sentiscore.priors"].decode()
    assert "(given; matched on 300 sampled rows, scored under " in line
    assert pq.read_schema(next(out.glob("part-*.parquet"))).metadata[b"sentiscore.priors"].decode() == line
    options = json.loads((out / "_sentiscore_run.json").read_text())["run"]["options"]
    assert options["priors_mode"] == "match"
    np.testing.assert_allclose(options["priors"], [float(p.split()[-1]) for p in line.split("scored under ")[1][:-1].split(", ")], atol=5e-5)


def _priors_of(line: str) -> list[float]:
    """The shares of a sentiscore.priors line ("负评 0.4123, 中评 ..., 正评 ... (adapted by BBSE)")."""
    return [float(part.split()[-1]) for part in line.rsplit(" (", 1)[0].split(", ")]


def test_priors_need_a_reference_prior_before_ray_starts(tiny_model, sample_dir, tmp_path):
    import shutil

    from sentiscore.artifacts import verify, write_card
    from sentiscore.errors import ModelError

    old = tmp_path / "old-model"
    shutil.copytree(tiny_model, old)
    meta = verify(old)
    del meta["training"]["calibration"]["reference_prior"]
    write_card(old, meta)
    with pytest.raises(ModelError, match="no reference prior"):
        score_with_ray(sample_dir / "reviews.parquet", tmp_path / "out", model=old,
                       config=ScoreConfig(priors=(("-1", 0.5), ("0", 0.0), ("1", 0.5))))


def test_a_directory_of_csv_files_through_the_cli(local_ray, tiny_model, sample_dir, local_result, tmp_path):
    frame = pd.read_csv(sample_dir / "reviews.csv", dtype=str, keep_default_na=False)
    inp = tmp_path / "in"
    (inp / "nested").mkdir(parents=True)
    for i, (path, rows) in enumerate([("a.csv", slice(0, 90)), ("b.csv", slice(90, 200)), ("nested/c.csv", slice(200, 300))]):
        frame.iloc[rows].to_csv(inp / path, index=False)
    (inp / "_SUCCESS").write_text("")
    (inp / "README.txt").write_text("not data")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["score", str(inp), str(out), "--model", str(tiny_model), "--engine", "ray",
                                      "--num-workers", "1", "--chunk-size", "40"])
    assert result.exit_code == 0, result.output
    assert "sentiscore: 300 rows in" in result.stderr and "model tiny@" in result.stderr
    scored = read_dir(out)
    assert scored["id"].tolist() == frame["id"].tolist()  # files in name order, rows in file order
    assert pa.types.is_string(pq.read_schema(next(out.glob("part-*"))).field("id").type)
    assert_same_scores(scored, local_result)


def test_a_bad_block_stops_the_run_naming_its_file_and_line(local_ray, tiny_model, sample_dir, tmp_path):
    lines = (sample_dir / "reviews.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.csv").write_text("".join(lines[:101]), encoding="utf-8")
    (inp / "b.csv").write_text("".join(lines[:1] + lines[101:150] + ["x1,好,weibo,extra\n"] + lines[150:200]), encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["score", str(inp), str(out), "--model", str(tiny_model), "--engine", "ray"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert (f"Error: cannot read {inp / 'b.csv'} as csv: CSV parse error: Expected 3 columns, got 4: x1,好,weibo,extra "
            "at line 51; fix the row, or score this file with --engine local --on-bad-lines skip") in message
    assert "Traceback" not in result.output and "RayTaskError" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".out.sentiscore-*"))


def test_an_error_raised_in_a_scoring_actor_reaches_the_driver_typed(local_ray, tiny_model):
    from sentiscore.artifacts import model_hash
    from sentiscore.errors import ModelError

    plan = ray_engine._Plan(model_candidates=("/nowhere/tiny",), model_hash=model_hash(tiny_model), text_column="txt",
                            keep=("txt",), prefix="", batch_size=16, top_k=3)
    undo = ray_engine._quiet_ray(ray, progress=False)
    try:
        with pytest.raises(Exception) as raised:
            ray.data.from_arrow(pa.table({"txt": ["好"]})).map_batches(
                ray_engine.ScoreActor, fn_constructor_kwargs={"plan": plan}, batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1).materialize()
    finally:
        for step in reversed(undo):
            step()
    error = ray_engine._as_sentiscore_error(ray, raised.value)
    assert isinstance(error, ModelError)
    assert str(error).startswith("model directory /nowhere/tiny is not visible on Ray node ")


def test_every_file_needs_the_text_column(tiny_model, sample_dir, tmp_path):
    """Ray would fill a missing column with nulls (rows scored as empty): the
    driver checks every file's columns before starting."""
    inp = tmp_path / "in"
    inp.mkdir()
    table = pq.read_table(sample_dir / "reviews.parquet")
    pq.write_table(table.slice(0, 150), inp / "a.parquet")
    pq.write_table(table.slice(150).rename_columns(["id", "text", "source"]), inp / "b.parquet")
    with pytest.raises(InputError, match=rf"no text column 'txt' in {inp / 'b.parquet'}; its columns are: id, text, source"):
        score_with_ray(inp, tmp_path / "out", model=tiny_model)
    pq.write_table(table.slice(150).select(["id", "txt"]), inp / "b.parquet")
    with pytest.raises(InputError, match=r"b.parquet lacks column\(s\) source that .*a.parquet has"):
        score_with_ray(inp, tmp_path / "out", model=tiny_model)


def test_a_header_only_csv_gives_a_valid_empty_output(local_ray, tiny_model, tmp_path):
    inp = tmp_path / "empty.csv"
    inp.write_text("id,txt\n", encoding="utf-8")
    summary = score_with_ray(inp, tmp_path / "out", model=tiny_model, options=RayOptions(num_workers=1))
    assert summary.rows == 0
    table = pq.read_table(tmp_path / "out")
    assert table.num_rows == 0 and table.column_names[:3] == ["id", "txt", "label"] and "status" in table.column_names


# --- without a cluster --------------------------------------------------------


def test_segmentation_stage_and_actor_match_the_scorer_in_process(tiny_model, tiny_scorer):
    """The two stages run here without Ray: the actor finds every text's
    tokens in the segmentation stage's columns (no segmenting of its own)."""
    from sentiscore.artifacts import model_hash

    texts = ["物流很快，质量不错", "再也不买了", "物流很快，质量不错", "", None, "！！！", "质量太差" * 200]
    table = pa.table({"id": list(range(len(texts))), "txt": pa.array(texts, pa.string())})
    plan = ray_engine._Plan(model_candidates=(str(tiny_model),), model_hash=model_hash(tiny_model), text_column="txt",
                            keep=("id", "txt"), prefix="", batch_size=16, top_k=3)
    actor = ray_engine.ScoreActor(plan)
    out = actor.score(ray_engine.segment_block(table, plan))
    assert actor.segmenter.misses == 0
    expected = tiny_scorer.score_batch(table.to_batches()[0], "txt")
    assert out.column_names == expected.schema.names
    for name in out.column_names:
        if name.startswith("prob_") or name == "confidence":
            np.testing.assert_allclose(out.column(name).to_numpy(zero_copy_only=False).astype(float),
                                       expected.column(name).to_numpy(zero_copy_only=False).astype(float), atol=1e-5)
        else:
            assert out.column(name).to_pylist() == expected.column(name).to_pylist(), name
    numbers = pa.table({"id": [1, 2], "txt": pa.array([12, None], pa.int64())})  # cast to text in both stages
    actor.score(ray_engine.segment_block(numbers, plan))
    assert actor.segmenter.misses == 0
    actor.scorer.close()


@pytest.mark.parametrize("args,message", [
    (["--num-workers", "2"], "--num-workers need --engine ray"),
    (["--engine", "ray", "--resume"], "--resume is for the local engine, not --engine ray"),
    (["--engine", "ray", "--workers", "2"], "--workers is for the local engine, not --engine ray (use --num-workers for the scoring actors)"),
    (["--engine", "ray", "--worker-nice", "0"], "--worker-nice is for the local engine, not --engine ray"),
    (["--engine", "ray", "--output-format", "csv"], "--engine ray writes a directory of Parquet parts; drop --output-format"),
])
def test_options_that_do_not_fit_the_engine(args, message, sample_dir, tmp_path):
    result = CliRunner().invoke(cli, ["score", str(sample_dir / "reviews.csv"), str(tmp_path / "out")] + args)
    assert result.exit_code == 2 and message in " ".join(result.stderr.split())


def test_inputs_it_refuses_before_starting_ray(sample_dir, tmp_path):
    with pytest.raises(UsageError, match="not stdin"):
        score_with_ray("-", tmp_path / "out")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("reviews.csv", "reviews.parquet"):
        (mixed / name).write_bytes((sample_dir / name).read_bytes())
    with pytest.raises(UsageError, match=r"mixes formats: csv \(.*\), parquet"):
        score_with_ray(mixed, tmp_path / "out")
    with pytest.raises(InputError, match="no files match"):
        score_with_ray(str(tmp_path / "*.jsonl"), tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(Exception, match="holds no sentiscore output; refusing to replace it"):
        score_with_ray(sample_dir / "reviews.csv", tmp_path / "out", config=ScoreConfig(overwrite=True))


def test_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UsageError, match=r"pip install 'sentiscore\[ray\]'"):
        ray_engine.import_ray()


class _FakeRay:
    def __init__(self, **resources):
        self.resources = resources

    def cluster_resources(self):
        return self.resources


@pytest.mark.parametrize("resources,options,expected", [
    ({"CPU": 2}, RayOptions(), 1),
    ({"CPU": 16}, RayOptions(), 8),
    ({"CPU": 16, "GPU": 4}, RayOptions(gpus_per_worker=0.5), 8),
    ({"CPU": 16}, RayOptions(num_workers=15), 15),
    ({"CPU": 2}, RayOptions(num_workers=2), "use --num-workers 1 or fewer"),
    ({"CPU": 8}, RayOptions(gpus_per_worker=1), "the Ray cluster has 0 GPUs"),
])
def test_number_of_scoring_actors(resources, options, expected):
    if isinstance(expected, int):
        assert ray_engine._num_workers(_FakeRay(**resources), options) == expected
    else:
        with pytest.raises(UsageError, match=expected):
            ray_engine._num_workers(_FakeRay(**resources), options)


def test_score_help_lists_the_ray_options():
    result = CliRunner().invoke(cli, ["score", "--help"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    for phrase in ("--engine [local|ray]", "--ray-address auto|ray://HOST:PORT", "--num-workers", "--gpus-per-worker",
                   "With --engine ray (pip install 'sentiscore[ray]'), IN may also be a directory or glob"):
        assert phrase in text, phrase


def test_an_ensemble_scores_as_in_the_local_engine(local_ray, tiny_model, tiny_idf_model, sample_dir, tmp_path):
    from sentiscore.ensemble import combine

    model = combine([tiny_model, tiny_idf_model], tmp_path / "pair")
    local = tmp_path / "local.parquet"
    score_file(sample_dir / "reviews.parquet", local, model=model, config=ScoreConfig(workers=1))
    out = tmp_path / "scored"
    summary = score_with_ray(sample_dir / "reviews.parquet", out, model=model, config=ScoreConfig(chunk_size=64),
                             options=RayOptions(num_workers=1))
    assert summary.rows == 300
    assert_same_scores(read_dir(out), pq.read_table(local).to_pandas())
    metadata = pq.read_schema(next(out.glob("part-*.parquet"))).metadata
    assert metadata[b"sentiscore.members"] == pq.read_metadata(local).metadata[b"sentiscore.members"]


def test_actors_run_the_bilm_in_the_precision_asked_for(tiny_elmo_vocab_model, tiny_model, sample_dir, tmp_path):
    """--elmo-precision reaches each scoring actor (checked here without Ray)
    and is refused before Ray starts for a model without ELMo."""
    from sentiscore.artifacts import model_hash
    from sentiscore.pipeline import Scorer

    texts = ["物流很快，质量不错", "再也不买了", "手机很好用"]
    table = pa.table({"id": list(range(len(texts))), "txt": pa.array(texts, pa.string())})
    plan = ray_engine._Plan(model_candidates=(str(tiny_elmo_vocab_model),), model_hash=model_hash(tiny_elmo_vocab_model),
                            text_column="txt", keep=("id", "txt"), prefix="", batch_size=16, top_k=3, cascade=False,
                            elmo_precision="bfloat16")
    actor = ray_engine.ScoreActor(plan)
    try:
        assert actor.scorer.embedder.precision == "bfloat16"
        assert actor.metadata[b"sentiscore.embedder"].endswith(b" bfloat16")
        out = actor.score(ray_engine.segment_block(table, plan))
    finally:
        actor.scorer.close()
    with Scorer.from_model(tiny_elmo_vocab_model, workers=1, cascade=False) as local:
        local.set_elmo_precision("bfloat16")
        expected = local.score_batch(table.to_batches()[0], "txt")
    assert out.column("label").to_pylist() == expected.column("label").to_pylist()
    np.testing.assert_allclose(out.column("prob_正评").to_numpy(), expected.column("prob_正评").to_numpy(), atol=1e-5)
    with pytest.raises(UsageError, match="--elmo-precision applies to ELMo models; tiny embeds with vocab"):
        score_with_ray(sample_dir / "reviews.parquet", tmp_path / "out", model=tiny_model,
                       config=ScoreConfig(elmo_precision="bfloat16"))
    assert not (tmp_path / "out").exists()
