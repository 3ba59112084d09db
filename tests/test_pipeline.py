import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentiscore.config import ScoreConfig
from sentiscore.errors import InputError, SettingsMismatchError
from sentiscore.pipeline import Scorer, output_column_names, score_file
from sentiscore.segment import load_stopwords

ADDED = ["label", "label_id", "confidence", "prob_负评", "prob_中评", "prob_正评", "top_words", "top_weights", "status", "scored_by"]


def score_to_frame(scorer, src, tmp_path, name="out.parquet", **config):
    out = tmp_path / name
    summary = score_file(src, out, config=ScoreConfig(**config), scorer=scorer)
    return pq.read_table(out).to_pandas(), summary, out


def test_added_columns_follow_input_columns(tiny_scorer, sample_dir, tmp_path):
    frame, summary, _ = score_to_frame(tiny_scorer, sample_dir / "reviews.csv", tmp_path)
    assert list(frame.columns) == ["id", "txt", "source"] + ADDED
    assert output_column_names(tiny_scorer.labels) == ADDED
    assert summary.rows == 300 and sum(summary.label_counts.values()) + summary.unlabelled == 300


def test_rows_and_order_survive_nulls_empties_and_emoji(tiny_scorer, tmp_path):
    texts = ["很好", None, "", "   ", "😀😀😀", "！？。", "差评，不推荐", "很好", "的了吗"]
    src = tmp_path / "edge.parquet"
    pq.write_table(pa.table({"id": list(range(len(texts))), "txt": texts}), src)
    frame, summary, _ = score_to_frame(tiny_scorer, src, tmp_path)
    assert frame.id.tolist() == list(range(len(texts)))
    assert frame.status.tolist() == ["ok", "empty", "empty", "empty", "no_tokens", "no_tokens", "ok", "ok", "no_tokens"]
    unlabelled = frame.status != "ok"
    assert frame.label[unlabelled].isna().all() and frame.confidence[unlabelled].isna().all()
    assert frame.label[~unlabelled].notna().all()
    assert summary.unlabelled == int(unlabelled.sum())
    # the same text twice gets the same result
    assert frame.loc[0, "prob_正评"] == frame.loc[7, "prob_正评"]


