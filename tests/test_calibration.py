import numpy as np

from sentiscore.calibration import (expected_calibration_error, fit_class_bias, fit_temperature, macro_f1, prior_matching_bias,
                                   softmax)


def test_temperature_undoes_overconfidence():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 3000)
    true_logits = rng.normal(size=(3000, 3))
    true_logits[np.arange(3000), y] += 1.0
    # sample labels from the calibrated distribution, then make the model 3x overconfident
    probs = softmax(true_logits)
    y = np.array([rng.choice(3, p=p) for p in probs])
    t = fit_temperature(true_logits * 3, y)
    assert 2.4 < t < 3.6
    assert expected_calibration_error(softmax(true_logits * 3 / t), y) < expected_calibration_error(softmax(true_logits * 3), y)


def scarce_class_logits(n: int = 2000):
    """Labels where class 1 is 10% of rows, and logits that under-predict it."""
    rng = np.random.default_rng(1)
    y = np.where(rng.uniform(size=n) < 0.1, 1, rng.integers(0, 2, n) * 2)
    logits = rng.normal(scale=0.5, size=(n, 3))
    logits[np.arange(n), y] += 1.0
    logits[:, 1] -= 1.5
    return logits, y


def test_class_bias_recovers_a_scarce_class():
    logits, y = scarce_class_logits()
    before = macro_f1(y, logits.argmax(axis=1), 3)
    bias = fit_class_bias(logits, y, 3)
    after = macro_f1(y, (logits + bias).argmax(axis=1), 3)
    assert after > before + 0.05
    assert bias[1] > bias[0] and bias[1] > bias[2]


def test_ece_of_a_perfectly_calibrated_toy():
    probs = np.array([[0.5, 0.5]] * 4)
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probs, y) == 0.0


def test_class_biases_are_fitted_only_when_asked():
    from sentiscore.train import _calibrate

    logits, y = scarce_class_logits()
    names = ["neg", "neu", "pos"]
    temperature, bias, metrics, record = _calibrate(logits, y, names, enabled=True)
    assert not bias.any() and record["class_bias"] is False and round(temperature, 4) == record["temperature"]
    _, fitted, fitted_metrics, record = _calibrate(logits, y, names, enabled=True, class_bias=True)
    assert fitted[1] > 0 and record["class_bias"] is True
    assert fitted_metrics["macro_f1"] > metrics["macro_f1"]
    temperature, bias, _, record = _calibrate(logits, y, names, enabled=False, class_bias=True)
    assert temperature == 1.0 and not bias.any() and record["class_bias"] is False


def test_prior_matching_bias_reproduces_the_asked_label_mix():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2000, 3)) * 2 + np.array([0.0, 1.5, 0.0])  # leans to the middle class
    for prior in ([0.45, 0.1, 0.45], [0.2, 0.6, 0.2]):
        bias = prior_matching_bias(logits, prior)
        np.testing.assert_allclose(softmax(logits + bias).mean(axis=0), prior, atol=1e-4)
    assert prior_matching_bias(logits, [0.45, 0.1, 0.45])[1] < 0  # fewer middle calls than the logits make
    # A class with no prior mass keeps its zero bias relative to the mean instead of running to minus infinity.
    bias = prior_matching_bias(logits, [0.5, 0.0, 0.5])
    assert np.isfinite(bias).all()
    np.testing.assert_allclose(softmax(logits + bias)[:, [0, 2]].mean(axis=0) / softmax(logits + bias)[:, [0, 2]].mean(axis=0).sum(),
                               [0.5, 0.5], atol=1e-3)
