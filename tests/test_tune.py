"""Hyper-parameter search: the GS simplex grid, the objective, best.json, and train.py reading it."""
import json

import pytest

from tf_mtvib import train, tune
from tf_mtvib.datasets import get_spec, loading
from tf_mtvib.models import build_model

TASKS = get_spec("multimnist").task_names


def test_simplex_grid_two_tasks_is_w_and_one_minus_w():
    assert tune.simplex_grid(2, [0.1, 0.3, 0.5, 0.7, 0.9]) == [(0.1, 0.9), (0.3, 0.7), (0.5, 0.5), (0.7, 0.3), (0.9, 0.1)]
    assert tune.simplex_grid(2, [0.8, 0.2, 0.5]) == [(0.2, 0.8), (0.5, 0.5), (0.8, 0.2)]


def test_simplex_grid_four_tasks_is_a_symmetric_coarse_grid():
    points = tune.simplex_grid(4)
    assert len(points) == len(set(points)) == 20
    assert all(abs(sum(p) - 1) < 1e-9 and min(p) > 0 for p in points)
    assert all(set(p) <= set(tune.DEFAULT_GRID) for p in points)
    assert {tuple(reversed(p)) for p in points} == set(points)
    assert (0.7, 0.1, 0.1, 0.1) in points and (0.1, 0.1, 0.1, 0.7) in points


@pytest.mark.parametrize("k,grid", [(1, [0.5]), (2, [1.5]), (3, [0.9])])
def test_simplex_grid_errors(k, grid):
    with pytest.raises(tune.TuneError):
        tune.simplex_grid(k, grid)


def test_weights_encoding_round_trip():
    text = tune.encode_weights((0.3, 0.7))
    assert text == "0.3,0.7"
    assert tune.decode_weights(text, TASKS) == {"top_left": 0.3, "bottom_right": 0.7}
    with pytest.raises(ValueError):
        tune.decode_weights("0.2,0.3,0.5", TASKS)


def test_mean_task_accuracy():
    logs = {"top_left_accuracy": 0.5, "bottom_right_accuracy": 0.7, "val_top_left_accuracy": 0.2,
            "val_bottom_right_accuracy": 0.6, "loss": 1.0}
    tune.add_mean_task_accuracy(logs, TASKS)
    assert logs["mean_task_accuracy"] == pytest.approx(0.6)
    assert logs[tune.OBJECTIVE] == pytest.approx(0.4)


def test_config_comes_from_train_presets():
    cfg = tune.build_config(tune.parse_args(["--dataset", "multimnist", "--model", "mtvib", "--preset", "cpu",
                                             "--epochs", "1", "--beta", "0.01"]))
    assert cfg == {**cfg, "preset": "cpu", "model": "mtvib"}
    assert cfg["data"]["num_train"] == train.PRESETS["cpu"]["data"]["multimnist"]["num_train"]
    assert cfg["training"]["batch_size"] == train.PRESETS["cpu"]["batch_size"]
    assert cfg["training"]["epochs"] == 1 and cfg["training"]["val_fraction"] == 0.1
    assert cfg["hparams"] == {"beta": 0.01}


def test_nothing_to_search_and_clashing_directory(tmp_path):
    cfg = _config("uwl")
    with pytest.raises(tune.TuneError, match="nothing to search"):
        tune.tune(cfg, tmp_path, fixed=("learning_rate",))
    (tmp_path / tune.TUNE_CONFIG).write_text(json.dumps({"search": "random"}))
    with pytest.raises(tune.TuneError, match="other settings"):
        tune.tune(cfg, tmp_path)


def _config(model, *flags):
    return tune.build_config(tune.parse_args(["--dataset", "multimnist", "--model", model, "--preset", "smoke", *flags]))


@pytest.mark.parametrize("search", ["grid", "random", "bayesian"])
def test_mtvib_search_space(tmp_path, search):
    if search == "bayesian":
        pytest.importorskip("sklearn", reason="keras-tuner's BayesianOptimization needs scikit-learn")
    hypermodel = tune.make_hypermodel(_config("mtvib"), tune.SEARCH_SPACES["mtvib"], search, tune.DEFAULT_RANGES,
                                      [], steps_per_epoch=1)
    tuner = tune.make_tuner(search, hypermodel, 2, 0, tmp_path)
    assert tuner.oracle.objective.name == tune.OBJECTIVE and tuner.oracle.objective.direction == "max"
    space = {hp.name: hp for hp in tuner.oracle.hyperparameters.space}
    assert set(space) == {"beta", "learning_rate", "latent_dim"}
    assert list(space["latent_dim"].values) == [64, 128, 256]
    if search == "grid":
        assert list(space["beta"].values) == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
        assert list(space["learning_rate"].values) == [1e-5, 1e-4, 1e-3, 1e-2]
    else:
        for name, low, high in (("beta", 1e-5, 1e-1), ("learning_rate", 1e-5, 1e-2)):
            assert (space[name].min_value, space[name].max_value, space[name].sampling) == (low, high, "log")
    hp = tuner.oracle.hyperparameters.copy()
    hp.values.update(beta=0.02, learning_rate=3e-4, latent_dim=128)
    hparams, training = hypermodel.values(hp)
    assert hparams == {"beta": 0.02, "latent_dim": 128} and training["learning_rate"] == 3e-4


