"""The scoring cascade: fitting its threshold, the NumPy copy of the n-gram
path, and scoring with it (which rows skip the deep path, what they get)."""

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from sentiscore.artifacts import add_card_section, load_model_dir, read_card, verify
from sentiscore.calibration import softmax
from sentiscore import cascade
from sentiscore.cascade import CascadeConfig, fit_cascade, split_rows, text_slices, wide_logits_flat, wide_norms_flat
from sentiscore.config import ScoreConfig
from sentiscore.errors import ModelError, TrainingError
from sentiscore.pipeline import Scorer, score_file
from sentiscore.train import cascade_on, validation_rows_of


def _logits_with_confidence(confidence: np.ndarray, label: np.ndarray) -> np.ndarray:
    """3-class logits whose softmax puts ``confidence`` on ``label`` and splits the rest."""
    logits = np.zeros((confidence.size, 3))
    rest = (1 - confidence) / 2
    logits[:] = np.log(rest)[:, None]
    logits[np.arange(confidence.size), label] = np.log(confidence)
    return logits


def test_threshold_is_the_lowest_that_keeps_label_changes_within_budget():
    rng = np.random.default_rng(0)
    n = 1000
    confidence = np.sort(rng.uniform(0.34, 0.999, n))[::-1]
    full = rng.integers(0, 3, n)
    wide = full.copy()
    wide[600] = (full[600] + 1) % 3  # the 601st most confident row disagrees with the whole model
    logits = _logits_with_confidence(confidence, wide)
    cascade = fit_cascade(logits, full, wide, max_label_change=0.0)
    probs = softmax(logits / cascade.wide_temperature)
    skipped = probs.max(axis=1) >= cascade.threshold
    assert skipped.sum() == 600 and not skipped[600]
    assert (probs.argmax(axis=1)[skipped] == full[skipped]).all()
    assert cascade.skip_share == pytest.approx(0.6) and cascade.label_change == 0 and cascade.rows == n
    # A budget of one change lets the threshold go down to the next disagreement (none): to the 0.8 floor.
    looser = fit_cascade(logits, full, wide, max_label_change=1 / n)
    assert looser.threshold >= 0.8 and looser.skip_share < 1 and looser.skip_share > cascade.skip_share and looser.label_change == pytest.approx(1 / n)


def test_tied_confidences_are_skipped_together_or_not_at_all():
    confidence = np.array([0.99, 0.9, 0.9, 0.8])
    full = np.array([0, 1, 1, 2])
    wide = np.array([0, 1, 2, 2])  # one of the two tied rows disagrees
    cascade = fit_cascade(_logits_with_confidence(confidence, wide), full, wide, max_label_change=0.0)
    assert cascade.skip_share == pytest.approx(0.25)


def test_a_higher_floor_skips_fewer_rows_and_is_recorded():
    rng = np.random.default_rng(2)
    confidence = rng.uniform(0.34, 0.999, 500)
    wide = rng.integers(0, 3, 500)
    logits = _logits_with_confidence(confidence, wide)
    low, high = (fit_cascade(logits, wide, wide, min_threshold=floor) for floor in (0.8, 0.95))
    assert high.threshold >= 0.95 and high.skip_share < low.skip_share and high.min_threshold == 0.95
    assert CascadeConfig.from_dict(high.to_dict()) == high
    legacy = {k: v for k, v in low.to_dict().items() if k != "min_threshold"}  # cards written before the field
    assert CascadeConfig.from_dict(legacy).min_threshold == 0.8


def test_no_cascade_when_even_the_most_confident_rows_disagree():
    confidence = np.array([0.99, 0.98, 0.6])
    wide = np.array([0, 1, 2])
    assert fit_cascade(_logits_with_confidence(confidence, wide), (wide + 1) % 3, wide, max_label_change=0.0) is None
    assert fit_cascade(np.zeros((0, 3)), np.zeros(0, int), np.zeros(0, int)) is None


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_idf_model"])
def test_numpy_wide_logits_equal_the_keras_layer(fixture, request):
    loaded = load_model_dir(request.getfixturevalue(fixture))
    layer = loaded.keras_model.get_layer("wide_logits")
    table, bias, *idf = layer.get_weights()
    ids = np.random.default_rng(1).integers(1, table.shape[0], (5, 9)).astype(np.int32)
    ids[0, 4:] = 0  # padding
    ids[1, :] = 0  # a row with no n-grams
    if idf:  # idf weighting: distinct ids per row, some of them buckets the training rows never filled (idf 0)
        ids[2] = np.flatnonzero(idf[0] == 0)[1:10]
        assert (idf[0] > 0).any() and (idf[0][1:] == 0).any()
    flat, counts = ids[ids != 0], (ids != 0).sum(axis=1)  # ids are packed left, as the hasher gives them
    norms = wide_norms_flat(flat, counts, idf[0] if idf else None)
    np.testing.assert_allclose(wide_logits_flat(table, bias, flat, counts, norms), np.asarray(layer(ids)), rtol=1e-5, atol=1e-6)


