import dataclasses
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sentiscore.artifacts import read_card, write_manifest
from sentiscore.cli import cli
from sentiscore.errors import ModelError, UsageError

TEXTS = ["质量很好，物流也快", "太差了，不会再买", "一般般吧", "酒店服务热情，房间干净", "//@某人: 转发微博 http://t.cn/abc"]


@pytest.fixture(scope="module")
def pair(tiny_model, tiny_idf_model, tmp_path_factory):
    """An ensemble of the two tiny wide-deep models (count and idf n-gram paths)."""
    from sentiscore.ensemble import combine

    return combine([tiny_model, tiny_idf_model], tmp_path_factory.mktemp("ensembles") / "pair", name="tiny-pair")


@pytest.fixture(scope="module")
def idf_twins(tiny_idf_model, tmp_path_factory):
    """tiny_idf_model and the same recipe with a BiLSTM that learns alone
    (zh-fast's two members): the same rows, so the same word list, n-gram
    hashing and idf weights, which the ensemble computes once per chunk."""
    from sentiscore.config import ModelConfig, WideConfig
    from sentiscore.ensemble import combine
    from sentiscore.train import train

    from .conftest import SAMPLE, tiny_config

    twin = tmp_path_factory.mktemp("models") / "tiny-idf-independent"
    train(SAMPLE / "labelled.csv", twin, tiny_config(wide=WideConfig(num_buckets=2**14, weighting="idf"),
                                                     model=ModelConfig(arch="wide-deep", lstm_units=8, wide_training="independent")),
          log=lambda m: None, verbose=0)
    return combine([tiny_idf_model, twin], tmp_path_factory.mktemp("ensembles") / "twins"), twin


@pytest.fixture
def pair_copy(pair, tmp_path):
    target = tmp_path / "pair"
    shutil.copytree(pair, target)
    return target


def _probs(frame):
    return frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy()


def test_the_ensemble_directory_holds_its_members_under_one_manifest(pair, tiny_model, tiny_idf_model):
    meta = json.loads((pair / "meta.json").read_text())
    assert meta["kind"] == "ensemble" and meta["name"] == "tiny-pair"
    assert meta["format_version"] == 2  # a sentiscore that predates ensembles refuses it by version
    assert meta["members"] == ["members/0-tiny", "members/1-tiny"]
    manifest = json.loads((pair / "manifest.json").read_text())["files"]
    assert "members/0-tiny/model.keras" in manifest and "members/1-tiny/model.keras" in manifest
    assert (pair / "stopwords.txt").read_bytes() == (tiny_model / "stopwords.txt").read_bytes()
    card = read_card(pair)
    assert [m.hash for m in card.members] == [read_card(tiny_model).hash, read_card(tiny_idf_model).hash]
    expected = np.mean([read_card(tiny_model).reference_prior, read_card(tiny_idf_model).reference_prior], axis=0)
    np.testing.assert_allclose(card.reference_prior, expected)


def test_probabilities_are_the_mean_of_the_members(pair, tiny_model, tiny_idf_model):
    from sentiscore.pipeline import Scorer

    with Scorer.from_model(pair, workers=1) as ens, Scorer.from_model(tiny_model, workers=1) as a, \
            Scorer.from_model(tiny_idf_model, workers=1) as b:
        out, pa_, pb = ens.predict(TEXTS), a.predict(TEXTS), b.predict(TEXTS)
    np.testing.assert_allclose(_probs(out), (_probs(pa_) + _probs(pb)) / 2, atol=2e-6)
    names = [c[len("prob_"):] for c in out.columns if c.startswith("prob_")]
    assert list(out["label"]) == [names[i] for i in _probs(out).argmax(axis=1)]
    # Both members ran the whole model on these rows, or the cascade decided for both.
    assert set(out["scored_by"]) <= {"full", "ngrams"}


