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
    del W.WEIGHTINGS["toy_power"]


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
                "vib_mlp": "fixed", "mlp": "fixed"}
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