def _with_cascade(tiny_model, tmp_path, threshold: float):
    """A copy of the tiny model with a cascade at this threshold."""
    target = tmp_path / f"cascade-{threshold}"
    shutil.copytree(tiny_model, target)
    add_card_section(target, "cascade", CascadeConfig(threshold, 1.0, 0.0005, 0.5, 0.0, 10).to_dict())
    return target


def _score_table(model, src, out, cascade=True):
    with Scorer.from_model(model, workers=1, batch_size=16, top_k=3, cascade=cascade) as scorer:
        score_file(src, out, config=ScoreConfig(), scorer=scorer)
    return pq.read_table(out)


def _score(model, src, out, cascade=True):
    return _score_table(model, src, out, cascade).to_pandas()


def test_cascade_rows_carry_the_ngram_path_and_others_the_whole_model(tiny_model, sample_dir, tmp_path):
    src = sample_dir / "reviews.csv"
    full = _score(tiny_model, src, tmp_path / "full.parquet", cascade=False)
    # A threshold at the median n-gram confidence of the sample: some rows each way, whatever the tiny model learned.
    with Scorer.from_model(tiny_model, workers=1, batch_size=16, cascade=False) as scorer:
        texts = pd.read_csv(src).txt.tolist()
        prepared = scorer.preprocess(texts)
        parts = scorer.forward(prepared, explain=False, logit_parts=True).logit_parts["wide"]
    threshold = float(np.median(softmax(parts).max(axis=1)))
    model = _with_cascade(tiny_model, tmp_path, threshold)
    cascaded = _score(model, src, tmp_path / "cascade.parquet")
    ok = full.status.isin(["ok", "truncated"])
    assert (full.scored_by[ok] == "full").all() and full.scored_by[~ok].isna().all()
    by_ngrams = cascaded.scored_by == "ngrams"
    assert 0 < by_ngrams.sum() < ok.sum() and cascaded.scored_by[~ok].isna().all()
    assert (cascaded.confidence[by_ngrams] >= threshold - 1e-6).all()
    # Rows the deep path scored are scored exactly as without the cascade.
    deep = cascaded.scored_by == "full"
    prob_cols = [c for c in full.columns if c.startswith("prob_")]
    np.testing.assert_allclose(cascaded.loc[deep, prob_cols].to_numpy(float), full.loc[deep, prob_cols].to_numpy(float), atol=1e-6)
    assert cascaded.label[deep].tolist() == full.label[deep].tolist()
    # Skipped rows' probabilities are the n-gram path's: the same label as its logits give.
    row_texts = cascaded.txt[by_ngrams].tolist()
    index = {t: i for i, t in enumerate(prepared.unique_texts)}
    wide_label = softmax(parts[[index[t] for t in row_texts]]).argmax(axis=1)
    names = [name for _, name in read_card(model).labels]
    assert cascaded.label[by_ngrams].tolist() == [names[i] for i in wide_label]
    # Their top words are real tokens of their text with positive weight (n-gram weights for the label).
    for text, words, weights in zip(row_texts, cascaded.top_words[by_ngrams], cascaded.top_weights[by_ngrams]):
        assert all(w in text.lower() for w in words) and all(x > 0 for x in weights)


def test_no_cascade_flag_and_an_unreachable_threshold_score_every_row_in_full(tiny_model, sample_dir, tmp_path):
    src = sample_dir / "reviews.csv"
    never = _with_cascade(tiny_model, tmp_path, 1.01)
    always = _with_cascade(tiny_model, tmp_path, 0.0)
    full = _score_table(tiny_model, src, tmp_path / "full.parquet", cascade=False)
    assert _score_table(never, src, tmp_path / "never.parquet").equals(full)
    assert _score_table(always, src, tmp_path / "off.parquet", cascade=False).equals(full)
    on = _score(always, src, tmp_path / "on.parquet")
    ok = on.status.isin(["ok", "truncated"])
    assert (on.scored_by[ok] == "ngrams").all()