def test_members_with_the_same_hashing_share_it_and_still_give_the_mean(idf_twins, tiny_idf_model, monkeypatch):
    from sentiscore import pipeline
    from sentiscore.embed.vocab import VocabEmbedder
    from sentiscore.ngrams import CharNgramHasher
    from sentiscore.pipeline import Scorer

    ensemble, twin = idf_twins
    with Scorer.from_model(tiny_idf_model, workers=1) as a, Scorer.from_model(twin, workers=1) as b:
        pa_, pb = a.predict(TEXTS), b.predict(TEXTS)
        # Same data, same hasher: the same word list and idf weights, different weights elsewhere.
        assert a.embedder.words == b.embedder.words
        np.testing.assert_array_equal(a.predictor.wide_idf, b.predictor.wide_idf)
    calls = {"hash": [], "ids": 0, "norms": 0}
    hash_texts, featurize, norms = CharNgramHasher.transform_flat, VocabEmbedder.featurize, pipeline.wide_norms_flat
    monkeypatch.setattr(CharNgramHasher, "transform_flat", lambda self, texts: calls["hash"].append(len(texts)) or hash_texts(self, texts))
    monkeypatch.setattr(VocabEmbedder, "featurize", lambda self, batch: calls.__setitem__("ids", calls["ids"] + 1) or featurize(self, batch))
    monkeypatch.setattr(pipeline, "wide_norms_flat", lambda *args: calls.__setitem__("norms", calls["norms"] + 1) or norms(*args))
    with Scorer.from_model(tiny_idf_model, workers=1) as single:
        single.predict(TEXTS)
    single_calls = {"hash": list(calls["hash"]), "ids": calls["ids"], "norms": calls["norms"]}
    calls.update({"hash": [], "ids": 0, "norms": 0})
    with Scorer.from_model(ensemble, workers=1) as ens:
        out = ens.predict(TEXTS)
    # Texts and tokens hashed, token ids looked up and n-gram norms computed once, not once per member.
    assert calls == single_calls and single_calls["ids"] == single_calls["norms"] == 1
    assert not np.allclose(_probs(pa_), _probs(pb))  # the twins differ...
    np.testing.assert_allclose(_probs(out), (_probs(pa_) + _probs(pb)) / 2, atol=2e-6)  # ...and the mean is theirs


def test_top_words_are_tokens_of_their_text(pair):
    from sentiscore.pipeline import Scorer

    with Scorer.from_model(pair, workers=1) as scorer:
        out = scorer.predict(TEXTS)
        segmented = scorer.segmenter.segment(TEXTS)
    for i, words in enumerate(out["top_words"]):
        tokens = set(segmented.tokens_of(i))
        assert set(words) <= tokens, (TEXTS[i], words, tokens)
    assert not {w for words in out["top_words"] for w in words} & {"http", "t", "cn", "abc", "某人"}
    assert any(len(words) for words in out["top_words"])


def test_given_priors_shift_every_member_before_averaging(pair, tiny_model, tiny_idf_model):
    from sentiscore.pipeline import Scorer

    prior = np.array([0.6, 0.1, 0.3])
    with Scorer.from_model(pair, workers=1) as ens, Scorer.from_model(tiny_model, workers=1) as a, \
            Scorer.from_model(tiny_idf_model, workers=1) as b:
        plain = _probs(ens.predict(TEXTS))
        with ens.keeping_adaptation():
            ens.set_priors(prior)
            shifted = _probs(ens.predict(TEXTS))
        after = _probs(ens.predict(TEXTS))
        for member in (a, b):
            member.set_priors(prior)
        expected = (_probs(a.predict(TEXTS)) + _probs(b.predict(TEXTS))) / 2
    np.testing.assert_allclose(shifted, expected, atol=2e-6)
    assert np.abs(shifted - plain).max() > 1e-3
    np.testing.assert_allclose(after, plain, atol=1e-7)  # keeping_adaptation put the members' own back


def test_matched_priors_shift_the_averaged_posteriors(pair, sample_dir):
    """--priors-mode match fits its priors on the ensemble's averaged
    probabilities, so they shift those (shifting each member and averaging
    would give other shares): the sample's labels come out as asked."""
    import pandas as pd

    from sentiscore.adapt import FileSample
    from sentiscore.pipeline import Scorer

    texts = pd.read_csv(sample_dir / "reviews.csv")["txt"].tolist()
    sample = FileSample()
    sample.add(texts)
    shares = np.array([0.25, 0.35, 0.4])
    with Scorer.from_model(pair, workers=1) as ens:
        priors, rows = ens.matched_priors(sample, shares)
        with ens.keeping_adaptation():
            ens.set_priors(priors, matched=True)
            assert all(member.prior_shift is None for member in ens.members)
            _, _, probs = ens.labelled_probs(texts)
        assert ens.prior_shift is None  # put back
    assert rows == len(probs)
    np.testing.assert_allclose(np.bincount(probs.argmax(axis=1), minlength=3) / len(probs), shares, atol=0.01)


def test_score_file_records_the_members_in_the_output(pair, sample_dir, tmp_path):
    from sentiscore.config import ScoreConfig
    from sentiscore.pipeline import score_file

    out = tmp_path / "scored.parquet"
    summary = score_file(sample_dir / "reviews.csv", out, model=pair, config=ScoreConfig(workers=1))
    metadata = pq.read_metadata(out).metadata
    card = read_card(pair)
    assert metadata[b"sentiscore.model"] == b"tiny-pair"
    assert metadata[b"sentiscore.model_hash"] == card.hash.encode()
    assert metadata[b"sentiscore.members"].decode() == ", ".join(f"{m.name}@{m.hash}" for m in card.members)
    assert f"tiny-pair@{card.hash}" in summary.line()
    assert pq.read_table(out).num_rows == summary.rows


