import json

import pytest
from click.testing import CliRunner

from sentiscore.cli import cli
from sentiscore.explain import comprehensiveness, explain_texts, render


def test_explanations_hold_every_token_with_weights_summing_to_one(tiny_scorer):
    texts = ["质量很好，物流也快！", "", "😀"]
    good, empty, emoji = explain_texts(tiny_scorer, texts)
    assert good.tokens == ["质量", "很", "好", "物流", "快"]
    assert sum(good.weights) == pytest.approx(1.0, abs=1e-3) and len(good.weights) == len(good.tokens)
    assert good.label in good.probabilities and good.confidence == max(good.probabilities.values())
    assert set(good.logit_split) == {"deep", "wide"}
    assert (empty.status, empty.label) == ("empty", None)
    assert (emoji.status, emoji.label) == ("no_tokens", None)


def test_explanation_matches_score_output(tiny_scorer, monkeypatch):
    # An explanation runs the whole model; so does `score --no-cascade`.
    monkeypatch.setattr(tiny_scorer, "cascade", None)
    texts = ["还不错，下次再来", "太差了"]
    frame = tiny_scorer.predict(texts)
    for e, (_, row) in zip(explain_texts(tiny_scorer, texts), frame.iterrows()):
        assert e.label == row.label
        assert e.confidence == pytest.approx(row.confidence, abs=1e-4)
        if len(row.top_words):
            top = sorted(zip(e.contributions, e.tokens), reverse=True)[0][1]
            assert top == list(row.top_words)[0]


def test_render_plain_and_colour(tiny_scorer):
    e = explain_texts(tiny_scorer, ["服务很好"])[0]
    plain = render(e, color=False)
    assert "服务[" in plain and "\x1b[" not in plain and "confidence" in plain
    assert "\x1b[48;2;" in render(e, color=True)


def test_comprehensiveness_reports_top_and_random_drops(tiny_scorer, sample_dir):
    import pandas as pd

    texts = pd.read_csv(sample_dir / "labelled.csv").txt.tolist()[:80]
    result = comprehensiveness(tiny_scorer, texts, ks=(1, 3))
    assert 0 < result["texts"] <= 80
    for k in ("k=1", "k=3"):
        assert set(result[k]) == {"drop_top", "drop_random", "ratio"}
        assert -1 <= result[k]["drop_top"] <= 1 and -1 <= result[k]["drop_random"] <= 1
    again = comprehensiveness(tiny_scorer, texts, ks=(1, 3))
    assert again == result  # seeded: the same random words every time


def test_explain_command(tiny_model, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["explain", "物流很快", "--model", str(tiny_model), "--no-color"])
    assert result.exit_code == 0, result.output
    assert "物流[" in result.stdout and "confidence" in result.stdout
    texts = tmp_path / "texts.txt"
    texts.write_text("好评\n差评\n", encoding="utf-8")
    result = runner.invoke(cli, ["explain", "--file", str(texts), "--model", str(tiny_model), "--json"])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["好评", "差评"] and all("weights" in r for r in rows)
    result = runner.invoke(cli, ["explain", "--model", str(tiny_model)])
    assert result.exit_code == 2 and "Error: give texts as arguments or --file FILE" in result.stderr


def test_explain_survives_lone_surrogates(tiny_scorer):
    (e,) = explain_texts(tiny_scorer, ["\ud800质量很好"])
    assert e.label is not None and "质量" in e.tokens
