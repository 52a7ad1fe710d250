"""The robustness sweep, its report files and the command line (tf_mtvib.evaluate)."""
import json
import os
import pathlib

import numpy as np
import pytest
import keras
import tensorflow as tf
from PIL import Image

from tf_mtvib import attacks as A
from tf_mtvib import evaluate as E
from tf_mtvib.datasets import to_dataset
from tf_mtvib.datasets.spec import DatasetSpec, Task
from tf_mtvib.datasets.split import Split
from tf_mtvib.layers import FixedWeighting, GaussianLatent
from tf_mtvib.metrics import evaluate_accuracy
from tf_mtvib.models import MultiTaskModel

SPEC = DatasetSpec("tiny", (4, 4, 1), (Task("a", ("0", "1", "2")), Task("b", ("0", "1"))))


def tiny_model(stochastic=False, seed=0, name="tiny"):
    keras.utils.set_random_seed(seed)
    image = keras.Input(SPEC.input_shape, name="image")
    h = keras.layers.Dense(16, activation="tanh")(keras.layers.Flatten()(image))
    if stochastic:
        latent = GaussianLatent(4, name="latent")
        h = latent(h)
        latent.projection.bias.assign(np.r_[np.zeros(4), np.full(4, 5.0)].astype("float32"))
    outputs = {t: keras.layers.Dense(SPEC.task(t).num_classes, name=t)(h) for t in SPEC.task_names}
    return MultiTaskModel(keras.Model(image, outputs), FixedWeighting(SPEC.task_names), SPEC, model_name=name)


def tiny_split(n=50, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n,) + SPEC.input_shape, dtype=np.uint8)
    labels = {t.name: rng.integers(0, t.num_classes, n).astype(np.int64) for t in SPEC.tasks}
    return Split(images, labels, SPEC)


