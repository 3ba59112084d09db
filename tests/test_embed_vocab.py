import numpy as np
import pytest

from sentiscore.embed import padded_positions
from sentiscore.embed.vocab import OOV_ID, PAD_ID, VocabEmbedder
from sentiscore.errors import ModelError
from sentiscore.segment import SegmentedBatch


def batch(rows):
    tokens = [t for r in rows for t in r]
    return SegmentedBatch(tokens, np.array([len(r) for r in rows], np.int32), np.zeros(len(rows), bool))


def test_vocabulary_is_ranked_by_count_then_alphabet_and_honours_min_count():
    vocab = VocabEmbedder.build(batch([["好", "差", "好"], ["贵", "差", "好"], ["一次"]]), min_count=2, max_size=10)
    assert vocab.words == ["好", "差"]
    assert vocab.size == 4


def test_ids_reserve_padding_and_oov():
    vocab = VocabEmbedder(["好", "差"])
    ids = vocab.token_ids(["差", "没见过", "好"])
    assert ids.tolist() == [3, OOV_ID, 2]
    assert PAD_ID not in ids.tolist()


def test_encode_pads_and_truncates_to_width():
    vocab = VocabEmbedder(["a", "b", "c"])
    features = vocab.featurize(batch([["a", "b", "c"], ["c"], [], ["b", "zz"]]))
    out = vocab.encode(features, np.array([0, 1, 2]), width=2)
    np.testing.assert_array_equal(out["token_ids"], [[2, 3], [4, 0], [0, 0]])
    np.testing.assert_array_equal(out["mask"], [[True, True], [True, False], [False, False]])
    # any subset, in any order
    out = vocab.encode(features, np.array([3, 0]), width=4)
    np.testing.assert_array_equal(out["token_ids"], [[3, OOV_ID, 0, 0], [2, 3, 4, 0]])


def test_padded_positions_match_a_python_loop():
    lengths = np.array([3, 0, 5, 1])
    rows, cols, flat = padded_positions(lengths, width=4)
    expected = [(r, c, sum(lengths[:r]) + c) for r in range(4) for c in range(min(lengths[r], 4))]
    assert list(zip(rows.tolist(), cols.tolist(), flat.tolist())) == expected


def test_save_and_load_round_trip(tmp_path):
    vocab = VocabEmbedder(["好", "质量 差", "a"])
    vocab.save(tmp_path)
    again = VocabEmbedder.load(tmp_path, {"type": "vocab"})
    assert again.words == vocab.words


def test_load_without_vocab_file_names_it(tmp_path):
    with pytest.raises(ModelError, match="vocab.txt is missing"):
        VocabEmbedder.load(tmp_path, {"type": "vocab"})
