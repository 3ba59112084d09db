"""score --adapt-domain: self-training a char n-gram model on the scored file
(sentiscore/adapt.py) and averaging it with the model's probabilities."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sentiscore.adapt import FileSample, adapted, confident_rows, fit_file_model
from sentiscore.cli import cli
from sentiscore.errors import UsageError
from sentiscore.pipeline import Forwarded
from sentiscore.segment import SegmentedBatch


def test_the_file_sample_is_uniform_bounded_in_file_order_and_repeatable():
    def drawn(seed):
        sample = FileSample(size=500, seed=seed)
        for start in range(0, 20_000, 1_000):  # twenty chunks
            ids = np.arange(start, start + 1_000)
            sample.add([f"t{i}" for i in ids], np.tile(ids[:, None].astype(np.float32), (1, 3)))
        return sample

    sample = drawn(0)
    ids = sample.probs[:, 0].astype(int)
    assert ids.size == 500 and sample.rows_seen == 20_000
    assert list(sample.texts) == [f"t{i}" for i in ids]  # texts stay with their probabilities
    assert np.all(np.diff(ids) > 0)  # in file order
    # Uniform over the file: each twentieth holds about 25 rows, not the last chunks' rows.
    per_chunk = np.bincount(ids // 1_000, minlength=20)
    assert per_chunk.min() >= 8 and per_chunk.max() <= 45, per_chunk
    np.testing.assert_array_equal(drawn(0).probs, sample.probs)
    assert not np.array_equal(drawn(1).probs, sample.probs)
    small = FileSample(size=500)
    small.add(["a", "b"], np.eye(3, dtype=np.float32)[:2])
    assert list(small.texts) == ["a", "b"]
    texts_only = FileSample(size=2)  # a first pass that reads texts and scores only the sample
    texts_only.add(["a", "b", "c"])
    texts_only.add(["d"])
    assert texts_only.probs is None and len(texts_only.texts) == 2 and texts_only.rows_seen == 4


def test_confident_rows_are_each_labels_surer_half_and_skip_labels_too_rare():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.55, 1.0, 300)  # above 0.5: the label stays the argmax
    label = np.r_[np.zeros(150, int), np.full(140, 2), np.ones(10, int)]  # label 1: only 10 rows
    probs = np.full((300, 3), 0.0)
    probs[np.arange(300), label] = confidence
    probs[np.arange(300), (label + 1) % 3] = 1 - confidence
    chosen = confident_rows(probs, share=0.5, min_rows=20)
    for value in (0, 2):
        rows = label == value
        assert abs(chosen[rows].sum() - rows.sum() / 2) <= 1
        assert confidence[rows & chosen].min() >= confidence[rows & ~chosen].max()
    assert not chosen[label == 1].any()


def _file(domain_word="送餐慢", n=200):
    """A file whose model knows 差评/好评 but not the file's own word for a
    bad delivery, which the confident negative rows also hold."""
    texts, probs = [], []
    for i in range(n):
        texts.append(f"差评 {domain_word} 第{i}单")
        probs.append([0.9, 0.02, 0.08])
        texts.append(f"好评 很快 第{i}单")
        probs.append([0.08, 0.02, 0.9])
        texts.append(f"一般 第{i}单")
        probs.append([0.2, 0.6, 0.2])
    return np.array(texts, object), np.array(probs, np.float32)


def _forwarded(texts, probs):
    tokens = [t.split() for t in texts]
    segmented = SegmentedBatch([w for ws in tokens for w in ws], np.array([len(ws) for ws in tokens], np.int32),
                               np.zeros(len(texts), bool))
    contribution = np.full(len(segmented.tokens), 0.1, np.float32)
    return Forwarded(segmented, probs, np.zeros_like(contribution), contribution)


def test_the_file_model_learns_the_files_own_word_and_a_row_it_overturns_is_explained_by_it():
    texts, probs = _file()
    sample = FileSample()
    sample.add(texts, probs)
    file_model = fit_file_model(sample.texts, sample.probs, sample.rows_seen)
    assert file_model is not None and set(file_model.label_rows) == {0, 1, 2}
    # Rows the model leans positive on, holding only the file's word for a bad delivery.
    unsure = np.array(["送餐慢 送餐慢", "好评 很快", "送餐慢"], object)
    model_probs = np.array([[0.4, 0.15, 0.45], [0.1, 0.1, 0.8], [0.42, 0.1, 0.48]], np.float32)
    out = adapted(_forwarded(unsure, model_probs), list(unsure), file_model)
    np.testing.assert_allclose(out.probs.sum(axis=1), 1, atol=1e-5)
    assert list(out.probs.argmax(axis=1)) == [0, 2, 0]
    assert list(out.overturned) == [True, False, True]
    shares = out.contribution
    assert shares[0] > 0 and shares[1] > 0  # 送餐慢 supports 负评 by the file model's weights
    np.testing.assert_array_equal(shares[2:4], np.float32(0.1))  # the row kept its label and its own explanation


def test_a_label_the_file_model_was_not_fitted_on_keeps_the_models_probability():
    texts, probs = _file()
    keep = probs.argmax(axis=1) != 1
    texts, probs = texts[keep], probs[keep]  # no confident 中评 rows at all
    sample = FileSample()
    sample.add(texts, probs)
    file_model = fit_file_model(sample.texts, sample.probs, sample.rows_seen)
    assert set(file_model.label_rows) == {0, 2}
    model_probs = np.array([[0.3, 0.4, 0.3], [0.5, 0.3, 0.2]], np.float32)
    blended = file_model.blend(model_probs, ["差评 送餐慢", "好评 很快"])
    np.testing.assert_allclose(blended[:, 1], model_probs[:, 1])  # 中评 untouched
    np.testing.assert_allclose(blended.sum(axis=1), 1, atol=1e-6)
    assert blended[0, 0] > model_probs[0, 0] and blended[1, 2] > model_probs[1, 2]


def test_no_file_model_where_only_one_label_has_confident_rows():
    sample = FileSample()
    sample.add([f"好评 {i}" for i in range(100)], np.tile(np.array([[0.1, 0.1, 0.8]], np.float32), (100, 1)))
    assert fit_file_model(sample.texts, sample.probs, sample.rows_seen) is None
    assert fit_file_model(np.zeros(0, object), np.zeros((0, 3), np.float32), 0) is None  # an empty file


def _score(args):
    return CliRunner().invoke(cli, ["score", *map(str, args), "--workers", "1"])


def test_score_adapt_domain_says_what_it_fitted_marks_overturned_rows_and_repeats_exactly(tiny_model, sample_dir, tmp_path):
    plain, first, second = tmp_path / "plain.parquet", tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert _score([sample_dir / "reviews.csv", plain, "--model", tiny_model]).exit_code == 0
    result = _score([sample_dir / "reviews.csv", first, "--model", tiny_model, "--adapt-domain"])
    assert result.exit_code == 0, result.output
    line = pq.read_schema(first).metadata[b"sentiscore.adapted_domain"].decode()
    assert "adapted to the file: " + line in result.stderr
    assert line.startswith("self-trained char 1-3-gram model, weight 0.5, on ") and "of a 300-row sample of 300 rows" in line
    assert _score([sample_dir / "reviews.csv", second, "--model", tiny_model, "--adapt-domain"]).exit_code == 0
    a, b, before = pd.read_parquet(first), pd.read_parquet(second), pd.read_parquet(plain)
    pd.testing.assert_frame_equal(a, b)  # a deterministic fit: the same file gives the same output
    probs = [c for c in a.columns if c.startswith("prob_")]
    assert np.abs(a[probs].to_numpy() - before[probs].to_numpy()).max() > 1e-3
    turned = a["scored_by"] == "file"
    assert (turned == (a["label"] != before["label"])).all()  # exactly the rows whose label changed
    # A row that kept its label keeps the model's explanation; one overturned is explained by its own words.
    assert (a.loc[~turned, "top_words"].map(list) == before.loc[~turned, "top_words"].map(list)).all()
    texts = pd.read_csv(sample_dir / "reviews.csv")["txt"]
    assert all(all(word in texts[i] for word in words) for i, words in a.loc[turned, "top_words"].items())


def test_adapt_domain_needs_a_file_not_stdin(tiny_model, tmp_path):
    result = _score(["-", tmp_path / "o.parquet", "--model", tiny_model, "--input-format", "csv", "--adapt-domain"])
    assert result.exit_code == 2 and "--adapt-domain reads the input twice" in result.output


def test_the_sample_depends_on_the_rows_places_not_on_the_order_they_arrive_in():
    """The Ray engine's read tasks hand the driver blocks of several files in
    any order; its sample must be the one a reader in order draws (and, for
    one file, the local engine's)."""
    rng = np.random.default_rng(5)
    sizes = [3_000, 1_200, 2_500]  # three files
    places = [(f, r) for f, n in enumerate(sizes) for r in range(n)]
    in_order = FileSample(size=700)
    for f, n in enumerate(sizes):
        for start in range(0, n, 400):
            rows = np.arange(start, min(start + 400, n))
            in_order.add([f"{f}:{r}" for r in rows], files=np.full(rows.size, f), rows=rows)
    shuffled = FileSample(size=700)
    order = rng.permutation(len(places))
    for block in np.array_split(order, 23):  # blocks mixing files, rows out of order
        shuffled.add([f"{places[i][0]}:{places[i][1]}" for i in block],
                     files=[places[i][0] for i in block], rows=[places[i][1] for i in block])
    assert list(shuffled.texts) == list(in_order.texts) and shuffled.rows_seen == in_order.rows_seen == sum(sizes)
    as_arrow = FileSample(size=700)  # Arrow strings, as the engines pass them: only rows that can enter become Python's
    for block in np.array_split(order, 23):
        as_arrow.add(pa.array([f"{places[i][0]}:{places[i][1]}" for i in block]),
                     files=[places[i][0] for i in block], rows=[places[i][1] for i in block])
    assert list(as_arrow.texts) == list(in_order.texts) and as_arrow.rows_seen == sum(sizes)
    kept = [tuple(map(int, t.split(":"))) for t in in_order.texts]
    assert kept == sorted(kept)  # input order
    per_file = np.bincount([f for f, _ in kept], minlength=3)
    assert all(abs(per_file[f] / 700 - sizes[f] / sum(sizes)) < 0.06 for f in range(3)), per_file  # uniform over the input
    one_file = FileSample(size=700)  # file 0 read in order without places: the same rows of it
    for start in range(0, 3_000, 1_000):
        one_file.add([f"0:{r}" for r in range(start, start + 1_000)])
    assert set(one_file.texts) >= {t for t in in_order.texts if t.startswith("0:")}


def test_evaluate_measures_adapt_domain_and_leaves_the_scorer_as_it_was(tiny_model, sample_dir):
    from sentiscore.evaluate import evaluate, format_report
    from sentiscore.pipeline import Scorer

    with Scorer.from_model(tiny_model, workers=1) as scorer:
        plain = evaluate(sample_dir / "labelled.csv", scorer=scorer)
        result = evaluate(sample_dir / "labelled.csv", scorer=scorer, adapt_domain=True)
        assert scorer.file_model is None and scorer.prior_shift is None
        again = evaluate(sample_dir / "labelled.csv", scorer=scorer)
    assert "adapted_domain" not in plain and result["adapted_domain"].startswith("self-trained")
    assert "adapted to the file: self-trained" in format_report(result)
    assert result["rows"] == plain["rows"] and again["macro_f1"] == plain["macro_f1"]


def test_an_ensemble_adapts_its_averaged_probabilities(tiny_model, tiny_idf_model, sample_dir, tmp_path):
    from sentiscore.ensemble import combine

    pair = combine([tiny_model, tiny_idf_model], tmp_path / "pair", name="tiny-pair")
    plain, out = tmp_path / "plain.parquet", tmp_path / "adapted.parquet"
    assert _score([sample_dir / "reviews.csv", plain, "--model", pair]).exit_code == 0
    result = _score([sample_dir / "reviews.csv", out, "--model", pair, "--adapt-domain"])
    assert result.exit_code == 0, result.output
    assert b"sentiscore.adapted_domain" in pq.read_schema(out).metadata
    a, before = pd.read_parquet(out), pd.read_parquet(plain)
    assert ((a["scored_by"] == "file") == (a["label"] != before["label"])).all()


def test_a_resumed_adapt_domain_run_refits_the_same_file_model_and_refuses_a_run_without_it(tiny_model, sample_dir, tmp_path):
    from sentiscore.config import ScoreConfig
    from sentiscore.errors import OutputError
    from .test_resume import read_parts
    from sentiscore.pipeline import score_file

    src, out, whole = sample_dir / "reviews.csv", tmp_path / "scored", tmp_path / "whole.parquet"
    config = ScoreConfig(chunk_size=100, resume=True, workers=1, adapt_domain=True)
    score_file(src, out, model=tiny_model, config=config)
    (out / "part-00001.parquet").unlink()  # as if the run had stopped there
    (out / "_SUCCESS").unlink()
    with pytest.raises(OutputError, match=r"holds parts of another run \(options differ\)"):
        score_file(src, out, model=tiny_model, config=ScoreConfig(chunk_size=100, resume=True, workers=1))
    assert score_file(src, out, model=tiny_model, config=config).rows == 300
    score_file(src, whole, model=tiny_model, config=ScoreConfig(chunk_size=100, workers=1, adapt_domain=True))
    pd.testing.assert_frame_equal(read_parts(out), pq.read_table(whole).to_pandas())


def test_a_file_too_small_to_teach_anything_is_scored_as_it_is_and_says_so(tiny_model, tmp_path):
    src = tmp_path / "few.csv"
    pd.DataFrame({"txt": ["质量很好，物流也快", "太差了，不会再买", "一般般吧", "", None]}).to_csv(src, index=False)
    plain, out = tmp_path / "plain.parquet", tmp_path / "adapted.parquet"
    assert _score([src, plain, "--model", tiny_model]).exit_code == 0
    result = _score([src, out, "--model", tiny_model, "--adapt-domain"])
    assert result.exit_code == 0, result.output
    line = pq.read_schema(out).metadata[b"sentiscore.adapted_domain"].decode()
    assert line == "no: fewer than two labels had enough confident rows in the file"
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(plain))
