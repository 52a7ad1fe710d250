"""The typed training configuration (#41 item 5): one set of defaults, for writing and for reading."""
import dataclasses
import json
import pathlib

import pytest

from tf_mtvib.config import TRAINING_KEYS, TrainingConfig
from tf_mtvib.metrics import MC_SAMPLES

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_written_and_read_defaults_are_the_same():
    from tf_mtvib import train

    config = train.build_config(train.parse_args(["--dataset", "multimnist", "--model", "mtvib", "--preset", "smoke"]))
    written = config["training"]
    read = TrainingConfig.from_dict(written)
    assert written["eval_samples"] == read.eval_samples == MC_SAMPLES      # was 12 written, 0 read
    bare = TrainingConfig.from_dict({"epochs": 1, "batch_size": 8, "learning_rate": 1e-3})
    for key, value in train.TRAINING_DEFAULTS.items():
        assert getattr(bare, key) == value, key
    assert set(train.TRAINING_DEFAULTS) <= set(TRAINING_KEYS)


def test_every_committed_run_config_reads():
    configs = sorted((ROOT / "docs" / "results").rglob("config.json"))
    assert configs
    for path in configs:
        training = json.loads(path.read_text())["training"]
        tc = TrainingConfig.from_dict(training)
        assert tc.to_dict()["epochs"] == training["epochs"]


def test_unknown_missing_and_out_of_range_settings_are_errors():
    with pytest.raises(ValueError, match="unknown"):
        TrainingConfig.from_dict({"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "epoch": 2})
    with pytest.raises(ValueError, match="lack"):
        TrainingConfig.from_dict({"epochs": 1, "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="val_fraction"):
        TrainingConfig.from_dict({"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "val_fraction": 1.5})
    assert dataclasses.is_dataclass(TrainingConfig)


def test_measure_at_round_trips():
    tc = TrainingConfig.from_dict({"epochs": 3, "batch_size": 8, "learning_rate": 1e-3, "measure_at": [3, 1]})
    assert tc.measure_at == (3, 1) and tc.to_dict()["measure_at"] == [3, 1]
    assert "measure_at" not in TrainingConfig(1, 8, 1e-3).to_dict()
