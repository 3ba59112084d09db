import json
import shutil

import numpy as np
import pytest

from sentiscore import __version__
from sentiscore.artifacts import load_model_dir, resolve_model_path, verify
from sentiscore.errors import ModelError


@pytest.fixture
def model_copy(tiny_model, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(tiny_model, target)
    return target


def test_model_directory_has_the_documented_files(tiny_model):
    names = {p.name for p in tiny_model.iterdir()}
    assert {"meta.json", "manifest.json", "model.keras", "vocab.txt", "stopwords.txt"} <= names
    manifest = json.loads((tiny_model / "manifest.json").read_text())["files"]
    assert set(manifest) == names - {"manifest.json"}
    meta = json.loads((tiny_model / "meta.json").read_text())
    assert meta["sentiscore_version"] == __version__
    assert meta["embedder"]["maxlen"] == 48 and meta["model"]["arch"] == "wide-deep"
    assert meta["data"]["path"] == "labelled.csv" and len(meta["data"]["sha256"]) == 64
    assert {"accuracy", "macro_f1"} <= set(meta["metrics"]["validation"])


def test_save_then_load_gives_equal_predictions(tiny_model, model_copy):
    from sentiscore.pipeline import Scorer

    texts = ["质量很好，物流也快", "太差了，不会再买", "一般般吧"]
    with Scorer.from_model(tiny_model, workers=1) as a, Scorer.from_model(model_copy, workers=1) as b:
        pa_, pb = a.predict(texts), b.predict(texts)
    cols = [c for c in pa_.columns if c.startswith("prob_")]
    np.testing.assert_allclose(pa_[cols].to_numpy(), pb[cols].to_numpy(), rtol=1e-6)


def test_tampered_file_is_refused_and_named(model_copy):
    with open(model_copy / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("extra\n")
    with pytest.raises(ModelError, match=r"vocab\.txt does not match its sha256"):
        load_model_dir(model_copy)


def test_missing_file_is_named(model_copy):
    (model_copy / "model.keras").unlink()
    with pytest.raises(ModelError, match=r"model\.keras is missing"):
        verify(model_copy)


def test_model_from_a_newer_sentiscore_is_refused(model_copy):
    meta_path = model_copy / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["sentiscore_version"] = "99.0.0"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="newer than this sentiscore"):
        verify(model_copy)


def test_directory_that_is_not_a_model(tmp_path):
    with pytest.raises(ModelError, match="not a sentiscore model: meta.json is missing"):
        verify(tmp_path)


def test_unknown_name_lists_builtins(tmp_path):
    with pytest.raises(ModelError, match="no such directory or built-in model"):
        resolve_model_path(str(tmp_path / "nothing-here"))


def test_default_model_resolves_to_the_shipped_one():
    from sentiscore.artifacts import read_card

    path = resolve_model_path(None)
    assert path.name == "zh-fast" and (path / "meta.json").is_file()
    # zh-fast is an ensemble of two wide-deep models, each a whole model directory.
    members = read_card(None).members
    assert len(members) == 2 and all(m.arch == "wide-deep" and (m.path / "vocab.txt").is_file() for m in members)
    elmo = resolve_model_path("zh-elmo")
    assert (elmo / "meta.json").is_file() and (elmo / "elmo" / "encoder.pkl").is_file() and (elmo / "vocab.txt").is_file()


def test_the_card_is_typed_and_a_0_1_card_still_loads(tiny_model, model_copy):
    """A card as sentiscore 0.1 wrote it (the zh-elmo that shipped until
    2026-12-02): no reference prior, no markup setting (it segmented markup
    as text) and no n-gram weighting (it counted)."""
    from sentiscore.artifacts import read_card, write_manifest

    meta_path = model_copy / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["sentiscore_version"] = "0.1.0"
    for section, key in [("segmenter", "markup"), ("wide", "markup"), ("wide", "weighting"),
                         ("training", "class_weighting"), ("training", "label_smoothing")]:
        meta[section].pop(key)
    meta["training"]["calibration"].pop("reference_prior")
    meta_path.write_text(json.dumps(meta))
    write_manifest(model_copy)
    old = read_card(model_copy)
    assert old.made_by.startswith("0.1") and old.reference_prior is None
    assert old.labels == (("-1", "负评"), ("0", "中评"), ("1", "正评")) and isinstance(old.maxlen, int)
    assert old.segmenter_config().markup == "keep" and old.wide.markup == "keep" and old.wide.weighting == "count"
    new = read_card(tiny_model)
    assert new.segmenter_config().markup == "social" and len(new.reference_prior) == len(new.labels)
    assert abs(sum(new.reference_prior) - 1) < 1e-3 and new.hash == read_card(tiny_model).hash


@pytest.mark.parametrize("damage", ["no_maxlen", "no_labels", "short_prior"])
def test_a_card_missing_what_scoring_needs_is_refused_when_read(model_copy, damage):
    from sentiscore.artifacts import read_card, write_manifest

    meta_path = model_copy / "meta.json"
    meta = json.loads(meta_path.read_text())
    if damage == "no_maxlen":
        del meta["embedder"]["maxlen"]
    elif damage == "no_labels":
        meta["labels"] = meta["labels"][:1]
    else:
        meta["training"]["calibration"]["reference_prior"] = [1.0]
    meta_path.write_text(json.dumps(meta))
    write_manifest(model_copy)  # an internally consistent model, only its card is wrong
    with pytest.raises(ModelError, match="meta.json"):
        read_card(model_copy)
