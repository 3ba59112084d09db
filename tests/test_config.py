import pytest

from sentiscore.config import ModelConfig, ScoreConfig, TrainConfig, parse_labels
from sentiscore.errors import UsageError


def test_parse_labels_reads_pairs_in_order():
    assert parse_labels("-1=负评, 0=中评,1=正评") == (("-1", "负评"), ("0", "中评"), ("1", "正评"))


def test_parse_labels_any_number_of_classes():
    assert len(parse_labels("a=A,b=B,c=C,d=D")) == 4


@pytest.mark.parametrize("spec", ["-1负评,1=正评", "1=x", "1=a,1=b", "1=a,2=a", "=a,2=b"])
def test_parse_labels_rejects_bad_specs(spec):
    with pytest.raises(UsageError):
        parse_labels(spec)


def test_unknown_architecture_is_rejected():
    with pytest.raises(UsageError, match="unknown --arch 'cnn'"):
        ModelConfig(arch="cnn")


@pytest.mark.parametrize("kwargs", [{"chunk_size": 0}, {"batch_size": 0}, {"top_k": -1}])
def test_score_config_validates(kwargs):
    with pytest.raises(UsageError):
        ScoreConfig(**kwargs)


def test_val_fraction_bounds():
    with pytest.raises(UsageError, match="--val-fraction"):
        TrainConfig(val_fraction=0.7)
