"""Prior adaptation: BBSE and EM estimates of a file's class priors, and
scoring under adapted or given priors."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
from click.testing import CliRunner

from sentiscore.calibration import (adapt_priors, black_box_shift_priors, joint_confusion, prior_log_shift, share_matching_shift,
                                    shift_priors)
from sentiscore.cli import cli


def _posteriors(prior, n, rng):
    """Texts drawn with class prior ``prior`` from three 1-d Gaussians, and
    the exact posteriors a calibrated model trained at prior (1/3, 1/3, 1/3)
    would give them."""
    means = np.array([-2.0, 0.0, 2.0])
    y = rng.choice(3, size=n, p=prior)
    x = rng.normal(means[y], 1.0)
    likelihood = np.exp(-0.5 * (x[:, None] - means[None, :]) ** 2)
    return likelihood / likelihood.sum(axis=1, keepdims=True), y


def test_em_recovers_a_shifted_prior():
    rng = np.random.default_rng(0)
    true = np.array([0.15, 0.7, 0.15])
    probs, _ = _posteriors(true, 20_000, rng)
    assert abs(probs.mean(axis=0)[1] - 0.7) > 0.1  # the raw mean posterior is far off
    estimate = adapt_priors(probs, [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(estimate, true, atol=0.02)


def test_adapted_posteriors_win_accuracy_under_shift():
    rng = np.random.default_rng(1)
    probs, y = _posteriors(np.array([0.05, 0.1, 0.85]), 20_000, rng)
    reference = [1 / 3, 1 / 3, 1 / 3]
    adapted = shift_priors(probs, prior_log_shift(adapt_priors(probs, reference), reference))
    assert (adapted.argmax(1) == y).mean() > (probs.argmax(1) == y).mean() + 0.02
    np.testing.assert_allclose(adapted.sum(axis=1), 1.0)


def test_no_shift_is_the_identity_and_the_reference_prior_is_a_fixed_point():
    rng = np.random.default_rng(2)
    probs, _ = _posteriors(np.array([1 / 3, 1 / 3, 1 / 3]), 5_000, rng)
    np.testing.assert_allclose(shift_priors(probs, np.zeros(3)), probs)
    np.testing.assert_allclose(adapt_priors(probs, probs.mean(axis=0)), probs.mean(axis=0), atol=1e-6)


def _validation_confusion(rng):
    probs, y = _posteriors(np.array([1 / 3, 1 / 3, 1 / 3]), 20_000, rng)
    return joint_confusion(probs.argmax(axis=1), y, 3)


def test_bbse_recovers_a_shifted_prior_from_predicted_labels_alone():
    rng = np.random.default_rng(3)
    confusion = _validation_confusion(rng)
    np.testing.assert_allclose(confusion.sum(), 1.0)
    np.testing.assert_allclose(confusion.sum(axis=0), [1 / 3] * 3, atol=0.02)  # columns: the validation's true shares
    true = np.array([0.15, 0.7, 0.15])
    probs, _ = _posteriors(true, 20_000, rng)
    assert abs(np.mean(probs.argmax(axis=1) == 1) - 0.7) > 0.1  # the predicted shares alone are far off
    np.testing.assert_allclose(black_box_shift_priors(probs.argmax(axis=1), confusion), true, atol=0.03)


def test_bbse_does_not_read_doubt_as_neutral_where_em_does():
    """Text unlike the training data: a third of every row's probability
    drifts toward the middle class, which changes few argmaxes. EM reads the
    spread-out mass as a file of many 中评 rows and runs with it; BBSE, from
    the predicted labels, moves far less (BENCHMARKS.md, "When to adapt priors")."""
    rng = np.random.default_rng(4)
    confusion = _validation_confusion(rng)
    probs, _ = _posteriors(np.array([0.5, 0.0, 0.5]), 20_000, rng)  # a file of polar rows only
    doubtful = 0.7 * probs + 0.3 * np.array([0.2, 0.6, 0.2])
    em = adapt_priors(doubtful, [1 / 3, 1 / 3, 1 / 3])
    bbse = black_box_shift_priors(doubtful.argmax(axis=1), confusion)
    assert em[1] > 0.25
    assert bbse[1] < 0.12 and bbse[1] < em[1] / 2


def test_bbse_of_an_empty_file_or_a_degenerate_one_is_a_valid_prior():
    confusion = _validation_confusion(np.random.default_rng(5))
    for predicted in (np.array([], np.int64), np.zeros(50, np.int64), np.full(50, 2)):
        prior = black_box_shift_priors(predicted, confusion)
        assert prior.shape == (3,) and np.all(prior >= 0) and abs(prior.sum() - 1) < 1e-9
    np.testing.assert_allclose(black_box_shift_priors(np.array([], np.int64), confusion), confusion.sum(axis=0) / confusion.sum())


def test_card_records_the_validation_confusion(tiny_model):
    from sentiscore.artifacts import read_card

    meta = json.loads((tiny_model / "meta.json").read_text())
    confusion = np.array(meta["training"]["calibration"]["confusion"])
    assert confusion.shape == (3, 3) and np.all(confusion >= 0) and abs(confusion.sum() - 1) < 1e-4
    # rows are predicted labels, so the diagonal is the validation accuracy the card reports
    assert abs(np.trace(confusion) - meta["metrics"]["validation"]["accuracy"]) < 1e-3
    np.testing.assert_allclose(read_card(tiny_model).confusion, confusion)


def test_card_records_the_reference_prior(tiny_model):
    meta = json.loads((tiny_model / "meta.json").read_text())
    reference = meta["training"]["calibration"]["reference_prior"]
    assert len(reference) == 3 and abs(sum(reference) - 1) < 1e-4


def _without_calibration_field(model, target, field: str):
    """A copy of ``model`` whose card lacks ``training.calibration[field]``, as
    a model trained by an older sentiscore has it (the manifest renewed)."""
    from sentiscore.artifacts import verify, write_card

    shutil.copytree(model, target)
    meta = verify(target)
    del meta["training"]["calibration"][field]
    write_card(target, meta)
    return target


def _score(args):
    return CliRunner().invoke(cli, ["score", *map(str, args), "--workers", "1"])


def test_given_priors_move_labels_and_top_words_follow(tiny_model, sample_dir, tmp_path):
    plain, neutral = tmp_path / "plain.parquet", tmp_path / "neutral.parquet"
    assert _score([sample_dir / "reviews.csv", plain, "--model", tiny_model]).exit_code == 0
    result = _score([sample_dir / "reviews.csv", neutral, "--model", tiny_model, "--priors", "-1=0.01,0=0.98,1=0.01"])
    assert result.exit_code == 0, result.output
    a, b = pq.read_table(plain).to_pandas(), pq.read_table(neutral).to_pandas()
    assert (b.label == "中评").sum() > (a.label == "中评").sum()
    probs = b[["prob_负评", "prob_中评", "prob_正评"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs.argmax(axis=1) == b.label.map({"负评": 0, "中评": 1, "正评": 2})).all()
    changed = (a.label != b.label) & (b.status == "ok")
    assert changed.any()
    # Top words are re-ranked for the new label, not carried over from the old one.
    assert any(list(x) != list(y) for x, y in zip(a.top_words[changed], b.top_words[changed]))
    metadata = pq.read_schema(neutral).metadata
    assert b"(given)" in metadata[b"sentiscore.priors"]
    assert "priors 负评 0.0100, 中评 0.9800, 正评 0.0100 (given)" in result.stderr


def test_adapt_priors_estimates_then_scores(tiny_model, sample_dir, tmp_path):
    out = tmp_path / "adapted.parquet"
    result = _score([sample_dir / "reviews.csv", out, "--model", tiny_model, "--adapt-priors", "--prior-estimator", "em"])
    assert result.exit_code == 0, result.output
    assert "(adapted by EM)" in result.stderr
    assert pq.read_table(out).num_rows == 300
    line = pq.read_schema(out).metadata[b"sentiscore.priors"].decode()
    shares = [float(part.split()[1]) for part in line.split(" (")[0].split(", ")]
    assert len(shares) == 3 and abs(sum(shares) - 1) < 1e-3


def test_adapt_priors_by_bbse_unless_told_estimates_then_scores_and_says_so(tiny_model, sample_dir, tmp_path):
    out = tmp_path / "bbse.parquet"
    result = _score([sample_dir / "reviews.csv", out, "--model", tiny_model, "--adapt-priors"])
    assert result.exit_code == 0, result.output
    line = pq.read_schema(out).metadata[b"sentiscore.priors"].decode()
    assert line.endswith("(adapted by BBSE)")
    em_out = tmp_path / "em.parquet"
    assert _score([sample_dir / "reviews.csv", em_out, "--model", tiny_model, "--adapt-priors", "--prior-estimator", "em"]).exit_code == 0
    assert pq.read_schema(em_out).metadata[b"sentiscore.priors"].decode() != line  # another estimate, not a relabelled EM

    old = _without_calibration_field(tiny_model, tmp_path / "old-model", "confusion")
    result = _score([sample_dir / "reviews.csv", tmp_path / "o.parquet", "--model", old, "--adapt-priors"])
    assert result.exit_code == 2 and "has no validation confusion in its card" in result.output
    assert "scripts/fit_confusion.py" in result.output
    assert not (tmp_path / "o.parquet").exists()
    result = _score([sample_dir / "reviews.csv", tmp_path / "o.parquet", "--model", old, "--adapt-priors", "--prior-estimator", "em"])
    assert result.exit_code == 0  # EM needs none


def test_adapt_priors_needs_a_file_and_a_card_that_has_a_reference(tiny_model, sample_dir, tmp_path):
    result = _score(["-", tmp_path / "o.parquet", "--model", tiny_model, "--input-format", "csv", "--adapt-priors"])
    assert result.exit_code == 2 and "--adapt-priors reads the input twice" in result.output
    result = _score([sample_dir / "reviews.csv", tmp_path / "o.parquet", "--model", tiny_model, "--adapt-priors",
                     "--priors", "-1=1,0=1,1=1"])
    assert result.exit_code == 2 and "use one" in result.output
    result = _score([sample_dir / "reviews.csv", tmp_path / "o.parquet", "--model", tiny_model, "--priors", "-1=0.5,1=0.5"])
    assert result.exit_code == 2 and "a share for each label value: -1, 0, 1" in result.output

    old = _without_calibration_field(tiny_model, tmp_path / "old-model", "reference_prior")
    result = _score([sample_dir / "reviews.csv", tmp_path / "o.parquet", "--model", old, "--adapt-priors"])
    assert result.exit_code == 2 and "has no reference prior in its card" in result.output
    assert not (tmp_path / "o.parquet").exists()


def test_evaluate_can_measure_adapted_priors(tiny_model, sample_dir):
    from sentiscore.evaluate import evaluate, format_report
    from sentiscore.pipeline import Scorer

    with Scorer.from_model(tiny_model, workers=1) as scorer:
        plain = evaluate(sample_dir / "labelled.csv", scorer=scorer)
        adapted = evaluate(sample_dir / "labelled.csv", scorer=scorer, adapt_priors=True, prior_estimator="em")
        assert scorer.prior_shift is None  # the scorer is left as it was
    assert "adapted_priors" not in plain and set(adapted["adapted_priors"]) == {"负评", "中评", "正评"}
    assert abs(sum(adapted["adapted_priors"].values()) - 1) < 1e-3
    assert adapted["rows"] == plain["rows"]
    assert "priors adapted by EM: 负评" in format_report(adapted)
    with Scorer.from_model(tiny_model, workers=1) as scorer:
        by_bbse = evaluate(sample_dir / "labelled.csv", scorer=scorer, adapt_priors=True)
    assert by_bbse["prior_estimator"] == "bbse" and "priors adapted by BBSE: 负评" in format_report(by_bbse)


def _fit_confusion(model, data):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "fit_confusion.py"
    return subprocess.run([sys.executable, str(script), str(model), str(data)], capture_output=True, text=True)


def test_fit_confusion_gives_an_older_card_the_confusion_training_records(tiny_model, sample_dir, tmp_path):
    """scripts/fit_confusion.py draws the validation split again and records
    the same matrix `train` records (the built-in models were trained before
    it did)."""
    from sentiscore.artifacts import read_card, verify

    recorded = read_card(tiny_model).confusion
    old = _without_calibration_field(tiny_model, tmp_path / "old", "confusion")
    assert read_card(old).confusion is None
    assert "no validation confusion (--prior-estimator bbse needs it" in CliRunner().invoke(cli, ["info", str(old)]).output
    done = _fit_confusion(old, sample_dir / "labelled.csv")
    assert done.returncode == 0, done.stderr
    verify(old)  # manifest renewed
    np.testing.assert_allclose(read_card(old).confusion, recorded, atol=1e-6)
    assert "validation confusion recorded (for --prior-estimator bbse)" in CliRunner().invoke(cli, ["info", str(old)]).output

    other = tmp_path / "other.csv"
    other.write_text("\n".join((sample_dir / "labelled.csv").read_text(encoding="utf-8").splitlines()[:-1]) + "\n", encoding="utf-8")
    refused = _fit_confusion(old, other)
    assert refused.returncode == 1 and "sha256" in refused.stderr


def test_fit_confusion_records_an_ensembles_own_confusion(tiny_idf_model, tmp_path_factory, sample_dir):
    from sentiscore.artifacts import read_card
    from sentiscore.config import ModelConfig, WideConfig
    from sentiscore.ensemble import combine
    from sentiscore.train import train

    from .conftest import SAMPLE, tiny_config

    twin = tmp_path_factory.mktemp("models") / "twin"
    train(SAMPLE / "labelled.csv", twin, tiny_config(wide=WideConfig(num_buckets=2**14, weighting="idf"),
                                                     model=ModelConfig(arch="wide-deep", lstm_units=8, wide_training="independent")),
          log=lambda m: None, verbose=0)
    pair = combine([tiny_idf_model, twin], tmp_path_factory.mktemp("ensembles") / "pair")
    members_mean = read_card(pair).confusion
    assert "validation confusion (for --prior-estimator bbse): the members' mean" in CliRunner().invoke(cli, ["info", str(pair)]).output
    done = _fit_confusion(pair, sample_dir / "labelled.csv")
    assert done.returncode == 0, done.stderr
    card = read_card(pair)  # verifies the renewed manifest, members untouched
    own = np.asarray(json.loads((pair / "meta.json").read_text())["calibration"]["confusion"])
    np.testing.assert_allclose(card.confusion, own)
    assert "validation confusion (for --prior-estimator bbse): the ensemble's own" in CliRunner().invoke(cli, ["info", str(pair)]).output
    assert abs(own.sum() - 1) < 1e-4 and own.shape == members_mean.shape
    # The columns are the validation rows' true shares, the same for the ensemble as for each member.
    np.testing.assert_allclose(own.sum(axis=0), members_mean.sum(axis=0), atol=1e-4)


def test_bbse_adapts_a_two_label_model_too(tiny_attention_model, sample_dir, tmp_path):
    out = tmp_path / "binary.parquet"
    result = _score([sample_dir / "reviews.csv", out, "--model", tiny_attention_model, "--adapt-priors"])
    assert result.exit_code == 0, result.output
    line = pq.read_schema(out).metadata[b"sentiscore.priors"].decode()
    assert line.startswith("neg ") and ", pos " in line and line.endswith("(adapted by BBSE)")
    shares = [float(part.split()[1]) for part in line.split(" (")[0].split(", ")]
    assert len(shares) == 2 and abs(sum(shares) - 1) < 1e-3


def _label_shares(probs):
    return np.bincount(probs.argmax(axis=1), minlength=probs.shape[1]) / len(probs)


def test_share_matching_gives_the_labels_the_shares_asked():
    """Reweighting by the matched offsets makes the argmax labels come out
    in the shares asked; a share of 0 is never predicted; rows without
    probabilities are left out of the fit."""
    rng = np.random.default_rng(3)
    probs, _ = _posteriors([0.45, 0.1, 0.45], 5_000, rng)
    probs = np.vstack([probs, np.zeros((50, 3))])
    for shares in ([0.15, 0.73, 0.12], [0.2, 0.2, 0.6], [0.5, 0.0, 0.5]):
        offsets = share_matching_shift(probs, shares)
        assert offsets.max() == 0.0
        got = _label_shares(shift_priors(probs[:5_000], offsets))
        np.testing.assert_allclose(got, shares, atol=0.003)
    assert np.isneginf(share_matching_shift(probs, [0.5, 0.0, 0.5])[1])
    np.testing.assert_array_equal(share_matching_shift(probs, [0, 0, 1]), [-np.inf, -np.inf, 0.0])


def test_share_matching_is_not_reweighting_by_the_shares():
    """A model doubtful on unfamiliar text: each row gives 中评 a third of
    its mass whatever it is. Reweighting by the true shares over the model's
    reference prior calls far more 中评 than there is; matching calls
    exactly the true share, on the rows the model found most neutral."""
    rng = np.random.default_rng(4)
    probs, y = _posteriors([0.4, 0.2, 0.4], 10_000, rng)
    doubtful = 0.6 * probs + 0.4 * np.array([0.2, 0.6, 0.2])
    reference = np.array([0.45, 0.1, 0.45])
    true = [0.4, 0.2, 0.4]
    reweighted = _label_shares(shift_priors(doubtful, prior_log_shift(true, reference)))
    matched = shift_priors(doubtful, share_matching_shift(doubtful, true))
    assert reweighted[1] > 0.4
    np.testing.assert_allclose(_label_shares(matched), true, atol=0.003)
    assert np.mean(matched.argmax(axis=1) == y) > np.mean(shift_priors(doubtful, prior_log_shift(true, reference)).argmax(axis=1) == y)


def test_priors_mode_match_makes_the_file_labels_come_out_in_the_given_shares(tiny_model, sample_dir, tmp_path):
    out, plain = tmp_path / "matched.parquet", tmp_path / "reweighted.parquet"
    result = _score([sample_dir / "reviews.csv", out, "--model", tiny_model, "--priors", "-1=0.3,0=0.3,1=0.4", "--priors-mode", "match"])
    assert result.exit_code == 0, result.output
    assert _score([sample_dir / "reviews.csv", plain, "--model", tiny_model, "--priors", "-1=0.3,0=0.3,1=0.4"]).exit_code == 0
    frame = pq.read_table(out).to_pandas()
    counts = frame.label.value_counts(normalize=True)  # every row has text: the sample is the whole file
    np.testing.assert_allclose([counts.get(n, 0) for n in ("负评", "中评", "正评")], [0.3, 0.3, 0.4], atol=0.004)
    probs = frame[["prob_负评", "prob_中评", "prob_正评"]].to_numpy()
    assert (probs.argmax(axis=1) == frame.label.map({"负评": 0, "中评": 1, "正评": 2})).all()
    line = pq.read_schema(out).metadata[b"sentiscore.priors"].decode()
    assert line.startswith("负评 0.3000, 中评 0.3000, 正评 0.4000 (given; matched on 300 sampled rows, scored under 负评 ")
    assert "matched on 300 sampled rows" in " ".join(result.stderr.split())
    reweighted = pq.read_table(plain).to_pandas()
    assert (reweighted.label != frame.label).any()  # another way of applying the same shares


def test_priors_mode_match_needs_given_priors_and_a_file(tiny_model, sample_dir, tmp_path):
    result = _score([sample_dir / "reviews.csv", tmp_path / "o.parquet", "--model", tiny_model, "--priors-mode", "match"])
    assert result.exit_code == 2 and "matches the label shares given by --priors" in result.output
    result = _score(["-", tmp_path / "o.parquet", "--model", tiny_model, "--input-format", "csv", "--priors", "-1=1,0=1,1=1",
                     "--priors-mode", "match"])
    assert result.exit_code == 2 and "--priors-mode match reads the input twice" in result.output
    result = _score([sample_dir / "reviews.csv", tmp_path / "o.parquet", "--model", tiny_model, "--priors", "-1=1,0=1,1=1",
                     "--priors-mode", "match", "--adapt-domain"])
    assert result.exit_code == 2 and "use one" in result.output