def parse_markdown_table(text):
    """The table's rows as dicts header -> cell (the separator row skipped)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    header, body = rows[0], rows[2:]
    assert set(rows[1]) <= {"---", "---:"}
    return header, [dict(zip(header, r)) for r in body]


# --------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------
def test_eps_zero_is_the_clean_pass_computed_once_per_batch(monkeypatch):
    model = tiny_model()
    split = tiny_split(50)
    calls = []
    original = model.probabilities
    monkeypatch.setattr(model, "probabilities", lambda x, samples=0: calls.append(samples) or original(x, samples))
    r = E.evaluate_robustness(model, split, "fgsm", [0.2, 0.0, 0.1], batch_size=20, verbose=0)
    assert r["eps"] == [0.0, 0.1, 0.2]                       # sorted, results in that order
    assert len(calls) == 3 * 3                                # 3 batches x (1 clean + 2 attacked)
    clean = evaluate_accuracy(model, to_dataset(split, 20))
    assert r["clean"] == pytest.approx(clean)
    for key in ("a", "b", "joint"):
        assert r["accuracy"][key][0] == pytest.approx(clean[key])
    assert r["num_examples"] == 50 and r["eval"] == "mean" and r["attack_grad"] == "mean"
    assert r["model"] == "tiny" and r["dataset"] == "tiny" and r["tasks"] == ["a", "b"]


def test_fgsm_sweep_equals_the_attack_applied_directly():
    model = tiny_model()
    split = tiny_split(40)
    r = E.evaluate_robustness(model, split, "fgsm", [0.0, 0.05, 0.3], batch_size=16, verbose=0)
    x = split.images.astype(np.float32) / 255.0
    for i, eps in enumerate(r["eps"]):
        x_adv = A.fgsm(A.network_logits(model.network), x, split.labels, eps)
        probs = model.probabilities(x_adv)
        for t in SPEC.task_names:
            expected = np.mean(np.argmax(probs[t].numpy(), -1) == split.labels[t])
            assert r["accuracy"][t][i] == pytest.approx(expected), (t, eps)
    assert r["accuracy"]["joint"][2] < r["accuracy"]["joint"][0]


def test_modes_max_examples_and_tf_data_input():
    model = tiny_model(stochastic=True)
    split = tiny_split(30)
    r = E.evaluate_robustness(model, to_dataset(split, 8), "pgd", [0, 0.1], eval_samples=3, eot_samples=2,
                              steps=2, max_examples=20, verbose=0)
    assert r["num_examples"] == 20
    assert (r["eval"], r["attack_grad"]) == ("mc3", "eot2")
    assert r["pgd"] == {"steps": 2, "random_start": True, "step_size": "2.5*eps/steps"}
    det = E.evaluate_robustness(tiny_model(), split, "fgsm", [0, 0.1], eval_samples=3, eot_samples=2, verbose=0)
    assert (det["eval"], det["attack_grad"]) == ("mean", "mean")   # no posterior: the modes collapse
    with pytest.raises(ValueError, match="unknown attack"):
        E.evaluate_robustness(model, split, "cw", [0.1], verbose=0)


@pytest.mark.parametrize("eps,message", [
    ([], "empty"), ([0.1, -0.1], r"\[0, 1\]"), ([0.5, 1.5], r"\[0, 1\]"), ([0.1, 0.1], "repeats"),
    ([float("nan")], r"\[0, 1\]"),
])
def test_check_eps_rejects_bad_lists(eps, message):
    with pytest.raises(ValueError, match=message):
        E.check_eps(eps)


def test_parse_eps():
    assert E.parse_eps("0, 0.05,0.1") == [0.0, 0.05, 0.1]
    assert E.parse_eps("0.3,0") == [0.0, 0.3]
    for bad in ("0,abc", "0,,0.1", "", "0.1;0.2"):
        with pytest.raises(ValueError, match="eps"):
            E.parse_eps(bad)


# --------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------
def _results():
    split = tiny_split(30)
    det = E.evaluate_robustness(tiny_model(name="det"), split, "fgsm", [0, 0.1, 0.25], verbose=0)
    vib = E.evaluate_robustness(tiny_model(True, name="vib"), split, "fgsm", [0, 0.1, 0.25],
                                eval_samples=4, eot_samples=3, verbose=0)
    return det, vib


def _check_png(path, min_width):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= min_width and im.size[1] > 100


def test_single_run_report_matches_the_json(tmp_path):
    det, _ = _results()
    paths = E.write_report([det], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["robustness.json", "robustness.md", "robustness.png"]
    doc = json.loads(paths["json"].read_text())
    (result,) = doc["results"]
    assert doc["eps"] == result["eps"] == [0.0, 0.1, 0.25] and doc["attack"] == "fgsm"
    text = paths["table"].read_text()
    assert "eval=mean, attack_grad=mean" in text and "FGSM" in text
    header, rows = parse_markdown_table(text)
    assert header == ["Task", "eps=0", "eps=0.1", "eps=0.25"]
    assert [r["Task"] for r in rows] == ["a", "b", "joint"]          # Tables III-V: tasks then joint
    for row in rows:
        for j, eps in enumerate(result["eps"]):
            assert float(row[f"eps={eps:g}"]) == pytest.approx(100 * result["accuracy"][row["Task"]][j], abs=0.005)
    _check_png(paths["plot"], 3 * 200)


def test_comparison_report_has_a_row_per_model_and_task(tmp_path):
    det, vib = _results()
    paths = E.write_report([det, vib], tmp_path)
    doc = json.loads(paths["json"].read_text())
    assert [r["model"] for r in doc["results"]] == ["det", "vib"]
    header, rows = parse_markdown_table(paths["table"].read_text())
    assert header[:2] == ["Model", "Task"] and len(rows) == 2 * 3
    by_model = {"det [eval=mean, attack_grad=mean]": doc["results"][0],
                "vib [eval=mc4, attack_grad=eot3]": doc["results"][1]}
    assert {r["Model"] for r in rows} == set(by_model)
    for row in rows:
        result = by_model[row["Model"]]
        for j, eps in enumerate(result["eps"]):
            assert float(row[f"eps={eps:g}"]) == pytest.approx(100 * result["accuracy"][row["Task"]][j], abs=0.005)
    _check_png(paths["plot"], 3 * 200)


# --------------------------------------------------------------------------
# Command line: one-line errors, non-zero exit
# --------------------------------------------------------------------------
def _fake_run(path, dataset="multimnist", model_file=True):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"dataset": dataset, "model": "gs", "data": {}}))
    if model_file:
        (path / "model.keras").write_bytes(b"")
    return str(path)


def _error(capsys, argv):
    code = E.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_cli_errors(tmp_path, capsys):
    assert "no such run directory" in _error(capsys, ["--run", str(tmp_path / "missing")])
    no_model = _fake_run(tmp_path / "no_model", model_file=False)
    assert "no trained model" in _error(capsys, ["--run", no_model])
    assert "not a run directory" in _error(capsys, ["--run", str(tmp_path)])
    mm, fa = _fake_run(tmp_path / "mm"), _fake_run(tmp_path / "fa", dataset="multifashion")
    msg = _error(capsys, ["--run", mm, "--run", fa])
    assert "different data sets" in msg and "multifashion" in msg
    for eps in ("0,abc", "0,-0.1", "0,0.1,0.1", "0,2", ""):
        assert "eps" in _error(capsys, ["--run", mm, "--eps", eps])
    assert "--loss" in _error(capsys, ["--run", mm, "--loss", "nose"])
    assert "--eot-samples" in _error(capsys, ["--run", mm, "--eot-samples", "-1"])


# --------------------------------------------------------------------------
# End to end on real runs written by train.py (needs the data)
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    if not os.environ.get("TF_MTVIB_DATA_DIR"):
        pytest.skip("real-data test: set TF_MTVIB_DATA_DIR")
    from tf_mtvib.train import main as train_main

    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for model in ("mtvib", "gs"):
        runs[model] = root / model
        assert train_main(["--dataset", "multimnist", "--model", model, "--preset", "smoke", "--epochs", "1",
                           "--num-train", "64", "--num-test", "40", "--output-dir", str(runs[model]),
                           "--verbose", "0"]) == 0
    return runs


@pytest.mark.slow
def test_cli_compares_runs(smoke_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = E.main(["--run", str(smoke_runs["mtvib"]), "--run", str(smoke_runs["gs"]), "--attack", "fgsm",
                   "--eps", "0,0.1", "--eval-samples", "2", "--eot-samples", "2", "--batch-size", "16",
                   "--output", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    doc = json.loads((out / "robustness.json").read_text())
    assert [(r["model"], r["eval"], r["attack_grad"], r["num_examples"]) for r in doc["results"]] == [
        ("mtvib", "mc2", "eot2", 40), ("gs", "mean", "mean", 40)]
    table = (out / "robustness.md").read_text()
    assert table in printed
    header, rows = parse_markdown_table(table)
    assert len(rows) == 2 * 3 and header[2:] == ["eps=0", "eps=0.1"]
    _check_png(out / "robustness.png", 3 * 200)


@pytest.mark.slow
def test_cli_single_run_writes_into_the_run_directory(smoke_runs, capsys):
    run = smoke_runs["gs"]
    code = E.main(["--run", str(run), "--attack", "pgd", "--steps", "2", "--eps", "0,0.2", "--max-examples", "20",
                   "--quiet"])
    assert code == 0
    doc = json.loads((run / "robustness.json").read_text())
    (r,) = doc["results"]
    assert r["attack"] == "pgd" and r["num_examples"] == 20 and r["run"] == str(run)
    assert r["accuracy"]["joint"][1] <= r["accuracy"]["joint"][0]
    assert (run / "robustness.md").exists() and (run / "robustness.png").exists()


# --------------------------------------------------------------------------
# Modes (#11.5) and the protocol options recorded with each result (#16)
# --------------------------------------------------------------------------
def _mtvib_with_a_wide_posterior():
    """A real MTVIB (Tables I-II network, paper latent head) whose posterior scale is
    widened to about 0.7 or more (the scale head's BN shifted by +5), seeded."""
    from tf_mtvib.datasets import get_spec
    from tf_mtvib.models import build_model

    keras.utils.set_random_seed(0)
    spec = get_spec("multimnist")
    model = build_model("mtvib", spec, latent_dim=8)
    model.latent_layers[0].scale_head.batchnorm.beta.assign(np.full(8, 5.0, np.float32))
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (24, 36, 36, 1), dtype=np.uint8),
                  {t: rng.integers(0, 10, 24).astype(np.int64) for t in spec.task_names}, spec)
    return model, split


