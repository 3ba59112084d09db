import numpy as np
import pytest

from sentiscore.errors import InputError
from sentiscore.evaluate import UNSCORED, classification_metrics, evaluate, format_report


def test_metrics_match_hand_counts():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, UNSCORED])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    assert m["unscored"] == 1
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["per_class"]["c"]["recall"] == 0.5
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]


def test_evaluate_reports_groups_and_formats(tiny_model, sample_dir):
    result = evaluate(sample_dir / "labelled.parquet", model=tiny_model, workers=1)
    assert result["rows"] == 600 and result["labels"] == ["负评", "中评", "正评"]
    # One sample row is only @mentions: no tokens, so no label (an error in the metrics, outside the matrix).
    assert result["unscored"] == 1
    assert sum(map(sum, result["confusion_matrix"])) == 600 - result["unscored"]
    assert sum(g["rows"] for g in result["by_group"].values()) == 600
    text = format_report(result)
    assert "macro-F1" in text and "confusion matrix" in text and "weibo" in text
    # Label shares: true ones from the file's labels, predicted ones from the confusion matrix's columns.
    import pandas as pd

    frame = pd.read_parquet(sample_dir / "labelled.parquet")
    matrix = np.array(result["confusion_matrix"])
    for i, (value, name) in enumerate(zip((-1, 0, 1), result["labels"])):
        assert result["label_shares"]["true"][name] == pytest.approx(np.mean(frame.label == value), abs=1e-4)
        assert result["label_shares"]["predicted"][name] == pytest.approx(matrix[:, i].sum() / matrix.sum(), abs=1e-4)
    for group, m in result["by_group"].items():
        rows = frame[frame.source.str.split(":").str[0] == group]
        assert m["label_shares"]["true"]["中评"] == pytest.approx(np.mean(rows.label == 0), abs=1e-4), group
        assert sum(m["label_shares"]["predicted"].values()) == pytest.approx(1, abs=1e-3)
    assert "label shares, true → predicted" in text and "% true/predicted" in text
    # ... and as score's option, to score the file DATA was sampled from with those shares.
    option = result["priors_option"]
    assert f"{option} --priors-mode match" in text
    from sentiscore.config import parse_priors

    given = dict(parse_priors(option.removeprefix("--priors ")))
    for value, name in zip(("-1", "0", "1"), result["labels"]):
        assert given[value] == pytest.approx(result["label_shares"]["true"][name], abs=1e-4)


def test_evaluate_without_label_column(tiny_model, sample_dir):
    with pytest.raises(InputError, match="no column 'label'"):
        evaluate(sample_dir / "reviews.csv", model=tiny_model, workers=1)


def test_many_equally_confident_mistakes(tiny_model, tmp_path):
    """Duplicated texts give identical confidences; keeping the top mistakes must not compare records."""
    import pandas as pd

    rows = pd.DataFrame({"txt": ["质量很好，推荐"] * 60 + ["太差了"] * 60, "label": [-1] * 60 + [1] * 60})
    path = tmp_path / "dupes.csv"
    rows.to_csv(path, index=False)
    result = evaluate(path, model=tiny_model, workers=1)
    assert len(result["most_confident_mistakes"]) == 20
    confidences = [m["confidence"] for m in result["most_confident_mistakes"]]
    assert confidences == sorted(confidences, reverse=True)
