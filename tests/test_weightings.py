"""Task weightings as a family: the registry, the generated flags, any weighting on any network."""
import numpy as np
import pytest
import keras
import tensorflow as tf

from tf_mtvib import weightings as W
from tf_mtvib.datasets.spec import SPECS
from tf_mtvib.models import MODEL_NAMES, build_model, default_weighting, hparam_defaults
from tf_mtvib.weightings import FixedWeighting, UncertaintyWeighting


def _batch(spec, n=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + spec.input_shape, dtype=np.float32)
    y = {t.name: rng.integers(0, t.num_classes, n) for t in spec.tasks}
    return x, y


@pytest.fixture
def toy_weighting():
    """A weighting written the way a user adds one: one class, one registry entry."""

    @W.register_weighting("toy_power")
    class PowerWeighting(W.TaskWeighting):
        """sum_k CE_k ** p (a toy weighting of the test)."""

        HPARAMS = {"toy_power": W.HParam(1.0, "the exponent p")}

        def __init__(self, task_names, toy_power=1.0, **kwargs):
            super().__init__(task_names, **kwargs)
            self.toy_power = float(toy_power)
            self.built = True

        def call(self, task_losses, training=None):
            return tf.add_n([task_losses[t] ** self.toy_power for t in self.task_names])

        def logs(self):
            return {"toy_power": tf.constant(self.toy_power)}

        def get_config(self):
            return {**super().get_config(), "toy_power": self.toy_power}

    yield PowerWeighting
    W.unregister_weighting("toy_power")


def test_a_new_weighting_is_one_class_and_one_registry_entry(toy_weighting, tmp_path):
    from tf_mtvib import train, tune

    spec = SPECS["multimnist"]
    # build_model, the hyper-parameter record and the logs
    assert hparam_defaults()["toy_power"] == 1.0
    model = build_model("gs", spec, weighting="toy_power", toy_power=2.0)
    assert isinstance(model.weighting, toy_weighting) and model.weighting.toy_power == 2.0
    assert model.hparams["weighting"] == "toy_power" and model.hparams["toy_power"] == 2.0
    assert "task_weights" not in model.hparams
    model.compile(optimizer="adam")
    x, y = _batch(spec)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["toy_power"] == 2.0
    ce = {t: tf.constant(3.0) for t in spec.task_names}
    assert float(model.weighting(ce)) == pytest.approx(18.0)
    # .keras round trip
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.weighting) is toy_weighting and loaded.weighting.toy_power == 2.0
    # the flags of train and tune, and the run config
    cfg = train.build_config(train.parse_args(["--dataset", "multimnist", "--model", "gs",
                                               "--weighting", "toy_power", "--toy-power", "3"]))
    assert cfg["hparams"] == {"weighting": "toy_power", "toy_power": 3.0}
    targs = tune.parse_args(["--dataset", "multimnist", "--model", "mtvib", "--weighting", "toy_power",
                             "--toy-power", "0.5"])
    assert tune.build_config(targs)["hparams"] == {"weighting": "toy_power", "toy_power": 0.5}
    assert "--toy-power" in train.make_parser().format_help()