def test_training_fits_a_cascade_within_its_budget(tiny_model, sample_dir):
    card = read_card(tiny_model)
    texts, y = validation_rows_of(card, sample_dir / "labelled.csv")
    assert len(texts) == card.data["val_rows"]
    with Scorer.from_card(card, workers=1, cascade=False) as scorer:
        refit = cascade_on(scorer, texts, y)
        loose = cascade_on(scorer, texts, y, max_label_change=1.0)
    stored = card.raw.get("cascade")
    assert (refit is None and stored is None) or refit.to_dict() == stored
    # With every label change allowed the threshold falls to the floor, or the lowest confidence above it.
    assert loose is None or (loose.threshold >= 0.8 and loose.label_change <= 1.0)


def test_validation_rows_of_refuses_another_file(tiny_model, sample_dir, tmp_path):
    other = tmp_path / "other.csv"
    frame = pd.read_csv(sample_dir / "labelled.csv", dtype=str)
    frame.iloc[:-1].to_csv(other, index=False)
    with pytest.raises(TrainingError, match="sha256"):
        validation_rows_of(read_card(tiny_model), other)


def test_adding_a_card_section_renews_the_manifest_and_refuses_a_damaged_model(tiny_model, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(tiny_model, target)
    before = read_card(target).hash
    add_card_section(target, "cascade", CascadeConfig(0.9, 1.0, 0.0005, 0.5, 0.0, 10).to_dict())
    card = read_card(target)
    assert card.hash != before and card.cascade.threshold == 0.9
    verify(target)
    (target / "vocab.txt").write_text("tampered", encoding="utf-8")
    with pytest.raises(ModelError):
        add_card_section(target, "cascade", {})


def test_a_malformed_cascade_is_refused_when_the_card_is_read(tiny_model, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(tiny_model, target)
    add_card_section(target, "cascade", {"threshold": 0.9})
    with pytest.raises(ModelError, match="malformed"):
        read_card(target)


def test_split_rows_uses_the_wide_temperature():
    logits = np.array([[2.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    sharp = CascadeConfig(0.7, 0.5, 0.0005, 0.5, 0.0, 2)
    decided, probs = split_rows(logits, sharp)
    assert decided.tolist() == [True, False]
    np.testing.assert_allclose(probs, softmax(logits / 0.5))
    assert json.loads(json.dumps(sharp.to_dict())) == sharp.to_dict()


@pytest.mark.parametrize("weighted", [False, True])
def test_flat_wide_logits_equal_a_keras_layer_with_the_same_weights(weighted):
    from sentiscore.model import import_tensorflow

    import_tensorflow()
    from sentiscore.layers import HashedNgramLinear

    rng = np.random.default_rng(3)
    table, bias = rng.normal(size=(50, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    idf = rng.uniform(0, 3, 50).astype(np.float32) if weighted else None
    counts = np.array([4, 0, 1, 7])  # a text with no n-grams too
    flat = rng.integers(1, 50, counts.sum()).astype(np.int32)
    padded = np.zeros((counts.size, counts.max()), np.int32)
    for i, start in enumerate(np.cumsum(counts) - counts):
        padded[i, : counts[i]] = flat[start : start + counts[i]]
    norms = wide_norms_flat(flat, counts, idf)
    weights = (idf[padded] if weighted else np.ones(padded.shape, np.float32)) * (padded != 0)
    expected_norms = np.sqrt((weights**2).sum(axis=1))
    np.testing.assert_allclose(norms, np.maximum(expected_norms, 1e-6) if weighted else np.maximum(expected_norms, 1), rtol=1e-6)
    layer = HashedNgramLinear(50, 3, weighting="idf" if weighted else "count")
    layer(padded)
    layer.set_weights([table, bias] + ([idf] if weighted else []))
    np.testing.assert_allclose(wide_logits_flat(table, bias, flat, counts, norms), np.asarray(layer(padded)), rtol=1e-5, atol=1e-6)


def test_text_slices_cover_every_text_whole_and_bound_the_ids_gathered():
    counts = np.array([3, 0, 5, 2, 9, 0, 1, 4])
    slices = list(text_slices(counts, max_ids=6))
    ends = np.cumsum(counts)
    assert [s.start for s, _ in slices] == [0] + [s.stop for s, _ in slices][:-1] and slices[-1][0].stop == counts.size
    for texts, ids in slices:
        assert ids.start == (ends[texts.start - 1] if texts.start else 0) and ids.stop == ends[texts.stop - 1]
        assert ids.stop - ids.start <= 6 or texts.stop - texts.start == 1  # a text over the bound comes alone
    assert list(text_slices(np.zeros(0, np.int64))) == []


@pytest.mark.parametrize("weighted", [False, True])
def test_wide_logits_gathered_in_slices_equal_one_gather(weighted, monkeypatch):
    """A chunk's n-grams are gathered a slice of texts at a time (bounded
    memory); the sums must not change, bit for bit."""
    rng = np.random.default_rng(5)
    table, bias = rng.normal(size=(200, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    idf = rng.uniform(0, 3, 200).astype(np.float32) if weighted else None
    counts = rng.integers(0, 40, 300)
    flat = rng.integers(1, 200, counts.sum()).astype(np.int32)
    whole_norms = wide_norms_flat(flat, counts, idf)
    whole = wide_logits_flat(table, bias, flat, counts, whole_norms)
    monkeypatch.setattr(cascade, "SLICE_IDS", 50)
    assert len(list(text_slices(counts))) > 10
    sliced_norms = wide_norms_flat(flat, counts, idf)
    np.testing.assert_array_equal(sliced_norms, whole_norms)
    np.testing.assert_array_equal(wide_logits_flat(table, bias, flat, counts, sliced_norms), whole)


def test_ngram_rows_weigh_each_word_by_its_own_ngrams(tiny_model, sample_dir, tmp_path):
    """A row the n-gram path decides explains itself by each token's own
    n-grams: the summed table weights for the given label, over the text's
    norm and the cascade's temperature, added up over the word's occurrences."""
    model = _with_cascade(tiny_model, tmp_path, 0.0)  # every row the n-gram path decides
    scored = _score(model, sample_dir / "reviews.csv", tmp_path / "out.parquet")
    scored = scored[scored.scored_by == "ngrams"]
    assert len(scored) > 10
    names = [name for _, name in read_card(model).labels]
    with Scorer.from_model(model, workers=1, cascade=False) as scorer:
        table, idf, hasher = scorer.predictor.wide_table, scorer.predictor.wide_idf, scorer.hasher
        prepared = scorer.preprocess(scored.txt.tolist())
        segmented = prepared.segmentation()
    checked = 0
    for row, (text, label, words, weights) in enumerate(zip(scored.txt, scored.label, scored.top_words, scored.top_weights)):
        norm = wide_norms_flat(*hasher.transform_flat([text]), idf)[0]
        column = names.index(label)
        expected: dict[str, float] = {}
        for token in segmented.tokens_of(int(prepared.row_to_unique[row])):
            expected[token] = expected.get(token, 0.0) + float(table[hasher.transform_flat([token])[0], column].sum()) / norm
        ranked = sorted((w for w in expected.items() if w[1] > 0), key=lambda w: (-w[1], w[0]))[:3]
        assert list(words) == [w for w, _ in ranked]
        np.testing.assert_allclose(weights, [x for _, x in ranked], atol=1e-4)
        checked += len(words)
    assert checked > 10


def test_token_weights_do_not_depend_on_how_many_tokens_are_hashed_at_once(tiny_model, sample_dir, tmp_path, monkeypatch):
    """Distinct tokens are hashed in slices bounded by characters (one token
    can be thousands of letters long); the slices must not change a weight."""
    import sentiscore.pipeline as pipeline

    model = _with_cascade(tiny_model, tmp_path, 0.9)
    whole = _score(model, sample_dir / "reviews.csv", tmp_path / "whole.parquet")
    monkeypatch.setattr(pipeline, "_TOKEN_CHARS_PER_SLICE", 5)
    sliced = _score(model, sample_dir / "reviews.csv", tmp_path / "sliced.parquet")
    assert (whole.scored_by == "ngrams").any() and (whole.scored_by == "full").any()
    assert [list(w) for w in whole.top_words] == [list(w) for w in sliced.top_words]
    np.testing.assert_array_equal(np.concatenate([np.asarray(w, float) for w in whole.top_weights]),
                                  np.concatenate([np.asarray(w, float) for w in sliced.top_weights]))
