"""The exporter: TF Serving layout, signatures, TF-only loading, TFLite/LiteRT, failures.

One small MTVIB run (the smoke preset of train.py on 36x36 MultiMNIST,
latent_dim 16) is exported once through the real command line, with float32,
float16 and int8 TFLite files; the other tests inspect that export or make
quick SavedModel-only exports next to it.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tf_mtvib import export as ex
from tf_mtvib.export_lite import LiteModel

REPO = pathlib.Path(__file__).resolve().parents[1]
TASKS = ("top_left", "bottom_right")
SHAPE = (36, 36, 1)
NAME = "multimnist_mtvib"


def _env():
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
    """A run trained by train.py's smoke preset (64 steps; enough for BatchNorm's
    moving statistics to settle, so the accuracy comparisons below compare a
    model that has learned something)."""
    from tf_mtvib import train

    path = tmp_path_factory.mktemp("run") / "mtvib"
    rc = train.main(["--dataset", "multimnist", "--model", "mtvib", "--preset", "smoke", "--latent-dim", "16",
                     "--num-train", "1024", "--num-test", "300", "--output-dir", str(path),
                     "--data-dir", str(data_dir), "--verbose", "0"])
    assert rc == 0
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, run_dir, data_dir):
    """The real command line: SavedModel + float32, float16 and int8 TFLite, checked on the test split."""
    out = tmp_path_factory.mktemp("export") / "export"
    summary = out.parent / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tf_mtvib.export", "--run", str(run_dir), "--output", str(out),
         "--quantize", "int8", "--quantize", "float16", "--calibration-size", "200",
         "--data-dir", str(data_dir), "--json", str(summary)],
        capture_output=True, text=True, env=_env(), cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "stdout": proc.stdout, "summary": json.loads(summary.read_text()),
            "sm": out / NAME / "1"}


@pytest.fixture(scope="module")
def model(run_dir):
    from tf_mtvib import runs

    return runs.load_run(run_dir).model


@pytest.fixture(scope="module")
def test_images(run_dir, data_dir):
    from tf_mtvib import runs

    split = runs.load_run(run_dir).load_split("test", data_dir=data_dir)
    return split.images.astype(np.float32) / 255.0, split.labels


def _tree(root: pathlib.Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _error_line(capsys):
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("tf_mtvib.export: error:")]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------
def test_serving_layout_and_models_config(exported):
    out, sm = exported["out"], exported["sm"]
    assert (sm / "saved_model.pb").is_file()
    assert (sm / "variables" / "variables.index").is_file()
    assert any(p.name.startswith("variables.data") for p in (sm / "variables").iterdir())
    assert sorted(p.name for p in (out / NAME).iterdir()) == ["1"]  # no temporary folder left
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [NAME, "models.config", f"{NAME}.tflite", f"{NAME}_float16.tflite", f"{NAME}_int8.tflite"])
    config = (out / "models.config").read_text()
    assert f'name: "{NAME}"' in config and f'base_path: "/models/{NAME}"' in config
    assert 'model_platform: "tensorflow"' in config
    info = json.loads((sm / "assets.extra" / "export.json").read_text())
    assert info["dataset"] == "multimnist" and info["model"] == "mtvib" and info["version"] == 1
    assert [t["name"] for t in info["tasks"]] == list(TASKS)
    assert info["signatures"]["predict_mc"]["samples"] == 12
    assert info["int8_calibration"]["split"] == "train" and info["int8_calibration"]["images"] == 200


def test_summary_lists_files_sizes_and_accuracies(exported):
    text, summary = exported["stdout"], exported["summary"]
    for label in ("SavedModel serving_default", "SavedModel predict_mc", "TFLite float32", "TFLite float16",
                  "TFLite int8", "MB", "int8 accuracy drop"):
        assert label in text, text
    sizes = {a["quantize"] or a["kind"]: a["bytes"] for a in summary["artifacts"]}
    assert sizes["int8"] < sizes["tflite"] / 3 and sizes["float16"] < sizes["tflite"] * 0.6
    rows = summary["check"]["rows"]
    assert summary["check"]["images"] == 300
    assert rows["tflite_float32"]["max_abs_diff"] < 1e-4
    assert rows["keras"]["max_abs_diff"] < 1e-5


def test_versions_increase_and_are_never_overwritten_without_force(exported, run_dir, capsys):
    out = exported["out"]
    pb1 = out / NAME / "1" / "saved_model.pb"
    before = pb1.stat().st_ino, pb1.stat().st_mtime_ns
    common = ["--run", str(run_dir), "--output", str(out), "--no-check", "--quiet"]
    assert ex.main(common) == 0
    assert ex.existing_versions(out / NAME) == [1, 2]
    assert f"{NAME}_int8.tflite is left from an earlier export" in capsys.readouterr().out  # not silently stale
    tree = _tree(out)
    assert ex.main(common + ["--version", "1"]) == 2
    assert "never overwritten" in _error_line(capsys)
    assert _tree(out) == tree and (pb1.stat().st_ino, pb1.stat().st_mtime_ns) == before
    assert ex.main(common + ["--version", "1", "--force"]) == 0
    assert pb1.stat().st_ino != before[0]  # a new file, renamed into place
    assert ex.existing_versions(out / NAME) == [1, 2]
    assert not [p for p in (out / NAME).iterdir() if p.name.startswith(".")]


def test_a_failed_export_leaves_nothing_behind(exported, run_dir, monkeypatch, tmp_path):
    out = tmp_path / "export"
    shutil.copytree(exported["out"] / NAME / "1", out / NAME / "1")
    (out / "models.config").write_text("previous\n")

    def broken(*args, **kwargs):
        raise RuntimeError("converter exploded\nwith a long traceback")

    monkeypatch.setattr(ex, "convert_saved_model", broken)
    tree = _tree(out)
    with pytest.raises(ex.ExportError, match="TFLite conversion .* failed: converter exploded"):
        ex.export_run(run_dir, output=out, tflite=True, check=False)
    assert _tree(out) == tree  # no version 2, no temporary files, models.config untouched
    assert (out / "models.config").read_text() == "previous\n"
    fresh = tmp_path / "fresh"
    with pytest.raises(ex.ExportError):
        ex.export_run(run_dir, output=fresh, tflite=True, check=False)
    assert _tree(fresh) == []  # the model folder it created is gone again


# --------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------
def test_signature_names_dtypes_and_shapes(exported):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported["sm"]))
    assert set(loaded.signatures.keys()) == {"serving_default", "predict_mc"}
    for key, kinds in (("serving_default", ("probs", "class")), ("predict_mc", ("probs", "class", "entropy"))):
        fn = loaded.signatures[key]
        args, kwargs = fn.structured_input_signature
        assert args == () and list(kwargs) == ["image"]
        assert kwargs["image"].dtype == tf.float32 and kwargs["image"].shape.as_list() == [None, *SHAPE]
        outputs = fn.structured_outputs
        assert set(outputs) == {f"{t}_{k}" for t in TASKS for k in kinds}
        for t in TASKS:
            assert outputs[f"{t}_probs"].dtype == tf.float32
            assert outputs[f"{t}_probs"].shape.as_list() == [None, 10]
            assert outputs[f"{t}_class"].dtype == tf.int64 and outputs[f"{t}_class"].shape.as_list() == [None]
            if "entropy" in kinds:
                assert outputs[f"{t}_entropy"].dtype == tf.float32
                assert outputs[f"{t}_entropy"].shape.as_list() == [None]


_FRESH = textwrap.dedent("""
    import sys
    sys.modules["tf_mtvib"] = None                # importing the package would fail
    sys.modules["tensorflow_probability"] = None
    import numpy as np
    import tensorflow as tf
    m = tf.saved_model.load(sys.argv[1])
    x = tf.constant(np.load(sys.argv[2]))
    out = {k: v.numpy() for k, v in m.signatures["serving_default"](image=x).items()}
    mc = {"mc_" + k: v.numpy() for k, v in m.signatures["predict_mc"](image=x).items()}
    np.savez(sys.argv[3], **out, **mc)
    print(type(m).__module__)
