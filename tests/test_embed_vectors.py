"""Pretrained word vectors: training them on a corpus, starting the vocab
embedder from them, and continuing from them on new text (--init)."""


import numpy as np
import pandas as pd
import pytest

from sentiscore.config import SegmenterConfig
from sentiscore.errors import InputError, TrainingError
from tests.conftest import SAMPLE, tiny_config

pytest.importorskip("gensim")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Unlabelled text: the sample's texts (labels dropped) plus sentences
    with words the labelled sample never uses."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.parquet"
    texts = pd.read_csv(SAMPLE / "labelled.csv", dtype=str)["txt"].tolist()
    texts += ["外卖送得飞快，骑手态度也好"] * 20 + ["外卖凉透了，骑手迟到一小时"] * 20
    pd.DataFrame({"txt": texts}).to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def small_vectors(tmp_path_factory, corpus):
    from sentiscore.embed.vectors import VectorsConfig, train_vectors

    out = tmp_path_factory.mktemp("vectors") / "small"
    train_vectors([corpus], out, VectorsConfig(dim=16, min_count=1, epochs=2), workers=1, log=lambda m: None)
    return out


def test_vectors_folder_holds_words_vectors_and_card(small_vectors):
    from sentiscore.embed.vectors import WordVectors

    vectors = WordVectors.load(small_vectors)
    assert vectors.vectors.dtype == np.float16 and vectors.vectors.shape == (len(vectors.words), 16)
    assert "骑手" in vectors.words  # segmented by our segmenter: the classifier's own tokens
    assert vectors.card["tokens_seen"] == 2 * vectors.card["tokens"] > 0
    assert vectors.card["segmenter"]["markup"] == "social"
    assert np.isfinite(vectors.vectors.astype(np.float32)).all() and np.abs(vectors.vectors).sum() > 0