def test_every_declared_weighting_has_its_class_and_the_catalogue_is_tensorflow_free():
    """The command lines' catalogue and the Keras registry name the same weightings, with the
    same hyper-parameters and summaries; the catalogue module imports neither TensorFlow nor Keras."""
    import ast
    import pathlib

    from tf_mtvib import catalogue, models

    assert list(W.WEIGHTINGS) == list(catalogue.WEIGHTING_CATALOGUE)
    for name, cls in W.WEIGHTINGS.items():
        assert cls.HPARAMS is catalogue.WEIGHTING_CATALOGUE[name].hparams, name
        # a built-in class's docstring opens with the catalogue's summary (the --help text)
        assert cls.__doc__.strip().splitlines()[0].rstrip(".") == catalogue.WEIGHTING_CATALOGUE[name].summary, name
    from tf_mtvib.families import PACKAGE_FAMILIES, builder_of, get_family

    assert catalogue.MODEL_NAMES == PACKAGE_FAMILIES
    assert all(callable(builder_of(get_family(n))) for n in PACKAGE_FAMILIES)
    assert all(e.weighting in catalogue.WEIGHTING_CATALOGUE for e in catalogue.MODEL_CATALOGUE.values())
    tree = ast.parse(pathlib.Path(catalogue.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"tensorflow", "keras", "tensorflow_probability", "numpy"}, imported


def test_registry_refuses_clashes():
    with pytest.raises(ValueError, match="registered already"):
        W.register_weighting("fixed")(type("Other", (W.TaskWeighting,), {}))
    with pytest.raises(ValueError, match="init_log_sigma"):
        W.register_weighting("other")(type("Other", (W.TaskWeighting,),
                                           {"HPARAMS": {"init_log_sigma": W.HParam(0.0, "")}}))
    assert "other" not in W.WEIGHTINGS
    with pytest.raises(TypeError):
        W.register_weighting("x")(int)


@pytest.mark.parametrize("weighting", list(W.WEIGHTINGS))
def test_every_weighting_trains_every_multi_task_network(weighting):
    spec = SPECS["multimnist"]
    x, y = _batch(spec)
    for name in ("gs", "mtvib"):   # a deterministic and a VIB network (stl, uwl, stvib: the same layers)
        model = build_model(name, spec, weighting=weighting, latent_dim=8)
        assert type(model.weighting) is W.WEIGHTINGS[weighting]
        assert model.hparams["weighting"] == weighting
        model.compile(optimizer="adam")
        logs = model.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["loss"]), (name, weighting)
        assert set(model.weighting.logs()) <= set(logs)


def test_paper_models_keep_their_weighting_and_defaults():
    spec = SPECS["multimnist"]
    expected = {"stl": "fixed", "gs": "fixed", "uwl": "uncertainty", "stvib": "fixed", "mtvib": "uncertainty",
                "vib_mlp": "fixed", "mlp": "fixed", "lenet_stl": "fixed", "lenet_mtl": "fixed", "mmoe": "fixed",
                "mtcrl": "fixed", "lenet_mtvib": "uncertainty", "bmtl": "fixed", "vbmtl": "fixed", "vmtl": "fixed", "domain_mtvib": "uncertainty"}
    assert {n: default_weighting(n) for n in MODEL_NAMES} == expected
    assert build_model("gs", spec).weighting.weights_by_task == {"top_left": 0.5, "bottom_right": 0.5}
    assert build_model("stl", spec).weighting.weights_by_task == {"top_left": 1.0, "bottom_right": 1.0}
    # the recipe's default (1/K) is GS's own: --weighting fixed on mtvib gets the class default (1 each)
    assert build_model("mtvib", spec, weighting="fixed", latent_dim=8).weighting.weights_by_task == {
        "top_left": 1.0, "bottom_right": 1.0}
    assert isinstance(build_model("uwl", spec, init_log_sigma=0.3).weighting, UncertaintyWeighting)


def test_weighting_errors_are_clear(capsys):
    from tf_mtvib import train

    spec = SPECS["multimnist"]
    with pytest.raises(ValueError, match="unknown weighting 'nope'"):
        build_model("gs", spec, weighting="nope")
    with pytest.raises(ValueError, match="init_log_sigma is a hyper-parameter of the 'uncertainty' weighting"):
        build_model("gs", spec, init_log_sigma=0.5)
    with pytest.raises(SystemExit, match="task_weights is a hyper-parameter of the 'fixed' weighting"):
        train.build_config(train.parse_args(["--dataset", "multimnist", "--model", "mtvib", "--task-weights", "1,2"]))
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--dataset", "multimnist", "--model", "gs", "--weighting", "nope"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_gs_search_needs_the_fixed_weighting(tmp_path):
    from tf_mtvib import tune

    cfg = tune.build_config(tune.parse_args(["--dataset", "multimnist", "--model", "gs", "--preset", "smoke",
                                             "--weighting", "uncertainty"]))
    with pytest.raises(tune.TuneError, match="task_weights.*'fixed' weighting"):
        tune.tune(cfg, tmp_path / "t")


def test_logs_and_callbacks_come_from_the_class():
    uw = UncertaintyWeighting(["a", "b"], init_log_sigma=0.5)
    assert {k: float(v) for k, v in uw.logs().items()} == pytest.approx({"a_sigma": np.exp(0.5), "b_sigma": np.exp(0.5)})
    assert FixedWeighting(["a"]).logs() == {}
    assert FixedWeighting(["a"]).callbacks() == [] and uw.callbacks() == []   # no per-epoch state