""")


def test_fresh_tensorflow_only_process_reproduces_the_model(exported, model, test_images, tmp_path):
    x = test_images[0][:32]
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-c", _FRESH, str(exported["sm"]), str(tmp_path / "x.npy"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, env=_env(),
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().startswith("tensorflow.")  # a plain restored TF object, no Keras class
    got = np.load(tmp_path / "out.npz")
    expected = model.probabilities(x)
    for t in TASKS:
        np.testing.assert_allclose(got[f"{t}_probs"], expected[t].numpy(), atol=1e-5)
        np.testing.assert_array_equal(got[f"{t}_class"], np.argmax(expected[t].numpy(), -1))
        np.testing.assert_allclose(got[f"mc_{t}_probs"].sum(-1), 1.0, atol=1e-5)
        assert (got[f"mc_{t}_entropy"] >= 0).all()


def test_mc_signature_probabilities_and_entropy(exported, test_images):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported["sm"]))
    x = tf.constant(test_images[0][:64])
    mc = loaded.signatures["predict_mc"]
    a, b = mc(image=x), mc(image=x)
    mean = loaded.signatures["serving_default"](image=x)
    for t in TASKS:
        p = a[f"{t}_probs"].numpy()
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
        h = a[f"{t}_entropy"].numpy()
        assert (h >= 0).all() and (h <= np.log(10) + 1e-5).all()
        np.testing.assert_allclose(h, -np.sum(p * np.log(np.maximum(p, 1e-30)), -1), atol=1e-4)
        np.testing.assert_array_equal(a[f"{t}_class"].numpy(), p.argmax(-1))
        assert not np.allclose(p, b[f"{t}_probs"].numpy())          # z is sampled, freshly each call
        assert not np.allclose(p, mean[f"{t}_probs"].numpy())
        # an average over 12 samples stays close to the mean-mode prediction
        assert np.mean(p.argmax(-1) == mean[f"{t}_class"].numpy()) > 0.8


@pytest.mark.slow
def test_saved_model_cli_show_and_run(exported):
    cli = shutil.which("saved_model_cli")
    cmd = [cli] if cli else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    sm = str(exported["sm"])
    show = subprocess.run(cmd + ["show", "--all", "--dir", sm], capture_output=True, text=True, env=_env(),
                          timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    text = show.stdout
    assert "signature_def['serving_default']" in text and "signature_def['predict_mc']" in text
    assert "inputs['image'] tensor_info" in text and "shape: (-1, 36, 36, 1)" in text
    for t in TASKS:
        assert f"outputs['{t}_probs']" in text and f"outputs['{t}_class']" in text
        assert f"outputs['{t}_entropy']" in text
    assert "DT_INT64" in text and "DT_FLOAT" in text
    # TF 2.21's saved_model_cli evaluates --input_exprs as Python literals only (np.zeros(...) is refused)
    zeros = str(np.zeros((2, *SHAPE)).tolist())
    run = subprocess.run(cmd + ["run", "--dir", sm, "--tag_set", "serve", "--signature_def", "serving_default",
                                "--input_exprs", f"image={zeros}"],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for t in TASKS:
        assert f"Result for output key {t}_class:\n[" in run.stdout and f"output key {t}_probs" in run.stdout


# --------------------------------------------------------------------------
# TFLite / LiteRT
# --------------------------------------------------------------------------
def _accuracy(probs, labels):
    return {t: float(np.mean(np.argmax(probs[f"{t}_probs"], -1) == labels[t])) for t in TASKS}


def test_tflite_float32_matches_the_saved_model(exported, test_images):
    import tensorflow as tf

    x, labels = test_images
    lite = LiteModel(exported["out"] / f"{NAME}.tflite")
    assert lite.input_names == ["image"]
    assert sorted(lite.output_names) == sorted(f"{t}_{k}" for t in TASKS for k in ("probs", "class"))
    (inp,) = lite.input_details().values()
    assert inp["dtype"] == np.float32 and list(inp["shape_signature"]) == [-1, *SHAPE]
    got = lite.predict(x, batch_size=100)
    ref = tf.saved_model.load(str(exported["sm"])).signatures["serving_default"](image=tf.constant(x))
    for t in TASKS:
        assert got[f"{t}_class"].dtype == np.int64 and got[f"{t}_probs"].dtype == np.float32
        np.testing.assert_allclose(got[f"{t}_probs"], ref[f"{t}_probs"].numpy(), atol=1e-4)
        np.testing.assert_array_equal(got[f"{t}_class"], ref[f"{t}_class"].numpy())


def test_quantised_models_run_close_to_float(exported, test_images):
    x, labels = test_images
    out = exported["out"]
    float_out = LiteModel(out / f"{NAME}.tflite").predict(x)
    acc_float = _accuracy(float_out, labels)
    for t in TASKS:  # the comparison means something only if the model has learned
        assert acc_float[t] > 0.3, acc_float

    int8 = LiteModel(out / f"{NAME}_int8.tflite")
    assert np.dtype(np.int8) in int8.tensor_dtypes()                 # quantised internally ...
    (inp,) = int8.input_details().values()
    assert inp["dtype"] == np.float32                                # ... with float32 input/outputs
    q = int8.predict(x)
    acc_int8 = _accuracy(q, labels)
    for t in TASKS:
        assert q[f"{t}_probs"].dtype == np.float32 and q[f"{t}_class"].dtype == np.int64
        # the int8 softmax output has steps of 1/256: ten rounded probabilities sum to 1 within 10 * 0.5/256
        np.testing.assert_allclose(q[f"{t}_probs"].sum(-1), 1.0, atol=0.02)
        assert abs(acc_int8[t] - acc_float[t]) <= 0.05, (acc_int8, acc_float)   # 300 images: loose
        assert np.mean(q[f"{t}_class"] == float_out[f"{t}_class"]) >= 0.9
        assert np.abs(q[f"{t}_probs"] - float_out[f"{t}_probs"]).mean() < 0.02

    f16 = LiteModel(out / f"{NAME}_float16.tflite").predict(x)
    for t in TASKS:
        np.testing.assert_allclose(f16[f"{t}_probs"], float_out[f"{t}_probs"], atol=1e-2)


def _image_families():
    """Every package family that reads one image (the per-task families, VMTL's, have their own export test in
    test_variational.py), with a data set it takes."""
    from tf_mtvib.families import PACKAGE_FAMILIES, get_family

    return [(n, (get_family(n).datasets or ("multimnist",))[0]) for n in PACKAGE_FAMILIES
            if get_family(n).inputs == "image" and get_family(n).prepare is None]


@pytest.mark.parametrize("name,dataset", _image_families())
def test_every_model_converts_in_mean_mode(name, dataset, tmp_path):
    """Mean mode holds no random op: every multi-task model converts and matches its SavedModel."""
    import tensorflow as tf

    from tf_mtvib.datasets import get_spec
    from tf_mtvib.export_lite import convert_saved_model
    from tf_mtvib.models import build_model

    spec = get_spec(dataset)
    model = build_model(name, spec, latent_dim=8)
    module, signatures = ex.build_serving_module(model, mc_samples=2)
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures=signatures)
    path = tmp_path / "m.tflite"
    path.write_bytes(convert_saved_model(tmp_path / "sm"))
    x = np.random.default_rng(0).random((4, *spec.input_shape), dtype=np.float32)
    got = LiteModel(path)(x)
    expected = model.probabilities(x)
    assert set(expected) == set(spec.task_names)
    for t in spec.task_names:
        np.testing.assert_allclose(got[f"{t}_probs"], expected[t].numpy(), atol=1e-4)


# --------------------------------------------------------------------------
# Failures: one line on stderr, exit status 2, nothing written
# --------------------------------------------------------------------------
def test_run_without_model_fails_clearly(run_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "config.json", bare / "config.json")
    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "tf_mtvib.export", "--run", str(bare), "--output", str(out)],
                          capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("tf_mtvib.export: error:")
    assert "no trained model" in proc.stderr
    assert not out.exists()


def test_model_and_run_config_must_agree(run_dir, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((run_dir / "config.json").read_text())
    config["dataset"] = "multifashion"
    (other / "config.json").write_text(json.dumps(config))
    os.symlink(run_dir / "model.keras", other / "model.keras")
    out = tmp_path / "export"
    assert ex.main(["--run", str(other), "--output", str(out), "--no-check", "--quiet"]) == 2
    line = _error_line(capsys)
    assert "trained for data set 'multimnist'" in line and "'multifashion'" in line
    assert not out.exists()


def test_unwritable_output_fails_clearly(run_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert ex.main(["--run", str(run_dir), "--output", str(blocker / "export"), "--no-check", "--quiet"]) == 2
    assert "not writable" in _error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # permissions do not stop root
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            assert ex.main(["--run", str(run_dir), "--output", str(locked), "--no-check", "--quiet"]) == 2
            assert "not writable" in _error_line(capsys)
            assert list(locked.iterdir()) == []
        finally:
            locked.chmod(0o755)


def test_model_names_and_models_config_text():
    text = ex.models_config_text(["b_model", "a_model"], "/srv/models/")
    assert text.index('name: "a_model"') < text.index('name: "b_model"')
    assert 'base_path: "/srv/models/a_model"' in text
    assert ex.signature_outputs(TASKS)["serving_default"] == [
        "top_left_probs", "top_left_class", "bottom_right_probs", "bottom_right_class"]