def test_members_must_share_labels(tiny_model, tiny_attention_model, tmp_path):
    from sentiscore.ensemble import combine

    with pytest.raises(ModelError, match="different labels"):
        combine([tiny_model, tiny_attention_model], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("change, message", [
    (lambda card: dataclasses.replace(card, maxlen=card.maxlen + 1), "maxlen"),
    (lambda card: dataclasses.replace(card, segmenter={**card.segmenter, "markup": "keep"}), r"segment differently \(markup\)"),
    (lambda card: dataclasses.replace(card, segmenter={**card.segmenter, "hmm": not card.segmenter["hmm"]}), r"\(hmm\)"),
])
def test_members_must_segment_alike(tiny_model, tiny_idf_model, change, message):
    from sentiscore.ensemble import check_members

    with pytest.raises(ModelError, match=message):
        check_members([read_card(tiny_model), change(read_card(tiny_idf_model))])


def test_one_model_is_not_an_ensemble_and_an_ensemble_is_not_a_member(pair, tiny_model, tmp_path):
    from sentiscore.ensemble import combine

    with pytest.raises(UsageError, match="at least two"):
        combine([tiny_model], tmp_path / "one")
    with pytest.raises(ModelError, match="cannot be a member"):
        combine([pair, tiny_model], tmp_path / "nested")


def test_a_changed_member_file_is_refused(pair_copy):
    with open(pair_copy / "members" / "1-tiny" / "model.keras", "ab") as f:
        f.write(b"x")
    with pytest.raises(ModelError, match="does not match its sha256"):
        read_card(pair_copy)


def test_a_changed_member_manifest_is_refused(pair_copy):
    manifest = pair_copy / "members" / "0-tiny" / "manifest.json"
    manifest.write_text(manifest.read_text() + " ")
    with pytest.raises(ModelError, match="does not match the hash"):
        read_card(pair_copy)


def test_a_member_outside_the_members_folder_is_refused(pair_copy):
    meta = json.loads((pair_copy / "meta.json").read_text())
    meta["members"][1] = "../elsewhere"
    (pair_copy / "meta.json").write_text(json.dumps(meta))
    write_manifest(pair_copy)
    with pytest.raises(ModelError, match="not a folder under members/"):
        read_card(pair_copy)


def test_cli_builds_evaluates_and_shows_an_ensemble(tiny_model, tiny_idf_model, sample_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "ens"
    result = runner.invoke(cli, ["ensemble", str(tiny_model), str(tiny_idf_model), "--out", str(out),
                                 "--dev", str(sample_dir / "labelled.csv")])
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (2 members)" in result.output
    dev = json.loads((out / "meta.json").read_text())["metrics"]["dev"]
    assert dev["rows"] > 0 and 0.0 <= dev["macro_f1"] <= 1.0
    read_card(out)  # the card with metrics is still signed by its manifest
    info = runner.invoke(cli, ["info", str(out)])
    assert info.exit_code == 0
    assert "ensemble of 2 models" in info.output and info.output.count("member ") == 2
    explained = runner.invoke(cli, ["explain", "质量很好，物流也快", "--model", str(out), "--json"])
    assert explained.exit_code == 0, explained.output
    explanation = json.loads(explained.output)
    assert set(explanation["logit_split"]) == {"deep", "wide"} and explanation["tokens"]
    evaluated = runner.invoke(cli, ["evaluate", str(sample_dir / "labelled.csv"), "--model", str(out), "--json", "-"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["macro_f1"] == dev["macro_f1"]


def test_cli_refuses_a_single_model(tiny_model, tmp_path):
    result = CliRunner().invoke(cli, ["ensemble", str(tiny_model), "--out", str(tmp_path / "one")])
    assert result.exit_code == 2
    assert "an ensemble needs at least two models" in result.output


def test_a_card_with_one_member_is_not_an_ensemble(pair_copy):
    meta = json.loads((pair_copy / "meta.json").read_text())
    meta["members"], meta["member_hashes"] = meta["members"][:1], meta["member_hashes"][:1]
    (pair_copy / "meta.json").write_text(json.dumps(meta))
    write_manifest(pair_copy)
    with pytest.raises(ModelError, match="two or more members"):
        read_card(pair_copy)


def test_the_ensembles_validation_confusion_is_its_members_mean(pair, tiny_model, tiny_idf_model):
    from sentiscore.artifacts import read_card

    members = [read_card(m).confusion for m in (tiny_model, tiny_idf_model)]
    np.testing.assert_allclose(read_card(pair).confusion, (members[0] + members[1]) / 2)