# --------------------------------------------------------------------------
# DWA (Liu, Johns and Davison 2019)
# --------------------------------------------------------------------------
def _dwa_by_hand(epoch_means, T=2.0):
    """w(t) for every epoch t = 1.. from the list of per-epoch mean losses L(1), L(2), ... (numpy)."""
    out = []
    for t in range(1, len(epoch_means) + 2):
        if t <= 2:
            out.append(np.ones(len(epoch_means[0])))
        else:
            r = np.asarray(epoch_means[t - 2], np.float64) / np.asarray(epoch_means[t - 3], np.float64)
            e = np.exp(r / T)
            out.append(len(r) * e / e.sum())
    return out


def test_dwa_weights_follow_the_formula_on_a_hand_made_loss_history():
    from tf_mtvib.weightings import DynamicWeightAverage

    tasks = ["a", "b", "c"]
    dwa = DynamicWeightAverage(tasks)
    # per-step losses of four epochs (uneven step counts), and what validation calls see
    history = [[[2.0, 1.0, 3.0], [1.0, 1.5, 2.0]],
               [[1.2, 1.1, 1.0], [0.8, 0.7, 1.4], [1.0, 0.6, 0.6]],
               [[0.5, 0.9, 0.9]],
               [[0.4, 0.2, 0.8], [0.2, 0.4, 0.6]]]
    means = [np.mean(np.asarray(e, np.float64), axis=0) for e in history]
    expected = _dwa_by_hand(means)
    for epoch, steps in enumerate(history):
        w = expected[epoch]
        np.testing.assert_allclose(dwa.task_weights().numpy(), w, rtol=1e-5)
        assert {k: float(v) for k, v in dwa.logs().items()} == pytest.approx(
            {f"{t}_weight": w[i] for i, t in enumerate(tasks)}, rel=1e-5)
        for losses in steps:
            ce = {t: tf.constant(v) for t, v in zip(tasks, losses)}
            assert float(dwa(ce, training=True)) == pytest.approx(float(np.dot(w, losses)), rel=1e-5)
            dwa({t: tf.constant(100.0) for t in tasks}, training=False)   # validation: not accumulated
        dwa.end_epoch()
    np.testing.assert_allclose(dwa.task_weights().numpy(), expected[4], rtol=1e-5)
    assert float(np.sum(expected[4])) == pytest.approx(3.0)
    assert not np.allclose(expected[4], 1.0)            # the history above does move the weights
    # an epoch without training steps changes nothing
    dwa.end_epoch()
    np.testing.assert_allclose(dwa.task_weights().numpy(), expected[4], rtol=1e-5)
    assert float(dwa.epochs_done.numpy()) == 4.0
    # temperature: T -> large gives equal weights
    hot = DynamicWeightAverage(tasks, dwa_temperature=1e6)
    hot.previous_losses.assign(np.array([means[1], means[0]], np.float32))
    hot.epochs_done.assign(2.0)
    np.testing.assert_allclose(hot.task_weights().numpy(), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="dwa_temperature"):
        DynamicWeightAverage(tasks, dwa_temperature=0.0)


def test_dwa_state_survives_a_keras_round_trip(tmp_path):
    spec = SPECS["multimnist"]
    model = build_model("gs", spec, weighting="dwa", dwa_temperature=1.5)
    assert model.hparams["weighting"] == "dwa" and model.hparams["dwa_temperature"] == 1.5
    for losses in ([2.0, 1.0], [1.0, 1.0], [0.5, 0.9]):
        model.weighting({t: tf.constant(v) for t, v in zip(spec.task_names, losses)}, training=True)
        model.weighting.end_epoch()
    model.weighting({t: tf.constant(0.3) for t in spec.task_names}, training=True)   # mid-epoch accumulators
    before = model.weighting.task_weights().numpy()
    assert not np.allclose(before, 1.0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.weighting) is type(model.weighting) and loaded.weighting.dwa_temperature == 1.5
    for a, b in zip(model.weighting.non_trainable_weights, loaded.weighting.non_trainable_weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.name)
    np.testing.assert_allclose(loaded.weighting.task_weights().numpy(), before, rtol=1e-6)
    # the weights file of a checkpoint (BackupAndRestore) holds them too
    model.save_weights(tmp_path / "w.weights.h5")
    fresh = build_model("gs", spec, weighting="dwa", dwa_temperature=1.5)
    fresh.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_allclose(fresh.weighting.task_weights().numpy(), before, rtol=1e-6)