def test_resolve_mode():
    assert E.resolve_mode() == ("mean", 0, 0)
    assert E.resolve_mode("sampled") == ("sampled", 1, 1)
    assert E.resolve_mode(None, 1, 1) == ("sampled", 1, 1)        # what the report helper passes
    from tf_mtvib.metrics import EOT_SAMPLES, MC_SAMPLES
    from tf_mtvib.reproduce.mtl import settings

    assert E.resolve_mode("eot") == ("eot", MC_SAMPLES, EOT_SAMPLES) == ("eot", 12, 8)
    # one source for the EOT draw count: evaluate's eot mode and the reproductions' fgsm-eot agree
    eot = settings()["fgsm-eot"]
    assert (eot["eval_samples"], eot["eot_samples"]) == E.MODES["eot"]
    assert E.resolve_mode("eot", eot_samples=8) == ("eot", 12, 8)
    assert E.resolve_mode(None, 12, 0)[0] == "mixed"
    with pytest.raises(ValueError, match="sampled"):
        E.resolve_mode("sampled", eval_samples=3)
    with pytest.raises(ValueError, match="unknown mode"):
        E.resolve_mode("median")


def test_sampled_mode_is_one_draw_per_prediction_and_per_gradient():
    model, split = _mtvib_with_a_wide_posterior()
    x = split.images[:6].astype(np.float32) / 255.0
    y = {t: v[:6] for t, v in split.labels.items()}
    # a fresh draw for every prediction: two calls differ, and neither is the mean
    p1, p2, mean = model.probabilities(x, samples=1), model.probabilities(x, samples=1), model.probabilities(x)
    assert not np.allclose(p1["top_left"], p2["top_left"]) and not np.allclose(p1["top_left"], mean["top_left"])
    # the gradient through exactly one draw: logits of shape (1, B, C), a new draw per gradient
    fn = A.model_fn_for(model, 1)
    assert fn(tf.constant(x))["top_left"].shape == (1, 6, 10)
    g = tf.function(lambda x: A.loss_gradient(fn, x, y))
    g1, g2 = g(tf.constant(x)).numpy(), g(tf.constant(x)).numpy()
    assert not np.allclose(g1, g2)
    assert not np.allclose(g1, A.loss_gradient(A.model_fn_for(model), x, y).numpy())