def test_gs_hypermodel_builds_the_trial_weights(tmp_path):
    points = [tune.encode_weights(w) for w in tune.simplex_grid(2, [0.2, 0.5, 0.8])]
    hypermodel = tune.make_hypermodel(_config("gs"), ("task_weights",), "grid", tune.DEFAULT_RANGES, points, 1)
    tuner = tune.make_tuner("grid", hypermodel, None, 0, tmp_path)
    (hp,) = tuner.oracle.hyperparameters.space
    assert hp.name == "task_weights" and list(hp.values) == ["0.2,0.8", "0.5,0.5", "0.8,0.2"]
    values = tuner.oracle.hyperparameters.copy()
    values.values["task_weights"] = "0.8,0.2"
    model = hypermodel.build(values)
    assert model.weighting.weights_by_task == {"top_left": 0.8, "bottom_right": 0.2}
    assert float(model.optimizer.learning_rate) == pytest.approx(train.PRESETS["smoke"]["learning_rate"])


def test_a_trials_seconds_are_its_whole_fit_not_its_best_epoch(tmp_path):
    """keras-tuner keeps a trial's metrics at its best epoch only: the recorded fit time must
    still cover every epoch. Each epoch here sleeps 0.3 s on top of a tiny fit."""
    import time

    import keras
    import numpy as np

    spec = get_spec("multimnist")
    points = [tune.encode_weights(w) for w in tune.simplex_grid(2, [0.5])]
    hypermodel = tune.make_hypermodel(_config("gs"), ("task_weights",), "grid", tune.DEFAULT_RANGES, points, 1)
    tuner = tune.make_tuner("grid", hypermodel, None, 0, tmp_path)
    rng = np.random.default_rng(0)
    x = rng.random((8, *spec.input_shape), dtype=np.float32)
    y = {t: rng.integers(0, n, 8) for t, n in spec.num_classes.items()}

    class Slow(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(0.3)

    epochs = 3
    tuner.search(x, y, validation_data=(x, y), epochs=epochs, batch_size=8, callbacks=[Slow()], verbose=0)
    (trial,) = tune._trial_records(tuner, ("task_weights",), spec)
    assert trial["seconds"] >= 0.3 * epochs                     # every epoch's sleep, whichever epoch was best
    assert tune.search_seconds([trial]) == trial["seconds"]
    assert tune.search_seconds([trial, {**trial, "seconds": None}]) is None   # an untimed trial: no total


@pytest.fixture
def recorded_splits(monkeypatch):
    """The (data set, split) pairs loaded, whatever route reaches the loaders."""
    calls = []
    for name, loader in list(loading._LOADERS.items()):
        def recording(split, data_dir, _name=name, _loader=loader, **options):
            calls.append((_name, split))
            return _loader(split, data_dir, **options)
        monkeypatch.setitem(loading._LOADERS, name, recording)
    return calls


@pytest.mark.slow
def test_gs_grid_search_on_multimnist(tmp_path, data_dir, recorded_splits, capsys):
    out = tmp_path / "tune"
    argv = ["--dataset", "multimnist", "--model", "gs", "--preset", "smoke", "--epochs", "1",
            "--grid", "0.2,0.5,0.8", "--data-dir", str(data_dir), "--output-dir", str(out), "--verbose", "0"]
    assert tune.main(argv) == 0
    assert recorded_splits == [("multimnist", "train")]  # validation carved from train, test never loaded

    best = json.loads((out / tune.BEST).read_text())
    trials = best["trials"]
    assert sorted(t["values"]["task_weights"] for t in trials) == ["0.2,0.8", "0.5,0.5", "0.8,0.2"]
    assert all(t["status"] == "COMPLETED" for t in trials)
    assert all(t["seconds"] > 0 for t in trials)                # each trial's fit time, from its epochs
    assert best["seconds"] == pytest.approx(sum(t["seconds"] for t in trials))
    assert {tuple(t["hparams"]["task_weights"][k] for k in TASKS) for t in trials} == {(0.2, 0.8), (0.5, 0.5), (0.8, 0.2)}
    n = train.PRESETS["smoke"]["data"]["multimnist"]["num_train"]
    assert (best["num_train"], best["num_val"]) == (n - round(0.1 * n), round(0.1 * n))
    for t in trials:  # the objective is the mean of the per-task validation accuracies
        assert set(t["val_accuracy"]) == set(TASKS)
        assert t["objective"] == pytest.approx(sum(t["val_accuracy"].values()) / len(TASKS))
    top = max(trials, key=lambda t: t["objective"])
    assert best["objective"] == top["objective"] and best["best_trial"] == top["trial_id"]
    assert best["hparams"] == top["hparams"] == {"task_weights": top["hparams"]["task_weights"]}
    assert (out / tune.TUNER_DIR / "oracle.json").exists()
    assert not list((out / tune.TUNER_DIR).rglob("*.weights.h5"))  # no per-trial checkpoints by default

    table = capsys.readouterr().out
    rows = [l for l in table.splitlines() if l[:1] in (" ", "*") and "COMPLETED" in l]
    assert len(rows) == 3 and [l for l in rows if l.startswith("*" + top["trial_id"])]
    assert all(l.split()[-2] == f"{t['seconds']:.0f}" for l, t in zip(rows, trials))   # the seconds column

    # train.py --hparams best.json trains with the chosen weights
    cfg = train.build_config(train.parse_args(["--dataset", "multimnist", "--model", "gs", "--preset", "smoke",
                                               "--hparams", str(out / tune.BEST)]))
    assert cfg["hparams"] == {"task_weights": top["hparams"]["task_weights"]}
    assert cfg["training"]["learning_rate"] == train.PRESETS["smoke"]["learning_rate"]
    model = build_model("gs", get_spec("multimnist"), **cfg["hparams"])
    assert model.weighting.weights_by_task == top["hparams"]["task_weights"]

    # the same command again continues the finished search: no new trial, same best
    recorded_splits.clear()
    assert tune.main(argv) == 0
    again = json.loads((out / tune.BEST).read_text())
    assert [t["trial_id"] for t in again["trials"]] == [t["trial_id"] for t in trials]
    assert again["objective"] == best["objective"]


def _mtvib_search(tmp_path, data_dir, *extra):
    out = tmp_path / "tune"
    assert tune.main(["--dataset", "multimnist", "--model", "mtvib", "--preset", "smoke", "--epochs", "1",
                      "--max-train", "96", "--max-trials", "2", "--latent-dims", "4,8", "--data-dir", str(data_dir),
                      "--output-dir", str(out), "--verbose", "0", *extra]) == 0
    best = json.loads((out / tune.BEST).read_text())
    assert len(best["trials"]) == 2
    for t in best["trials"]:
        hp = t["hparams"]
        assert set(hp) == {"beta", "learning_rate", "latent_dim"} and t["status"] == "COMPLETED"
        assert 1e-5 <= hp["beta"] <= 1e-1 and 1e-5 <= hp["learning_rate"] <= 1e-2 and hp["latent_dim"] in (4, 8)
        assert t["values"] == hp
    assert best["trials"][0]["hparams"] != best["trials"][1]["hparams"]
    top = max(best["trials"], key=lambda t: t["objective"])
    assert best["hparams"] == top["hparams"]
    return out / tune.BEST, best, top


@pytest.mark.slow
def test_mtvib_random_search_records_beta_lr_latent(tmp_path, data_dir, recorded_splits):
    path, best, top = _mtvib_search(tmp_path, data_dir, "--search", "random")
    assert best["search"] == "random"
    assert recorded_splits == [("multimnist", "train")]
    cfg = train.build_config(train.parse_args(["--dataset", "multimnist", "--model", "mtvib", "--preset", "paper",
                                               "--hparams", str(path)]))
    assert cfg["hparams"] == {"beta": top["hparams"]["beta"], "latent_dim": top["hparams"]["latent_dim"]}
    assert cfg["training"]["learning_rate"] == top["hparams"]["learning_rate"]
    assert cfg["training"]["epochs"] == train.PRESETS["paper"]["epochs"]  # the tuning budget is not carried over


@pytest.mark.parametrize("keep_models", [False, True])
def test_trial_checkpoint_adapter_drops_keras_tuners_callback(tmp_path, keep_models):
    """keras-tuner exports no public name for the per-trial checkpoint callback that
    make_hypermodel drops; the adapter imports it (a keras-tuner that moves it fails here)."""
    import keras_tuner as kt
    import numpy as np

    cls = tune.trial_checkpoint_callback_class()
    path = tmp_path / "trial.weights.h5"
    callback = cls(objective=kt.Objective(tune.OBJECTIVE, "max"), filepath=str(path))
    hypermodel = tune.make_hypermodel(_config("gs"), ("task_weights",), "grid", tune.DEFAULT_RANGES,
                                      ["0.5,0.5"], steps_per_epoch=1, keep_models=keep_models)
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)
    x = np.zeros((4, *get_spec("multimnist").input_shape), np.float32)
    y = {t: np.zeros(4, np.int64) for t in TASKS}
    history = hypermodel.fit(hp, model, x, y, epochs=1, verbose=0, callbacks=[callback])
    assert "mean_task_accuracy" in history.history  # MeanTaskAccuracy ran
    assert path.exists() == keep_models  # no objective in the logs: the callback saves every epoch it runs