def test_probabilities_sum_to_one_and_confidence_is_the_max(tiny_scorer, sample_dir, tmp_path):
    frame, _, _ = score_to_frame(tiny_scorer, sample_dir / "reviews.parquet", tmp_path)
    probs = frame[["prob_负评", "prob_中评", "prob_正评"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(frame.confidence, probs.max(axis=1))
    names = np.array(["负评", "中评", "正评"])
    assert (frame.label.to_numpy() == names[probs.argmax(axis=1)]).all()
    assert set(frame.label_id) <= {-1, 0, 1}


def test_chunk_size_does_not_change_results(tiny_scorer, sample_dir, tmp_path):
    src = tmp_path / "hundred.parquet"
    pq.write_table(pq.read_table(sample_dir / "reviews.parquet").slice(0, 100), src)
    small, _, _ = score_to_frame(tiny_scorer, src, tmp_path, "a.parquet", chunk_size=7)
    whole, _, _ = score_to_frame(tiny_scorer, src, tmp_path, "b.parquet", chunk_size=100)
    pd.testing.assert_frame_equal(small, whole)


def test_batch_size_does_not_change_results(tiny_model, sample_dir):
    texts = pd.read_csv(sample_dir / "reviews.csv").txt.tolist()[:60]
    with Scorer.from_model(tiny_model, workers=1, batch_size=1) as one, Scorer.from_model(tiny_model, workers=1, batch_size=64) as many:
        a, b = one.predict(texts), many.predict(texts)
    np.testing.assert_allclose(a.prob_正评, b.prob_正评, rtol=1e-4, atol=1e-6)
    assert a.top_words.apply(list).tolist() == b.top_words.apply(list).tolist()


def test_top_words_are_real_tokens_without_punctuation_or_stopwords(tiny_scorer):
    texts = ["这个手机的屏幕很清晰，电池也耐用！！！", "差差差，差评，差到不行", "好"]
    frame = tiny_scorer.predict(texts)
    stop = load_stopwords("builtin")
    for text, words, weights in zip(texts, frame.top_words, frame.top_weights):
        words = list(words)
        assert len(words) <= 3 and len(words) == len(set(words)) == len(weights)
        for w in words:
            assert w in text and w not in stop and any(ch.isalnum() for ch in w)
        assert list(weights) == sorted(weights, reverse=True) and all(v > 0 for v in weights)


def test_a_chunk_without_any_token_has_empty_top_words(tiny_scorer):
    frame = tiny_scorer.predict(["！！！", "。。", "……"])
    assert frame.status.tolist() == ["no_tokens"] * 3
    assert [list(w) for w in frame.top_words] == [[], [], []] and [list(w) for w in frame.top_weights] == [[], [], []]


def test_top_words_are_the_words_that_add_most_to_the_predicted_class(tiny_scorer, monkeypatch):
    """top_words = the tokens with the largest contribution to the predicted
    class's logit (attention-weighted deep part + the token's own n-grams),
    for rows the whole model scores (the cascade's rows: tests/test_cascade.py)."""
    from sentiscore.explain import explain_texts

    monkeypatch.setattr(tiny_scorer, "cascade", None)

    texts = ["这个手机的屏幕很清晰，电池也耐用", "物流太慢了，客服态度也差，不会再买", "还行吧，一般般"]
    frame = tiny_scorer.predict(texts)
    for e, words, weights in zip(explain_texts(tiny_scorer, texts), frame.top_words, frame.top_weights):
        totals = {}
        for token, share in zip(e.tokens, e.contributions):
            totals[token] = totals.get(token, 0.0) + share
        expected = [t for t in sorted(totals, key=lambda t: (-totals[t], t)) if totals[t] > 0][:3]
        assert list(words) == expected
        np.testing.assert_allclose(list(weights), [totals[t] for t in expected], atol=2e-3)


def test_token_contributions_add_up_to_the_deep_logits(tiny_scorer):
    """Σ_t α_t (W h_t) + b is exactly the deep path's logit."""
    from sentiscore.explain import explain_texts

    texts = ["屏幕很清晰，电池耐用，好评"]
    prepared = tiny_scorer.preprocess(texts)
    segmented = tiny_scorer.forward(prepared).segmented
    features = tiny_scorer.embedder.featurize(segmented)
    inputs = tiny_scorer.embedder.encode(features, np.array([0]), int(segmented.lengths[0]))
    inputs["ngram_ids"] = tiny_scorer.hasher.transform(prepared.unique_texts)
    _, _, token_logits = tiny_scorer.predictor(inputs)
    deep = tiny_scorer.predictor.logit_parts(inputs)["deep"]
    from sentiscore.artifacts import load_model_dir

    # The Keras model's own bias, whatever runtime the scorer runs on.
    bias = load_model_dir(tiny_scorer.card.path).keras_model.get_layer("deep_logits").get_weights()[1]
    np.testing.assert_allclose(token_logits[0].sum(axis=0) + bias, deep[0], rtol=1e-4, atol=1e-5)
    assert explain_texts(tiny_scorer, texts)[0].tokens == segmented.tokens


@pytest.mark.parametrize("out_name,fmt", [("o.csv", "csv"), ("o.tsv", "tsv"), ("o.jsonl", "jsonl"), ("o.parquet", "parquet")])
@pytest.mark.parametrize("in_ext", ["csv", "jsonl", "parquet"])
def test_every_input_and_output_format(tiny_scorer, sample_dir, tmp_path, in_ext, out_name, fmt):
    out = tmp_path / out_name
    summary = score_file(sample_dir / f"reviews.{in_ext}", out, scorer=tiny_scorer)
    assert summary.rows == 300
    if fmt == "parquet":
        frame = pq.read_table(out).to_pandas()
    elif fmt == "jsonl":
        frame = pd.read_json(out, lines=True, dtype={"id": str})
        assert isinstance(frame.top_words[0], list)
    else:
        frame = pd.read_csv(out, sep="\t" if fmt == "tsv" else ",", dtype={"id": str})
        assert isinstance(json.loads(frame.top_words[0]), list)
    assert frame.id.tolist() == pd.read_csv(sample_dir / "reviews.csv", dtype=str).id.tolist()
    assert set(ADDED) <= set(frame.columns)


def test_provenance_in_parquet_metadata_and_summary(tiny_scorer, sample_dir, tmp_path):
    _, summary, out = score_to_frame(tiny_scorer, sample_dir / "reviews.csv", tmp_path)
    meta = {k.decode(): v.decode() for k, v in pq.read_schema(out).metadata.items() if k.startswith(b"sentiscore.")}
    assert meta["sentiscore.model"] == "tiny"
    assert meta["sentiscore.model_hash"] == tiny_scorer.loaded.hash
    assert meta["sentiscore.segmenter"].startswith("jieba_fast ")
    assert meta["sentiscore.tensorflow_version"] and meta["sentiscore.keras_version"].startswith("3.")
    line = summary.line()
    assert f"tiny@{tiny_scorer.loaded.hash}" in line and "300 rows" in line and "jieba_fast" in line


def test_keep_columns_and_missing_text_column(tiny_scorer, sample_dir, tmp_path):
    frame, _, _ = score_to_frame(tiny_scorer, sample_dir / "reviews.csv", tmp_path, keep_columns=("id",))
    assert list(frame.columns) == ["id"] + ADDED
    with pytest.raises(InputError, match="no text column 'text'.*its columns are: id, txt, source"):
        score_file(sample_dir / "reviews.csv", tmp_path / "x.parquet", config=ScoreConfig(text_column="text"), scorer=tiny_scorer)


def test_clashing_column_names_need_a_prefix(tiny_scorer, sample_dir, tmp_path):
    with pytest.raises(InputError, match="already has column.*label.*--prefix"):
        score_file(sample_dir / "labelled.csv", tmp_path / "x.parquet", scorer=tiny_scorer)
    summary = score_file(sample_dir / "labelled.csv", tmp_path / "y.parquet", scorer=tiny_scorer, prefix="ss_")
    columns = pq.read_schema(tmp_path / "y.parquet").names
    assert "label" in columns and "ss_label" in columns and summary.rows == 600


def test_numbers_in_the_text_column_are_scored_as_text(tiny_scorer, tmp_path):
    src = tmp_path / "nums.parquet"
    pq.write_table(pa.table({"txt": [1, 22, None]}), src)
    frame, _, _ = score_to_frame(tiny_scorer, src, tmp_path)
    assert frame.status.tolist() == ["ok", "ok", "empty"]


def test_header_only_and_zero_row_inputs_give_valid_empty_outputs(tiny_scorer, tmp_path):
    src = tmp_path / "header.csv"
    src.write_text("id,txt\n", encoding="utf-8")
    frame, summary, _ = score_to_frame(tiny_scorer, src, tmp_path)
    assert len(frame) == 0 and summary.rows == 0 and list(frame.columns) == ["id", "txt"] + ADDED


def test_failed_run_leaves_no_output(tiny_scorer, sample_dir, tmp_path, monkeypatch):
    from sentiscore import io as sio

    calls = {"n": 0}
    real_write = sio.BatchWriter._write

    def failing_write(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_write(self, batch)

    monkeypatch.setattr(sio.BatchWriter, "_write", failing_write)
    out = tmp_path / "out.parquet"
    with pytest.raises(Exception, match="No space left on device"):
        score_file(sample_dir / "reviews.csv", out, config=ScoreConfig(chunk_size=50), scorer=tiny_scorer)
    assert list(tmp_path.iterdir()) == []


def test_settings_mismatch_is_an_error(tiny_model, tmp_path):
    with pytest.raises(SettingsMismatchError, match="maxlen 64 \\(model: 48\\)"):
        Scorer.from_model(tiny_model, expect={"maxlen": 64})
    stop = tmp_path / "stop.txt"
    stop.write_text("好\n", encoding="utf-8")
    with pytest.raises(SettingsMismatchError, match="stopwords"):
        Scorer.from_model(tiny_model, expect={"stopwords": str(stop)})
    with Scorer.from_model(tiny_model, workers=1, expect={"maxlen": 48, "stopwords": "builtin"}) as scorer:
        assert scorer.maxlen == 48


def test_two_label_attention_model_with_custom_names(tiny_attention_model):
    with Scorer.from_model(tiny_attention_model, workers=1) as scorer:
        frame = scorer.predict(["好评", "差评"])
    assert list(frame.columns) == ["text", "label", "label_id", "confidence", "prob_neg", "prob_pos", "top_words", "top_weights", "status", "scored_by"]
    assert set(frame.label) <= {"neg", "pos"}


def test_parallel_workers_give_the_same_output(tiny_model, sample_dir, tmp_path):
    texts = pd.read_csv(sample_dir / "labelled.csv").txt.tolist()
    with Scorer.from_model(tiny_model, workers=1) as serial:
        expected = serial.predict(texts)
    with Scorer.from_model(tiny_model, workers=2) as parallel:
        parallel.segmenter.min_parallel_texts = 1
        got = parallel.predict(texts)
        assert parallel.segmenter._pool is not None
    pd.testing.assert_frame_equal(expected, got)


def test_large_files_start_nicer_workers_while_the_model_loads(tiny_model, sample_dir, tmp_path, monkeypatch):
    from sentiscore import pipeline
    from sentiscore.segment import ParallelSegmenter

    started = []
    real_start = ParallelSegmenter.start
    monkeypatch.setattr(ParallelSegmenter, "start", lambda self: (started.append((self.workers, self.nice)), real_start(self)))
    src = sample_dir / "reviews.csv"
    score_file(src, tmp_path / "small.parquet", model=tiny_model, config=ScoreConfig(workers=2, worker_nice=5))
    assert started == []  # below the size where workers are used: none started ahead
    monkeypatch.setattr(pipeline, "_START_WORKERS_BYTES", src.stat().st_size)
    score_file(src, tmp_path / "large.parquet", model=tiny_model, config=ScoreConfig(workers=2, worker_nice=5))
    assert started == [(2, 5)]
    score_file(src, tmp_path / "default.parquet", model=tiny_model, config=ScoreConfig(workers=2))
    assert started[-1] == (2, 10)  # DEFAULT_WORKER_NICE
    score_file(src, tmp_path / "small-chunks.parquet", model=tiny_model, config=ScoreConfig(workers=2, chunk_size=100))
    assert len(started) == 2  # chunks this small are segmented in this process: no workers to start
    frames = [pq.read_table(tmp_path / name).to_pandas() for name in ("small.parquet", "large.parquet", "default.parquet")]
    pd.testing.assert_frame_equal(frames[0], frames[1])
    pd.testing.assert_frame_equal(frames[0], frames[2])


def test_workers_started_early_stop_when_the_model_fails_to_load(tiny_model, monkeypatch):
    from sentiscore import pipeline
    from sentiscore.artifacts import read_card
    from sentiscore.errors import ModelError
    from sentiscore.segment import ParallelSegmenter

    pools = []
    real_start = ParallelSegmenter.start
    monkeypatch.setattr(ParallelSegmenter, "start", lambda self: (real_start(self), pools.append(self)))

    def broken(*args, **kwargs):
        raise ModelError("damaged")

    monkeypatch.setattr(pipeline, "load_model", broken)
    with pytest.raises(ModelError, match="damaged"):
        Scorer.from_card(read_card(tiny_model), workers=2, runtime="tensorflow", start_workers=True)
    assert len(pools) == 1 and pools[0]._pool is None  # started, then shut down: no stray processes


def test_worker_death_names_the_chunk_and_leaves_no_output(tiny_model, sample_dir, tmp_path):
    from sentiscore.errors import WorkerError
    from tests.test_segment import _die_in_worker

    out = tmp_path / "out.parquet"
    with Scorer.from_model(tiny_model, workers=2) as scorer:
        scorer.segmenter.min_parallel_texts = 1
        scorer.segmenter.worker_function = _die_in_worker
        with pytest.raises(WorkerError, match=r"chunk 1 \(input rows 1-100\): a segmentation worker process died"):
            score_file(sample_dir / "reviews.csv", out, config=ScoreConfig(chunk_size=100), scorer=scorer)
    assert list(tmp_path.iterdir()) == []


def test_a_five_megabyte_text_is_truncated_not_fatal(tiny_scorer, tmp_path):
    import time

    src = tmp_path / "huge.parquet"
    pq.write_table(pa.table({"txt": ["质量很好，" * 1_000_000, "不错"]}), src)
    started = time.perf_counter()
    frame, summary, _ = score_to_frame(tiny_scorer, src, tmp_path)
    assert frame.status.tolist() == ["truncated", "ok"] and frame.label.notna().all()
    assert time.perf_counter() - started < 60  # bounded: only max_chars characters are read


def test_non_chinese_text_is_scored(tiny_scorer):
    frame = tiny_scorer.predict(["This phone is great", "très bien", "12345"])
    assert frame.status.tolist() == ["ok", "ok", "ok"]
    assert set(frame.top_words[0]) <= {"this", "phone", "is", "great"}


def test_lists_in_the_text_column_are_not_text(tiny_scorer, tmp_path):
    src = tmp_path / "lists.parquet"
    pq.write_table(pa.table({"id": [1, 2], "txt": [["好", "评"], None]}), src)
    frame, summary, _ = score_to_frame(tiny_scorer, src, tmp_path)
    assert frame.status.tolist() == ["not_text", "not_text"] and frame.label.isna().all()
    assert summary.rows == 2


def test_another_jieba_fast_version_is_refused(tiny_model, tmp_path):
    import shutil

    from sentiscore.artifacts import write_manifest

    copy = tmp_path / "m"
    shutil.copytree(tiny_model, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["segmenter"]["version"] = "0.1"
    (copy / "meta.json").write_text(json.dumps(meta))
    write_manifest(copy)
    with pytest.raises(SettingsMismatchError, match="trained with jieba_fast 0.1 but .* is installed"):
        Scorer.from_model(copy, workers=1)


def test_zero_row_parquet_gives_a_valid_empty_output(tiny_scorer, tmp_path):
    src = tmp_path / "none.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.int64()), "txt": pa.array([], pa.string())}), src)
    frame, summary, out = score_to_frame(tiny_scorer, src, tmp_path)
    assert len(frame) == 0 and summary.rows == 0
    assert pq.read_schema(out).names == ["id", "txt"] + ADDED


def test_unwritable_output_folder_is_refused_before_any_work(tiny_scorer, sample_dir, tmp_path, monkeypatch):
    import os

    from sentiscore.errors import OutputError

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path) else real_access(path, mode))
    with pytest.raises(OutputError, match=f"cannot write to the folder {tmp_path} \\(permission denied\\)"):
        score_file(sample_dir / "reviews.csv", tmp_path / "out.parquet", scorer=tiny_scorer)


def test_padded_rows_bound_the_batch_shapes():
    from sentiscore.model import padded_rows

    assert [padded_rows(n, 256) for n in (1, 2, 3, 5, 128, 129, 255, 256)] == [1, 2, 4, 8, 128, 256, 256, 256]
    assert padded_rows(200, 100) == 200 and padded_rows(70, 100) == 100  # full batches run as they are
    assert len({padded_rows(n, 256) for n in range(1, 257)}) == 9


def test_padded_width_adds_at_most_a_quarter():
    from sentiscore.model import padded_width

    widths = [padded_width(w) for w in range(1, 2000)]
    assert all(w <= p <= max(w + 3, 1.25 * w) for w, p in zip(range(1, 2000), widths))
    assert [padded_width(w) for w in (1, 7, 8, 9, 100, 1536)] == [1, 7, 8, 10, 112, 1536]
    assert len(set(widths)) <= 45


def test_partial_batches_are_padded_to_few_shapes_with_the_same_results(tiny_model, sample_dir, monkeypatch):
    """The last batch of every chunk has a size of its own; running each as
    is kept a TensorFlow kernel state per shape and memory grew with the file."""
    texts = pd.read_csv(sample_dir / "reviews.csv").txt.tolist()
    with Scorer.from_model(tiny_model, workers=1, batch_size=16, runtime="tensorflow") as scorer:
        seen = []
        run = scorer.predictor._run
        monkeypatch.setattr(scorer.predictor, "_run", lambda feed: seen.append(next(iter(feed.values())).shape[0]) or run(feed))
        padded = scorer.predict(texts[:37])
        unpadded = []
        for text in texts[:37]:
            unpadded.append(scorer.predict([text]))
    assert set(seen) <= {1, 2, 4, 8, 16} and 37 % 16 not in seen
    np.testing.assert_allclose(padded.prob_正评, pd.concat(unpadded).prob_正评, rtol=1e-4, atol=1e-6)
    assert padded.top_words.apply(list).tolist() == pd.concat(unpadded).top_words.apply(list).tolist()


def test_tensorflow_out_of_memory_halves_the_batch(tiny_model, sample_dir, monkeypatch):
    import tensorflow as tf

    texts = pd.read_csv(sample_dir / "reviews.csv").txt.tolist()[:40]
    with Scorer.from_model(tiny_model, workers=1, batch_size=64, runtime="tensorflow") as scorer:
        expected = scorer.predict(texts)
        run = scorer.predictor._run
        tried = []

        def tight_memory(feed):
            rows = next(iter(feed.values())).shape[0]
            tried.append(rows)
            if rows > 8:
                raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor (simulated)")
            return run(feed)

        monkeypatch.setattr(scorer.predictor, "_run", tight_memory)
        halved = scorer.predict(texts)
    assert max(tried) > 8 and 8 in tried
    np.testing.assert_allclose(halved.prob_正评, expected.prob_正评, rtol=1e-4, atol=1e-6)
    assert halved.label.tolist() == expected.label.tolist()


def test_a_set_stop_event_stops_before_the_next_chunk_and_leaves_no_output(tiny_scorer, sample_dir, tmp_path):
    import signal

    from sentiscore.config import ScoreConfig
    from sentiscore.errors import RunStopped
    from sentiscore.pipeline import StopRequest, score_file

    stop = StopRequest()
    seen = []

    def progress(rows):  # the first chunk is written, then a stop is asked for
        seen.append(rows)
        stop.request(signal.SIGTERM)

    out = tmp_path / "out.parquet"
    with pytest.raises(RunStopped) as raised:
        score_file(sample_dir / "reviews.csv", out, config=ScoreConfig(chunk_size=50), scorer=tiny_scorer, progress=progress, stop=stop)
    assert raised.value.signum == signal.SIGTERM
    assert seen == [50] and not out.exists()
    # A plain threading.Event works too, and an unset one changes nothing.
    import threading

    summary = score_file(sample_dir / "reviews.csv", out, config=ScoreConfig(chunk_size=50), scorer=tiny_scorer, stop=threading.Event())
    assert summary.rows == 300


def test_the_run_plan_checks_every_input_once_for_both_engines(tiny_model):
    """plan_run holds the column rules that score_file and --engine ray share."""
    from sentiscore.artifacts import read_card
    from sentiscore.pipeline import plan_run

    card = read_card(tiny_model)
    plan = plan_run(card, [("a.csv", ["id", "txt"]), ("b.csv", ["txt", "id", "extra"])], ScoreConfig())
    assert plan.keep == ("id", "txt") and plan.added[0] == "label" and plan.card is card
    with pytest.raises(InputError, match="every input file needs it"):
        plan_run(card, [("a.csv", ["id", "txt"]), ("b.csv", ["id"])], ScoreConfig())
    with pytest.raises(InputError, match="b.csv lacks column"):
        plan_run(card, [("a.csv", ["id", "txt"]), ("b.csv", ["txt"])], ScoreConfig())
    assert plan_run(card, [("a.csv", ["id", "txt"]), ("b.csv", ["txt"])], ScoreConfig(keep_columns=("txt",))).keep == ("txt",)
    with pytest.raises(InputError, match="--prefix"):
        plan_run(card, [("a.csv", ["txt", "label"])], ScoreConfig())
    assert "ss_label" in plan_run(card, [("a.csv", ["txt", "label"])], ScoreConfig(), prefix="ss_").added
    with pytest.raises(SettingsMismatchError, match="maxlen"):
        plan_run(card, [("a.csv", ["txt"])], ScoreConfig(), expect={"maxlen": card.maxlen + 1})


def test_stages_pass_forward_only_what_the_next_one_needs(tiny_scorer):
    """preprocess → forward → postprocess; forward(explain=False) gives the
    same probabilities without the per-token work."""
    from sentiscore.pipeline import Forwarded, Prepared

    texts = ["质量很好，物流也快", "质量很好，物流也快", "", "太差了"]
    prepared = tiny_scorer.preprocess(texts)
    assert isinstance(prepared, Prepared) and len(prepared.unique_texts) == 2
    full, quick = tiny_scorer.forward(prepared), tiny_scorer.forward(prepared, explain=False)
    assert isinstance(full, Forwarded)
    np.testing.assert_allclose(full.probs, quick.probs)
    assert np.abs(full.contribution).sum() > 0 and not quick.contribution.any()
    columns = dict(tiny_scorer.postprocess(prepared, full))
    assert columns["status"].to_pylist() == ["ok", "ok", "empty", "ok"]


def test_long_texts_go_in_smaller_batches_of_bounded_tokens(tiny_scorer):
    """Every batch holds at most batch_size × 32 padded tokens (or one text):
    peak memory is that of the largest such batch, whatever the file."""
    from sentiscore.pipeline import _TOKENS_PER_ROW_BUDGET, _WIDTH_STEP

    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(0, 20, 500), rng.integers(20, tiny_scorer.maxlen + 50, 300)])
    batches = list(tiny_scorer._batches(lengths))
    budget = tiny_scorer.batch_size * _TOKENS_PER_ROW_BUDGET
    assert sorted(np.concatenate(batches).tolist()) == list(range(lengths.size))
    for batch in batches:
        width = min(-(-max(int(lengths[batch].max()), 1) // _WIDTH_STEP) * _WIDTH_STEP, tiny_scorer.maxlen)
        assert batch.size <= tiny_scorer.batch_size
        assert batch.size * width <= budget or batch.size == 1
    sizes = [b.size for b in batches[:-1]]
    assert min(sizes) < tiny_scorer.batch_size == max(sizes)  # long texts did get smaller batches


@pytest.mark.parametrize("model_fixture, chunk_size, parts", [
    ("tiny_model", None, 1),  # 10,000 rows a chunk
    ("tiny_elmo_model", None, 2),  # 5,000 for a model with a biLM
    ("tiny_elmo_model", 10_000, 1),  # the user's choice wins
])
def test_chunk_rows_default_to_the_models_own(model_fixture, chunk_size, parts, request, sample_dir, tmp_path):
    frame = pd.read_csv(sample_dir / "reviews.csv", dtype=str)
    src = tmp_path / "rows.parquet"
    pd.concat([frame] * 17, ignore_index=True).head(5_001).to_parquet(src)  # repeated texts: each scored once
    out = tmp_path / "parts"
    score_file(src, out, model=request.getfixturevalue(model_fixture),
               config=ScoreConfig(workers=1, chunk_size=chunk_size, resume=True, quiet=True))
    assert len(list(out.glob("part-*.parquet"))) == parts
    assert json.loads((out / "_sentiscore_run.json").read_text())["run"]["options"]["chunk_size"] == (5_000 if parts == 2 else 10_000)


def test_evaluate_reads_every_row_in_an_elmo_models_chunks(tiny_elmo_model, sample_dir, monkeypatch):
    """evaluate opens DATA before the model loads (to check its columns) and
    again in the model's own chunk size: every labelled row counted once."""
    from sentiscore import evaluate

    monkeypatch.setattr("sentiscore.pipeline.ELMO_CHUNK_ROWS", 128)
    labelled = pd.read_csv(sample_dir / "labelled.csv", dtype=str)
    report = evaluate.evaluate(sample_dir / "labelled.csv", model=tiny_elmo_model, workers=1)
    assert report["rows"] == labelled.label.notna().sum() > 128