def test_sampled_mode_differs_from_mean_on_mtvib_and_equals_it_on_gs():
    model, split = _mtvib_with_a_wide_posterior()
    eps = [0.0, 0.1, 0.3]
    mean = E.evaluate_robustness(model, split, "fgsm", eps, verbose=0)
    sampled = E.evaluate_robustness(model, split, "fgsm", eps, mode="sampled", verbose=0, seed=1)
    again = E.evaluate_robustness(model, split, "fgsm", eps, eval_samples=1, eot_samples=1, verbose=0, seed=2)
    assert (sampled["mode"], sampled["eval"], sampled["attack_grad"]) == ("sampled", "mc1", "eot1")
    assert (again["mode"], mean["mode"]) == ("sampled", "mean")
    assert sampled["accuracy"] != mean["accuracy"] and again["accuracy"] != sampled["accuracy"]
    from tf_mtvib.datasets import get_spec
    from tf_mtvib.models import build_model

    keras.utils.set_random_seed(0)
    gs = build_model("gs", get_spec("multimnist"))
    a = E.evaluate_robustness(gs, split, "fgsm", eps, verbose=0)
    b = E.evaluate_robustness(gs, split, "fgsm", eps, mode="sampled", verbose=0)
    assert a["accuracy"] == b["accuracy"] and (b["mode"], b["eval"], b["attack_grad"]) == ("sampled", "mean", "mean")


