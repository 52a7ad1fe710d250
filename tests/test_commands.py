"""The commands as a new user types them: ``python train.py --dataset ...`` trains
MTVIB, ``python -m tf_mtvib.export --tflite`` exports the latest finished run,
``import tf_mtvib`` lets plain Keras load a run's model, and the console scripts.

The commands run in a fresh working directory (``runs/`` and ``export/`` are
relative to it), as subprocesses, exactly as written in the README.
"""
import ast
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tf_mtvib import export, runs, train

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMANDS = ("train", "evaluate", "export", "tune", "reproduce", "launch")


def _env(**extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return env


def _run(args, cwd, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, ):
    value = os.environ.get("TF_MTVIB_DATA_DIR")
    if not value:
        pytest.skip("real-data test: set TF_MTVIB_DATA_DIR")
    return tmp_path_factory.mktemp("user")


@pytest.fixture(scope="module")
def trained(workdir):
    """``python train.py --dataset multimnist --preset smoke``: no --model, no --output-dir."""
    proc = _run([str(REPO / "train.py"), "--dataset", "multimnist", "--preset", "smoke", "--verbose", "0"], workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    made = sorted((workdir / "runs").iterdir())
    assert len(made) == 1 and made[0].name.startswith("multimnist-mtvib-")
    return made[0]


# --------------------------------------------------------------------------
# train.py: MTVIB by default
# --------------------------------------------------------------------------
def test_train_defaults_to_mtvib_and_says_so(capsys):
    assert train.parse_args(["--dataset", "mtfl"]).model == train.DEFAULT_MODEL == "mtvib"
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--help"])
    assert e.value.code == 0
    assert "(default: mtvib)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.slow
def test_train_dataset_flag_trains_mtvib(trained):
    run = runs.load_run(trained)
    assert run.config["model"] == "mtvib" and run.config["preset"] == "smoke"
    model = run.model
    assert model.model_name == "mtvib" and model.is_stochastic  # a VIB: it has a Gaussian latent
    assert runs.is_finished(trained)


# --------------------------------------------------------------------------
# export without --run
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_export_tflite_without_run_takes_the_latest_finished_run(trained, workdir):
    root = workdir / "runs"
    older = root / "older-finished"
    shutil.copytree(trained, older)
    t = (trained / runs.METRICS).stat().st_mtime
    os.utime(older / runs.METRICS, (t - 3600, t - 3600))
    unfinished = root / "newer-unfinished"  # newest of all, but it has no metrics.json
    unfinished.mkdir()
    for name in (runs.CONFIG, runs.MODEL):
        shutil.copy(trained / name, unfinished / name)
    try:
        proc = _run(["-m", "tf_mtvib.export", "--tflite"], workdir)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rel = pathlib.Path("runs") / trained.name
        assert f"no --run given: exporting {rel}" in proc.stderr
        assert f"exported multimnist_mtvib version 1 to export from run {rel}" in proc.stdout
        assert (workdir / "export" / "multimnist_mtvib" / "1" / "saved_model.pb").is_file()
        assert (workdir / "export" / "multimnist_mtvib.tflite").is_file()
        assert "TFLite float32" in proc.stdout  # the check ran on the run's test split
    finally:
        shutil.rmtree(older)
        shutil.rmtree(unfinished)


def test_export_without_run_and_no_finished_run_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert export.main(["--tflite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tf_mtvib.export: error: no --run given and no runs folder runs")
    (tmp_path / "runs" / "half").mkdir(parents=True)
    (tmp_path / "runs" / "half" / runs.CONFIG).write_text('{"dataset": "mnist", "model": "mlp"}')
    assert export.main(["--tflite"]) == 2
    err = capsys.readouterr().err
    assert "no finished run under runs" in err and "python train.py" in err
    assert not (tmp_path / "export").exists()


# --------------------------------------------------------------------------
# import tf_mtvib registers the Keras classes
# --------------------------------------------------------------------------
@pytest.mark.parametrize("imports", ["import tf_mtvib, keras", "import tf_mtvib.layers, tensorflow; import keras"])
@pytest.mark.slow
def test_import_registers_keras_classes_in_a_fresh_process(trained, workdir, imports):
    code = (f"{imports}\n"
            f"m = keras.saving.load_model('runs/{trained.name}/model.keras')\n"
            f"print(type(m).__name__, m.model_name)\n")
    proc = _run(["-c", code], workdir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["MultiTaskModel", "mtvib"]


@pytest.mark.slow
def test_without_tf_mtvib_keras_cannot_load_then_importing_it_registers(trained, workdir):
    code = ("import keras\n"
            f"path = 'runs/{trained.name}/model.keras'\n"
            "try:\n"
            "    keras.saving.load_model(path)\n"
            "except TypeError as e:\n"
            "    print('before:', 'MultiTaskModel' in str(e))\n"
            "import tf_mtvib\n"
            "print('after:', type(keras.saving.load_model(path)).__name__)\n")
    proc = _run(["-c", code], workdir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["before:", "True", "after:", "MultiTaskModel"]


def test_every_command_answers_help_without_importing_tensorflow(tmp_path):
    """``--help`` (and a wrong flag) answer at once: no command line imports TensorFlow or
    Keras to build its parser; the flags of the models and weightings come from tf_mtvib.catalogue."""
    scripts = _console_scripts()
    calls = [(target, []) for target in scripts.values()]
    calls += [("tf_mtvib.reproduce.__main__:main", [sub]) for sub in ("mtl", "vib", "protocols")]
    code = ("import contextlib, importlib, io, sys\n"
            f"for target, head in {calls!r}:\n"
            "    module, func = target.split(':')\n"
            "    out = io.StringIO()\n"
            "    try:\n"
            "        with contextlib.redirect_stdout(out):\n"
            "            getattr(importlib.import_module(module), func)(head + ['--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "    assert 'usage:' in out.getvalue(), (target, head)\n"
            "print(len(" + repr(calls) + "), sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    proc = _run(["-c", code], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().split(maxsplit=1) == [str(len(calls)), "[]"]


# --------------------------------------------------------------------------
# Console scripts
# --------------------------------------------------------------------------
def _console_scripts():
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    entry_points = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "entry_points"))
    return dict(line.replace(" ", "").split("=", 1) for line in entry_points["console_scripts"])


def test_console_scripts_cover_the_main_commands_and_answer_help(capsys):
    import importlib

    scripts = _console_scripts()
    assert sorted(scripts) == sorted(f"tf-mtvib-{c}" for c in COMMANDS)
    for name, target in scripts.items():
        module, func = target.split(":")
        main = getattr(importlib.import_module(module), func)
        try:                      # what the generated script does: sys.exit(main())
            code = main(["--help"])
        except SystemExit as e:
            code = e.code
        assert code in (0, None), name
        assert "usage:" in capsys.readouterr().out, name