def test_training_starts_from_the_vectors_and_adds_their_words(small_vectors, tmp_path):
    from sentiscore.embed.vectors import WordVectors
    from sentiscore.model import import_tensorflow
    from sentiscore.train import train

    config = tiny_config(epochs=1, vectors=str(small_vectors), vectors_trainable=False,
                         embedder=tiny_config().embedder.__class__(maxlen=48, embed_dim=16, min_count=1))
    meta = train(SAMPLE / "labelled.csv", tmp_path / "m", config, log=lambda m: None, verbose=0)
    card = meta["embedder"]["vectors"]
    assert card["name"] == "small" and card["trainable"] is False and card["added_words"] > 0
    words = (tmp_path / "m" / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert "骑手" in words  # only in the unlabelled corpus, yet in the vocabulary

    import_tensorflow()
    import keras

    from sentiscore import layers  # noqa: F401

    model = keras.saving.load_model(tmp_path / "m" / "model.keras", safe_mode=True, compile=False)
    table = model.get_layer("embedding").get_weights()[0]
    vectors = WordVectors.load(small_vectors)
    i = words.index("骑手")
    np.testing.assert_allclose(table[i + 2], vectors.vectors[vectors.words.index("骑手")].astype(np.float32), rtol=1e-6)


def test_elmo_and_word_vectors_side_by_side(small_vectors, tiny_elmo, tmp_path):
    """--embedder elmo+vocab: the model reads the biLM's vectors and a word
    embedding started from the vectors, concatenated per token; it scores
    from its own directory, and the card says what it read."""
    import pyarrow.parquet as pq

    from sentiscore.artifacts import load_model_dir
    from sentiscore.config import EmbedderConfig, ModelConfig, ScoreConfig
    from sentiscore.embed.vectors import WordVectors
    from sentiscore.pipeline import score_file
    from sentiscore.report import format_card
    from sentiscore.train import train

    config = tiny_config(epochs=1, vectors=str(small_vectors), vectors_trainable=False, elmo_model=str(tiny_elmo),
                         embedder=EmbedderConfig(type="elmo+vocab", maxlen=48, embed_dim=16, min_count=1),
                         model=ModelConfig(arch="wide-deep", lstm_units=8))
    meta = train(SAMPLE / "labelled.csv", tmp_path / "m", config, log=lambda m: None, verbose=0)
    settings = meta["embedder"]
    assert settings["type"] == "elmo+vocab" and settings["dim"] == 16 and settings["elmo"]["epochs"] == 1
    assert settings["vectors"]["name"] == "small" and settings["vocab_size"] > 2

    loaded = load_model_dir(tmp_path / "m", device="cpu")
    assert {t.name for t in loaded.keras_model.inputs} == {"elmo_vectors", "token_ids", "ngram_ids"}
    concatenated = loaded.keras_model.get_layer("elmo_and_words").output
    assert concatenated.shape[-1] == 16 + 16
    words = (tmp_path / "m" / "vocab.txt").read_text(encoding="utf-8").split("\n")
    vectors = WordVectors.load(small_vectors)
    table = loaded.keras_model.get_layer("embedding").get_weights()[0]  # frozen: still the vectors
    i = words.index("骑手")
    np.testing.assert_allclose(table[i + 2], vectors.vectors[vectors.words.index("骑手")].astype(np.float32), rtol=1e-6)
    assert "beside it: learned word embedding" in format_card(loaded.card)

    out = tmp_path / "scored.parquet"
    summary = score_file(SAMPLE / "reviews.parquet", out, model=tmp_path / "m", config=ScoreConfig(workers=1, quiet=True))
    table = pq.read_table(out)
    assert table.num_rows == summary.rows == 300
    assert table.schema.metadata[b"sentiscore.embedder"].startswith(b"elmo+vocab tiny-elmo 16-d average on cpu")
    for text, top in zip(table.column("txt").to_pylist()[:50], table.column("top_words").to_pylist()[:50]):
        assert all(w in text.lower() for w in top)


def test_plain_elmo_refuses_word_vectors(small_vectors, tiny_elmo, tmp_path):
    from sentiscore.config import EmbedderConfig
    from sentiscore.train import train

    config = tiny_config(vectors=str(small_vectors), elmo_model=str(tiny_elmo), embedder=EmbedderConfig(type="elmo", maxlen=48))
    with pytest.raises(TrainingError, match="use --embedder elmo\\+vocab"):
        train(SAMPLE / "labelled.csv", tmp_path / "m", config, log=lambda m: None, verbose=0)


def test_vectors_must_match_the_embedding_size_and_segmenter(small_vectors, tmp_path):
    from sentiscore.train import train

    with pytest.raises(TrainingError, match="are 16-d but --embed-dim is 96; pass --embed-dim 16"):
        train(SAMPLE / "labelled.csv", tmp_path / "a", tiny_config(vectors=str(small_vectors),
              embedder=tiny_config().embedder.__class__(maxlen=48, embed_dim=96)), log=lambda m: None, verbose=0)
    with pytest.raises(InputError, match="other segmenter settings \\(markup\\)"):
        train(SAMPLE / "labelled.csv", tmp_path / "b", tiny_config(vectors=str(small_vectors), segmenter=SegmenterConfig(markup="keep"),
              embedder=tiny_config().embedder.__class__(maxlen=48, embed_dim=16)), log=lambda m: None, verbose=0)


def test_init_continues_from_vectors_on_new_text(small_vectors, tmp_path):
    from click.testing import CliRunner

    from sentiscore.cli import cli
    from sentiscore.embed.vectors import WordVectors

    new_text = tmp_path / "cars.csv"
    pd.DataFrame({"txt": ["这款发动机油耗很低，变速箱平顺"] * 30}).to_csv(new_text, index=False)
    out = tmp_path / "adapted"
    result = CliRunner().invoke(cli, ["vectors", "train", str(new_text), "--out", str(out), "--init", str(small_vectors),
                                      "--min-count", "1", "--epochs", "1", "--workers", "1"])
    assert result.exit_code == 0, result.output
    adapted = WordVectors.load(out)
    assert adapted.card["init"] == "small" and adapted.dim == 16  # the size of the vectors it continues from
    assert "变速箱" in adapted.words
    # The old vocabulary is kept: a word of the first corpus only keeps its vector unchanged.
    old = WordVectors.load(small_vectors)
    assert set(old.words) <= set(adapted.words) and adapted.words.index("变速箱") < adapted.words.index("骑手")
    np.testing.assert_array_equal(adapted.vectors[adapted.words.index("骑手")], old.vectors[old.words.index("骑手")])
    assert "words start from small" in result.stderr
    bad = CliRunner().invoke(cli, ["vectors", "train", str(new_text), "--out", str(tmp_path / "x"), "--init", str(tmp_path)])
    assert bad.exit_code == 2 and "is not a vectors folder" in bad.output


def test_vectors_record_their_stopwords_and_a_classifier_must_use_the_same(corpus, small_vectors, tmp_path):
    from click.testing import CliRunner

    from sentiscore.cli import cli
    from sentiscore.embed.vectors import WordVectors
    from sentiscore.train import train

    out = tmp_path / "natural"
    result = CliRunner().invoke(cli, ["vectors", "train", str(corpus), "--out", str(out), "--stopwords", "none",
                                      "--dim", "16", "--min-count", "1", "--epochs", "1", "--workers", "1", "-q"])
    assert result.exit_code == 0, result.output
    natural, default = WordVectors.load(out), WordVectors.load(small_vectors)
    assert natural.card["segmenter"]["stopwords"] == "none"
    assert "也" in natural.words and "也" not in default.words  # a built-in stopword: kept only with --stopwords none
    embedder = tiny_config().embedder.__class__(maxlen=48, embed_dim=16)
    with pytest.raises(InputError, match="other segmenter settings \\(stopwords \\(none\\)\\)"):
        train(SAMPLE / "labelled.csv", tmp_path / "a", tiny_config(vectors=str(out), embedder=embedder), log=lambda m: None, verbose=0)
    with pytest.raises(InputError, match="stopwords \\(builtin\\)"):
        train(SAMPLE / "labelled.csv", tmp_path / "b", tiny_config(vectors=str(small_vectors), embedder=embedder,
              segmenter=SegmenterConfig(stopwords="none")), log=lambda m: None, verbose=0)


def test_the_shipped_corpus_vectors_start_a_teams_own(tmp_path):
    from click.testing import CliRunner

    from sentiscore.cli import cli
    from sentiscore.embed.vectors import WordVectors, resolve_vectors_dir

    shipped = WordVectors.load(resolve_vectors_dir("zh-corpus-vectors"))
    assert shipped.dim == 96 and len(shipped.words) > 90_000
    assert shipped.segmenter_settings()["stopwords"] == "none"  # function words kept, as the biLM of zh-elmo read them
    ticket = "退款申请提交三天了还没到账，客服一直不回复"
    tickets = tmp_path / "tickets.csv"
    pd.DataFrame({"txt": [ticket] * 30}).to_csv(tickets, index=False)
    out = tmp_path / "ours"
    result = CliRunner().invoke(cli, ["vectors", "train", str(tickets), "--out", str(out), "--init", "zh-corpus-vectors",
                                      "--stopwords", "none", "--min-count", "1", "--epochs", "1", "--workers", "1"])
    assert result.exit_code == 0, result.output
    ours = WordVectors.load(out)
    assert ours.card["init"] == "zh-corpus-vectors" and ours.dim == 96
    assert set(shipped.words) <= set(ours.words)  # nothing of the corpus's vocabulary is forgotten
    word = next(w for w in shipped.words if not set(w) & set(ticket))  # shares no character with the ticket: not its token
    np.testing.assert_array_equal(ours.vectors[ours.words.index(word)], shipped.vectors[shipped.words.index(word)])


def test_train_starts_from_the_shipped_vectors_adapted_to_its_own_texts(tmp_path):
    """train's default word embedding: zh-corpus-vectors, first continued on
    the training file's texts, segmented as those vectors were (function
    words kept); --no-adapt-vectors and --vectors none turn each part off."""
    import json

    from click.testing import CliRunner

    from sentiscore.cli import cli

    def trained(name, *flags):
        out = tmp_path / name
        result = CliRunner().invoke(cli, ["train", str(SAMPLE / "labelled.csv"), "--out", str(out), "--epochs", "1", "--maxlen", "32",
                                          "--lstm-units", "4", "--wide-buckets", "4096", "--workers", "1", *flags])
        assert result.exit_code == 0, result.output
        return json.loads((out / "meta.json").read_text(encoding="utf-8")), result.stderr

    meta, log = trained("default")
    vectors = meta["embedder"]["vectors"]
    assert vectors["name"] == "zh-corpus-vectors" and meta["segmenter"]["stopwords_source"] == "none"
    adapted = vectors["adapted_to_training_texts"]
    texts = pd.read_csv(SAMPLE / "labelled.csv", dtype=str)["txt"]
    assert adapted is not None and 0 < adapted["tokens"] <= texts.str.len().sum() and adapted["tokens_seen"] == 3 * adapted["tokens"]
    assert "adapted to the training texts" in log
    info = CliRunner().invoke(cli, ["info", str(tmp_path / "default")]).stdout
    assert f"zh-corpus-vectors continued on the training texts ({adapted['tokens']:,} tokens)" in info
    plain, _ = trained("plain", "--no-adapt-vectors")
    assert plain["embedder"]["vectors"]["adapted_to_training_texts"] is None
    # Words of the sample that the corpus vectors lack get a vector from its own texts.
    assert vectors["vocabulary_words_pretrained"] > plain["embedder"]["vectors"]["vocabulary_words_pretrained"]
    random_start, _ = trained("random", "--vectors", "none", "--embed-dim", "8")
    assert "vectors" not in random_start["embedder"] and random_start["segmenter"]["stopwords_source"] == "builtin"
    wrong_size = CliRunner().invoke(cli, ["train", str(SAMPLE / "labelled.csv"), "--out", str(tmp_path / "x"), "--embed-dim", "8",
                                          "--workers", "1", "-q"])
    assert wrong_size.exit_code != 0 and "pass --embed-dim 96 (or --vectors none)" in wrong_size.output
    not_vectors = CliRunner().invoke(cli, ["train", str(SAMPLE / "labelled.csv"), "--out", str(tmp_path / "y"),
                                           "--vectors", str(tmp_path / "random"), "--workers", "1", "-q"])
    assert not_vectors.exit_code == 2 and "is not a vectors folder" in not_vectors.output  # a typed error, not a traceback


def test_adapting_vectors_relearns_user_dictionary_words_but_not_other_stopwords(small_vectors, tmp_path):
    from sentiscore.embed.vectors import WordVectors, check_segmenter, train_vectors_option, vectors_stopwords

    vectors = WordVectors.load(small_vectors)
    user_dict = tmp_path / "dict.txt"
    user_dict.write_text("骑手小哥 5\n", encoding="utf-8")
    with pytest.raises(InputError, match="user_dict"):
        check_segmenter(vectors, SegmenterConfig(user_dict=str(user_dict)), "--vectors small")
    check_segmenter(vectors, SegmenterConfig(user_dict=str(user_dict)), "--vectors small", adapting=True)
    with pytest.raises(InputError, match="stopwords"):
        check_segmenter(vectors, SegmenterConfig(stopwords="none"), "--vectors small", adapting=True)
    assert train_vectors_option(None, "vocab") == "zh-corpus-vectors" and train_vectors_option(None, "elmo") is None
    assert train_vectors_option("NONE", "vocab") is None and train_vectors_option(str(small_vectors), "vocab") == str(small_vectors)
    assert vectors_stopwords("zh-corpus-vectors") == "none" and vectors_stopwords(str(small_vectors)) == "builtin"