def test_protocol_options_are_recorded_and_described():
    model = tiny_model()
    split = tiny_split(20)
    default = E.evaluate_robustness(model, split, "fgsm", [0, 0.1], verbose=0)
    assert {k: default[k] for k in ("space", "clip", "loss", "batchnorm", "mode")} == {
        "space": "unit", "clip": True, "loss": "sum", "batchnorm": "inference", "mode": "mean"}
    stats = E.input_statistics(split.images)
    r = E.evaluate_robustness(model, split, "fgsm", [0, 0.1 / stats["std"][0]], verbose=0, space="standardized",
                              input_stats=stats, clip=False, batchnorm="batch", loss="clipped_prob_ce")
    assert (r["space"], r["clip"], r["batchnorm"], r["loss"]) == ("standardized", False, "batch", "clipped_prob_ce")
    assert r["input_stats"] == {"mean": stats["mean"], "std": stats["std"]}
    flat = split.images.reshape(-1) / 255.0
    assert stats["mean"][0] == pytest.approx(flat.mean()) and stats["std"][0] == pytest.approx(flat.std())
    assert "space=standardized" in E.markdown_table([r]) and "no clip" in E.markdown_table([r])
    # eps beyond 1 is fine in pixel255 units, not in [0, 1] units
    p255 = E.evaluate_robustness(model, split, "fgsm", [0, 8.0], verbose=0, space="pixel255")
    assert p255["eps"] == [0.0, 8.0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        E.evaluate_robustness(model, split, "fgsm", [0, 8.0], verbose=0)
    with pytest.raises(ValueError, match="restarts"):
        E.evaluate_robustness(model, split, "fgsm", [0, 0.1], verbose=0, restarts=2)


def test_restarts_and_draws_take_the_worst_case():
    model = tiny_model()
    split = tiny_split(40)
    one = E.evaluate_robustness(model, split, "random_sign", [0, 0.3], verbose=0, seed=0)
    five = E.evaluate_robustness(model, split, "random_sign", [0, 0.3], verbose=0, seed=0, restarts=5)
    assert five["restarts"] == 5 and five["attack_grad"] == "none"
    assert five["accuracy"]["joint"][1] <= one["accuracy"]["joint"][1]
    pgd = E.evaluate_robustness(model, split, "pgd", [0, 0.1], steps=3, verbose=0, restarts=2)
    assert pgd["restarts"] == 2 and "worst of 2 restarts" in E.markdown_table([pgd])


@pytest.mark.slow
def test_cli_protocol_options(smoke_runs, tmp_path, capsys):
    out = tmp_path / "opts"
    code = E.main(["--run", str(smoke_runs["mtvib"]), "--eps", "0,0.5", "--mode", "sampled", "--space",
                   "standardized", "--no-clip", "--batchnorm", "batch", "--loss", "clipped_prob_ce",
                   "--max-examples", "16", "--output", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    (r,) = json.loads((out / "robustness.json").read_text())["results"]
    assert (r["mode"], r["eval"], r["attack_grad"], r["space"], r["clip"], r["batchnorm"], r["loss"]) == (
        "sampled", "mc1", "eot1", "standardized", False, "batch", "clipped_prob_ce")
    assert len(r["input_stats"]["mean"]) == 1 and 0 < r["input_stats"]["std"][0] < 1
    assert "--restarts" in _error(capsys, ["--run", str(smoke_runs["gs"]), "--restarts", "2"])
    assert "sampled" in _error(capsys, ["--run", str(smoke_runs["gs"]), "--mode", "sampled", "--eval-samples", "3"])


@pytest.mark.slow
def test_cli_cw_l2_targeted_and_untargeted_with_eot(smoke_runs, tmp_path, capsys):
    """--attack cw_l2: every task of MTVIB (EOT over 2 posterior draws) and GS, both kinds, one JSON each."""
    for targeted in ([], ["--targeted"]):
        out = tmp_path / ("t" if targeted else "u")
        code = E.main(["--run", str(smoke_runs["mtvib"]), "--run", str(smoke_runs["gs"]), "--attack", "cw_l2",
                       *targeted, "--cw-binary-steps", "1", "--cw-iterations", "20", "--max-examples", "10",
                       "--eot-samples", "2", "--output", str(out), "--quiet"])
        assert code == 0
        doc = json.loads((out / ("cw_l2-targeted.json" if targeted else "cw_l2.json")).read_text())
        assert [(r["model"], r["eot_samples"], r["targeted"]) for r in doc] == [
            ("mtvib", 2, bool(targeted)), ("gs", 0, bool(targeted))]
        assert all(set(r["tasks"]) == {"top_left", "bottom_right"} and r["num_examples"] == 10 for r in doc)
    assert "| mtvib | top_left |" in capsys.readouterr().out
    assert E.main(["--run", str(smoke_runs["gs"]), "--attack", "cw_l2", "--cw-iterations", "0", "--quiet"]) == 2