def test_dwa_fit_updates_at_epoch_ends_and_logs_the_weights():
    spec = SPECS["multimnist"]
    keras.utils.set_random_seed(0)
    model = build_model("gs", spec, weighting="dwa")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = _batch(spec, 16)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    hist = model.fit(ds, epochs=4, verbose=0, validation_data=ds).history
    means = [np.array([hist[f"{t}_loss"][e] for t in spec.task_names]) for e in range(4)]
    expected = _dwa_by_hand(means)
    for e in range(4):   # the epoch's logs hold the weights used in that epoch
        np.testing.assert_allclose([hist[f"{t}_weight"][e] for t in spec.task_names], expected[e], rtol=1e-4)
    np.testing.assert_allclose(model.weighting.task_weights().numpy(), expected[4], rtol=1e-4)
    assert float(model.weighting.epochs_done.numpy()) == 4.0


@pytest.mark.slow
def test_dwa_under_mirrored_strategy_matches_one_device():
    import json
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "tests" / "mirrored_step.py"), "gs:dwa"],
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])["gs:dwa"]
    assert r["replicas"] == 2
    single, mirrored = r["weighting_state_single"], r["weighting_state_mirrored"]
    assert single["epochs_done"] == mirrored["epochs_done"] == 3.0      # once per epoch, not once per replica
    np.testing.assert_allclose(mirrored["previous_losses"], single["previous_losses"], rtol=1e-3)


def test_train_cli_with_dwa_logs_its_weights_and_resumes_its_state(tmp_path, data_dir):
    """train.py --weighting dwa: two epochs, then --resume for a third; the third epoch's weights
    follow from the first two epochs' losses, which only the checkpoint carried across."""
    import json

    from tf_mtvib import train

    run = tmp_path / "run"
    assert train.main(["--dataset", "multimnist", "--model", "gs", "--weighting", "dwa", "--preset", "smoke",
                       "--epochs", "2", "--output-dir", str(run), "--data-dir", str(data_dir), "--verbose", "0",
                       "--eval-samples", "0"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["hparams"] == {"weighting": "dwa"}
    keras.backend.clear_session()
    assert train.main(["--resume", "--output-dir", str(run), "--epochs", "3", "--data-dir", str(data_dir),
                       "--verbose", "0"]) == 0
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1, 2]
    tasks = SPECS["multimnist"].task_names
    means = [np.array([r[f"{t}_loss"] for t in tasks]) for r in history]
    expected = _dwa_by_hand(means)
    for row, w in zip(history, expected):
        np.testing.assert_allclose([row[f"{t}_weight"] for t in tasks], w, rtol=1e-4)
    assert not np.allclose(expected[2], 1.0)
    loaded = keras.models.load_model(run / "model.keras")
    assert loaded.hparams["weighting"] == "dwa" and float(loaded.weighting.epochs_done.numpy()) == 3.0


def test_dwa_in_the_custom_training_loop_and_its_checkpoint(tmp_path):
    """distributed.custom_fit (the multi-worker loop) runs the weighting's epoch-end update
    before its checkpoint, so a resumed loop continues the DWA history."""
    from tf_mtvib import distributed
    from tf_mtvib.datasets import Split

    spec = SPECS["multimnist"]
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (16,) + spec.input_shape, dtype=np.uint8),
                  {t: rng.integers(0, 10, 16) for t in spec.task_names}, spec)

    def fresh():
        model = build_model("gs", spec, weighting="dwa")
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        return model

    strategy = tf.distribute.get_strategy()
    first = fresh()
    distributed.custom_fit(first, strategy, split, 8, 2, tmp_path, verbose=0)
    assert float(first.weighting.epochs_done.numpy()) == 2.0
    state = first.weighting.previous_losses.numpy()
    assert not np.allclose(state, 1.0)
    resumed = fresh()
    distributed.custom_fit(resumed, strategy, split, 8, 3, tmp_path, verbose=0)   # restores 2 epochs, runs 1
    assert float(resumed.weighting.epochs_done.numpy()) == 3.0
    np.testing.assert_allclose(resumed.weighting.previous_losses.numpy()[1], state[0], rtol=1e-6)
