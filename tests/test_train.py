"""Training: run directory, resume after a kill, NaN guard, MirroredStrategy."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tf_mtvib import runs
from tf_mtvib.train import PRESETS, build_config, main, parse_args

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def _train(*args, check=True, **kw):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, args)], env=ENV,
                          capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def test_config_resolution_order(tmp_path):
    hp = tmp_path / "best.json"
    hp.write_text(json.dumps({"hparams": {"beta": 0.01, "latent_dim": 32, "learning_rate": 3e-4}}))
    cfg = build_config(parse_args(["--dataset", "multimnist", "--model", "mtvib", "--preset", "cpu",
                                   "--hparams", str(hp), "--latent-dim", "64", "--num-train", "1000"]))
    assert cfg["hparams"] == {"beta": 0.01, "latent_dim": 64}
    assert cfg["training"]["learning_rate"] == 3e-4
    assert cfg["training"]["epochs"] == PRESETS["cpu"]["epochs"]
    assert cfg["data"]["num_train"] == 1000 and cfg["data"]["num_test"] == 10_000
    assert build_config(parse_args(["--dataset", "mtfl", "--model", "gs", "--preset", "cpu"]))["limits"] == {"max_train": 3000}
    paper = build_config(parse_args(["--dataset", "mtfl", "--model", "gs", "--task-weights", "1,2,3,4"]))
    assert paper["training"] == {**paper["training"], "epochs": 200, "batch_size": 200, "learning_rate": 1e-4}
    assert paper["hparams"]["task_weights"] == [1.0, 2.0, 3.0, 4.0]
    linear = build_config(parse_args(["--dataset", "mtfl", "--model", "mtvib", "--latent-head", "linear"]))
    assert linear["hparams"] == {"latent_head": "linear"}


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "cifar", "--model", "mtvib"], "invalid choice"),
    (["--dataset", "mtfl", "--model", "vgg"], "invalid choice"),
    (["--dataset", "mtfl", "--model", "gs", "--epochs", "0"], "must be > 0"),
    (["--dataset", "mtfl", "--model", "gs", "--task-weights", "a,b"], "task weights"),
    (["--model", "gs"], "required"),
    (["--dataset", "mtfl", "--model", "mtvib", "--latent-head", "conv"], "invalid choice"),
])
def test_bad_flags_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_the_fast_preset_is_the_candidate_its_committed_search_chose():
    """One source of truth: ``--preset fast`` resolves to exactly the configuration of ``--preset full`` plus the
    flags of the candidate that the committed search (docs/results/fast/search) chose, for MTVIB and GS."""
    from tf_mtvib.reproduce import fast

    cells = fast.load_cells(ROOT / "docs" / "results" / "fast")
    chosen = fast.choose({name: fast.reached(cell, fast.targets()) for name, cell in cells.items()})
    assert chosen is not None, "the committed search chose no candidate"
    for model in ("mtvib", "gs"):
        base = ["--dataset", fast.DATASET, "--model", model, "--seed", "1"]
        preset = build_config(parse_args([*base, "--preset", "fast"]))
        flags = build_config(parse_args([*base, "--preset", "full", *fast.CANDIDATES[chosen]]))
        assert {**preset, "preset": "full"} == flags
    off = build_config(parse_args(["--dataset", "multimnist", "--preset", "fast", "--no-fused-batchnorm"]))
    assert off["hparams"]["fused_batchnorm"] is False and off["training"]["precision"] == "mixed_bfloat16"
    assert "fused_batchnorm" not in build_config(parse_args(["--dataset", "multimnist", "--preset", "full"]))["hparams"]


def test_a_preset_chosen_for_one_data_set_refuses_the_others(tmp_path, capsys):
    from tf_mtvib.train import presets_for

    assert "fast" in presets_for("multimnist") and "fast" not in presets_for("mtfl")
    assert set(presets_for("mnist")) == set(PRESETS) - {"fast"}
    assert main(["--dataset", "mtfl", "--model", "gs", "--preset", "fast", "--output-dir", str(tmp_path / "r")]) == 2
    assert "chosen for multimnist only, not 'mtfl'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_option_of_another_data_set_is_refused():
    with pytest.raises(SystemExit, match="--num-train"):
        build_config(parse_args(["--dataset", "mtfl", "--model", "gs", "--num-train", "10"]))


def test_smoke_run_writes_the_run_directory(tmp_path, data_dir):
    run = tmp_path / "run"
    assert main(["--dataset", "multimnist", "--model", "mtvib", "--preset", "smoke", "--output-dir", str(run),
                 "--data-dir", str(data_dir), "--verbose", "0", "--test-at", "2,1"]) == 0
    for name in ("config.json", "history.json", "metrics.json", "model.keras", "logs", "test_along.json"):
        assert (run / name).exists(), name
    for row in json.loads((run / "history.json").read_text()):     # every epoch names its machine
        assert row["machine"]["cpu"] and isinstance(row["machine"]["isa"], list) and row["machine"]["cores"] >= 1
        assert "smt_siblings" in row["machine"] and row["load_1min"] is not None
        assert row["cpu_seconds"] > 0          # the process's CPU time over the epoch, beside its wall time
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1]
    assert runs.training_status(history) == "trained"      # one process ran every epoch
    for key in ("loss", "kl", "top_left_accuracy", "bottom_right_loss", "top_left_sigma", "joint_accuracy"):
        assert key in history[0], key
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) == {"mean", "mc12"}
    assert set(metrics["test"]["mean"]) == {"top_left", "bottom_right", "joint"}
    assert metrics["num_test"] == 128 and metrics["test"]["mean"]["joint"] <= metrics["test"]["mean"]["top_left"]
    # every run names its machine: the CPU, its ISA flags, the cores; each epoch its load average
    assert metrics["machine"]["cpu"] and metrics["machine"]["cores"] >= 1 and "isa" in metrics["machine"]
    assert all("load_1min" in r for r in history)
    # --test-at: the test accuracy after epochs 1 and 2, as it would be kept before a long run ends
    assert json.loads((run / "config.json").read_text())["training"]["test_at"] == [1, 2]
    along = json.loads((run / "test_along.json").read_text())["epochs"]
    assert list(along) == ["1", "2"] and set(along["1"]["test"]) == {"mean", "mc12"}
    assert along["2"]["test"]["mean"] == metrics["test"]["mean"] and along["2"]["machine"]["cpu"]
    tb = list((run / "logs").rglob("events.out.tfevents.*"))
    assert tb, "no TensorBoard event file"
    # the same directory again without --resume is refused
    assert main(["--dataset", "multimnist", "--model", "gs", "--preset", "smoke", "--output-dir", str(run)]) == 2


def test_test_at_evaluates_the_moving_average_with_ema_and_trains_on(tmp_path, data_dir):
    """With --ema-momentum, --test-at evaluates the moving average of the weights (what the final metrics
    evaluate), then puts the trained weights back: the last epoch's record equals the final metrics, and a
    record in the middle does not stop training from the trained weights."""
    run = tmp_path / "run"
    assert main(["--dataset", "mnist", "--model", "mlp", "--preset", "smoke", "--epochs", "3", "--learning-rate",
                 "0.01", "--ema-momentum", "0.9", "--output-dir", str(run), "--data-dir", str(data_dir),
                 "--verbose", "0", "--test-at", "1,3"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    along = json.loads((run / "test_along.json").read_text())["epochs"]
    assert {r["weights"] for r in along.values()} == {"ema"}
    assert along["3"]["test"]["mean"] == metrics["test"]["mean"]
    plain = tmp_path / "plain"
    assert main(["--dataset", "mnist", "--model", "mlp", "--preset", "smoke", "--epochs", "1", "--output-dir",
                 str(plain), "--data-dir", str(data_dir), "--verbose", "0", "--test-at", "1"]) == 0
    assert json.loads((plain / "test_along.json").read_text())["epochs"]["1"]["weights"] == "trained"


def test_training_status_counts_the_processes_in_a_history():
    one, two = {"process": "2026-12-07T14:00:00Z/11"}, {"process": "2026-12-07T15:00:00Z/12"}
    assert runs.training_status([{**one, "epoch": 0}, {**one, "epoch": 1}]) == "trained"
    assert runs.training_status([{**one, "epoch": 0}, {**two, "epoch": 1}]) == "resumed"
    # no rows, or a row from before epochs named their process: not known
    assert runs.training_status([]) is None
    assert runs.training_status([{**one, "epoch": 0}, {"epoch": 1}]) is None


def test_read_history_is_empty_before_the_first_epoch_and_in_order_after(tmp_path):
    assert runs.read_history(tmp_path) == []                     # no history.json yet
    rows = [{"epoch": 0, "seconds": 1.5}, {"epoch": 1, "seconds": 1.25}]
    runs.write_json(tmp_path / runs.HISTORY, rows)
    assert runs.read_history(tmp_path) == rows
    assert runs.Run(tmp_path, {"dataset": "mnist", "model": "mlp"}).history() == rows


@pytest.mark.slow
def test_resume_after_kill_loses_and_repeats_no_epoch(tmp_path, data_dir):
    run = tmp_path / "run"
    args = ["--dataset", "multimnist", "--model", "gs", "--preset", "smoke", "--epochs", "8", "--num-train", "2000",
            "--output-dir", run, "--data-dir", data_dir, "--verbose", "0"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *map(str, args)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    history = run / "history.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(json.loads(history.read_text() or "[]")) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished (or failed) before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(json.loads(history.read_text()))
    assert 2 <= done_before < 8
    assert not (run / "model.keras").exists()
    _train("--resume", "--output-dir", run, "--data-dir", data_dir, "--verbose", "0")
    rows = json.loads(history.read_text())
    assert [r["epoch"] for r in rows] == list(range(8))
    # the first epoch keeps the name of the killed process, the last names the one that resumed: two in all
    assert rows[0]["process"] != rows[-1]["process"] and len({r["process"] for r in rows}) == 2
    assert runs.training_status(rows) == "resumed"
    assert (run / "model.keras").exists() and (run / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("flags, message", [
    (["--strategy", "multi-worker", "--loop", "fit"], "--loop fit does not work under MultiWorkerMirroredStrategy"),
    (["--loop", "custom", "--jit-compile"], "--jit-compile is not supported by the custom loop"),
    (["--loop", "custom", "--test-at", "1"], "--test-at works with the fit loop only"),
    (["--loop", "custom", "--measure-at", "1"], "--measure-at works with the fit loop only"),
])
def test_a_loop_that_cannot_train_the_run_is_refused(flags, message):
    with pytest.raises(SystemExit, match=message):
        build_config(parse_args(["--dataset", "multimnist", "--model", "gs", "--preset", "smoke", *flags]))


def test_a_resumed_run_may_not_change_to_a_loop_that_cannot_train_it(tmp_path, data_dir, capsys):
    """The same rule set as a new run's (train.loop_conflict): a fit run with --test-at stays in the fit loop."""
    run = tmp_path / "run"
    assert main(["--dataset", "multimnist", "--model", "gs", "--preset", "smoke", "--epochs", "1", "--num-train",
                 "200", "--num-test", "100", "--test-at", "1", "--output-dir", str(run), "--data-dir", str(data_dir),
                 "--verbose", "0"]) == 0
    capsys.readouterr()
    assert main(["--resume", "--loop", "custom", "--epochs", "2", "--output-dir", str(run),
                 "--data-dir", str(data_dir), "--verbose", "0"]) == 2
    assert "--test-at works with the fit loop only" in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["training"]["loop"] == "fit"


def test_a_fit_run_resumes_under_the_custom_loop_from_the_same_checkpoint(tmp_path, data_dir):
    """Both loops write one checkpoint format, so ``--resume --loop custom`` continues a fit run."""
    from tf_mtvib.checkpoints import epochs_done

    run = tmp_path / "run"
    common = ["--output-dir", run, "--data-dir", data_dir]
    _train("--dataset", "multimnist", "--model", "gs", "--preset", "smoke", "--epochs", "1", "--num-train", "400",
           "--verbose", "0", *common)
    assert epochs_done(run / "backup") == 1 and json.loads((run / "config.json").read_text())["training"]["loop"] == "fit"
    proc = _train("--resume", "--loop", "custom", "--epochs", "2", "--verbose", "1", *common)
    assert "(end of epoch 1); continuing at epoch 2 of 2" in proc.stdout
    assert [r["epoch"] for r in json.loads((run / "history.json").read_text())] == [0, 1]
    assert json.loads((run / "metrics.json").read_text())["loop"] == "custom"
    assert epochs_done(run / "backup") == 2


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path, data_dir):
    run = tmp_path / "run"
    # epoch 1 trains normally; from epoch 2 on the learning rate is 1e30: the loss overflows
    proc = _train("--dataset", "multimnist", "--model", "gs", "--preset", "smoke", "--epochs", "4",
                  "--lr-decay", "1e30", "--lr-decay-epochs", "1", "--output-dir", run, "--data-dir", data_dir,
                  "--verbose", "0", check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "NaN" in proc.stderr and "--resume" in proc.stderr
    history = json.loads((run / "history.json").read_text())
    good = len(history)
    assert 1 <= good < 4 and [r["epoch"] for r in history] == list(range(good))
    assert all(r["loss"] == r["loss"] for r in history)  # no NaN row
    from tf_mtvib.checkpoints import epochs_done

    assert epochs_done(run / "backup") == good  # the checkpoint is the end of the last finite epoch
    assert (run / "backup" / f"ckpt-{good}.index").exists()
    assert not (run / "model.keras").exists()


def _mirrored(name):
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "mirrored_step.py"), name], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])[name]


@pytest.mark.slow
def test_mirrored_step_equals_single_device_step():
    """Deterministic model with synchronised BatchNorm: the same weights after one SGD step.
    Had the loss not been divided by the 2 replicas, the update would be twice as large."""
    r = _mirrored("uwl")
    assert r["replicas"] == 2
    assert r["max_abs_diff"] < 1e-4 * max(1.0, r["max_abs_update"] * 100)
    assert r["max_abs_diff"] < 1e-3 * r["max_abs_update"]
    for a, b in zip(r["log_sigma_update_single"], r["log_sigma_update_mirrored"]):
        assert b == pytest.approx(a, rel=1e-4)


@pytest.mark.slow
def test_mirrored_step_mtvib_scales_kl_and_log_sigma_terms():
    """MTVIB with its posterior collapsed onto the mean (so the replicas' independent draws of z
    are the same to 1e-5) and beta = 1: the same step on one device and on two replicas. Had the
    KL or the log_sigma terms (added once per replica) not been divided by the replicas, the
    latent's and the log_sigma updates would differ."""
    r = _mirrored("mtvib")
    assert r["replicas"] == 2
    assert r["max_abs_diff"] < 1e-3 * r["max_abs_update"]
    assert r["log_sigma_update_single"] and all(a != 0 for a in r["log_sigma_update_single"])
    for a, b in zip(r["log_sigma_update_single"], r["log_sigma_update_mirrored"]):
        assert b == pytest.approx(a, rel=1e-3)


@pytest.mark.slow
def test_train_cli_on_two_logical_cpus(tmp_path, data_dir):
    run = tmp_path / "run"
    _train("--dataset", "multimnist", "--model", "mtvib", "--preset", "smoke", "--epochs", "1", "--cpu-replicas", "2",
           "--sync-batchnorm", "--output-dir", run, "--data-dir", data_dir, "--verbose", "0")
    assert json.loads((run / "metrics.json").read_text())["replicas"] == 2


# --------------------------------------------------------------------------
# The resume checkpoint and per-example weights (public Keras APIs only)
# --------------------------------------------------------------------------
def _tiny_gs(seed=0):
    import keras

    from tf_mtvib.datasets.spec import SPECS
    from tf_mtvib.models import build_model
    from tf_mtvib.train import TRAINING_DEFAULTS, make_optimizer

    keras.utils.set_random_seed(seed)
    spec = SPECS["multimnist"]  # 36x36: the smallest trunk of the tables
    model = build_model("gs", spec, task_weights=[0.3, 0.7])
    model.compile(optimizer=make_optimizer(dict(TRAINING_DEFAULTS, epochs=1, batch_size=8, learning_rate=1e-2), steps_per_epoch=1))
    return model, spec


def _tiny_data(spec, n=8):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((n, *spec.input_shape), dtype=np.float32)
    y = {t.name: rng.integers(0, t.num_classes, n) for t in spec.tasks}
    return x, y


def test_checkpoint_restores_weights_and_optimizer_state(tmp_path):
    import numpy as np

    from tf_mtvib.checkpoints import ResumeCheckpoint, epochs_done

    model, spec = _tiny_gs(seed=0)
    x, y = _tiny_data(spec)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    checkpoint = ResumeCheckpoint(model, tmp_path / "backup")
    assert checkpoint.restore() == 0 and epochs_done(tmp_path / "backup") == 0  # nothing saved yet
    checkpoint.save(2)
    checkpoint.save(3)
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == [
        "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]   # only the newest is kept
    assert epochs_done(tmp_path / "backup") == 3
    fresh, _ = _tiny_gs(seed=1)
    assert ResumeCheckpoint(fresh, tmp_path / "backup").restore() == 3
    assert int(fresh.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) == 4
    for a, b in zip(model.weights + model.optimizer.variables, fresh.weights + fresh.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    history = fresh.fit(x, y, batch_size=4, epochs=5, initial_epoch=3, verbose=0)
    assert history.epoch == [3, 4]


def test_checkpoint_of_the_former_fit_format_still_resumes_and_is_replaced(tmp_path):
    """Runs saved before the one format (``epoch-N.weights.h5`` + ``training_metadata.json``) resume."""
    import numpy as np

    from tf_mtvib.checkpoints import LEGACY_METADATA, ResumeCheckpoint, epochs_done, legacy_weights

    model, spec = _tiny_gs(seed=0)
    x, y = _tiny_data(spec)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    backup = tmp_path / "backup"
    backup.mkdir()
    model.save_weights(legacy_weights(backup, 2))          # what the fit loop wrote before
    (backup / LEGACY_METADATA).write_text('{"epoch": 2}')
    assert epochs_done(backup) == 2
    fresh, _ = _tiny_gs(seed=1)
    checkpoint = ResumeCheckpoint(fresh, backup)
    assert checkpoint.restore() == 2
    assert int(fresh.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
    for a, b in zip(model.weights + model.optimizer.variables, fresh.weights + fresh.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    checkpoint.save(3)
    assert sorted(p.name for p in backup.iterdir()) == ["checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    assert epochs_done(backup) == 3


def test_epochs_done_refuses_a_state_file_it_cannot_read(tmp_path):
    from tf_mtvib.checkpoints import epochs_done

    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "something-else"\n')
    with pytest.raises(ValueError, match="not a ckpt-<epochs> checkpoint"):
        epochs_done(tmp_path)
    (tmp_path / "checkpoint").write_text("garbage")
    with pytest.raises(ValueError, match="names no checkpoint"):
        epochs_done(tmp_path)


def test_sample_weight_weights_each_example_cross_entropy():
    import keras
    import numpy as np
    import tensorflow as tf

    model, spec = _tiny_gs()
    x, y = _tiny_data(spec, 4)
    logits = model(x, training=False)
    ce = {t: keras.losses.sparse_categorical_crossentropy(y[t], logits[t], from_logits=True).numpy()
          for t in model.task_names}
    w = np.array([2.0, 0.0, 1.0, 0.5], np.float32)
    plain = model.task_losses(y, logits)
    ones = model.task_losses(y, logits, tf.ones([4]))
    weighted = model.task_losses(y, logits, w)
    per_task = model.task_losses(y, logits, {"top_left": w, "bottom_right": np.ones(4, np.float32)})
    for t in model.task_names:
        assert float(ones[t]) == pytest.approx(float(plain[t]), rel=1e-6)
        assert float(weighted[t]) == pytest.approx(float(np.sum(w * ce[t]) / 4), rel=1e-5)
    assert float(per_task["top_left"]) == pytest.approx(float(weighted["top_left"]), rel=1e-6)
    assert float(per_task["bottom_right"]) == pytest.approx(float(plain["bottom_right"]), rel=1e-6)
    with pytest.raises(ValueError, match="must name exactly the tasks"):
        model.task_losses(y, logits, {"top_left": w})
    # through fit: all-zero weights give a zero loss (GS has no other term)
    history = model.fit(x, y, sample_weight=np.zeros(4, np.float32), batch_size=4, epochs=1, verbose=0)
    assert history.history["loss"] == [0.0]


@pytest.mark.slow
def test_ensure_run_trains_reuses_resumes_and_refuses_other_configs(tmp_path, data_dir, monkeypatch):
    """The one "train a run" driver of reproduce mtl (isolate=True), reproduce vib and the benchmarks."""
    from tf_mtvib import runtime
    from tf_mtvib.train import RunConflict, ensure_run

    config = build_config(parse_args(["--dataset", "multimnist", "--model", "gs", "--preset", "smoke", "--epochs", "1",
                                      "--num-train", "64", "--num-test", "32", "--eval-samples", "0"]))
    run, logs = tmp_path / "run", []
    tunables_before = os.environ.get("GLIBC_TUNABLES")
    assert ensure_run(config, run, data_dir=data_dir, verbose=0, log=logs.append) == "trained"
    assert json.loads((run / "config.json").read_text()) == json.loads(json.dumps(config))
    assert (run / "model.keras").exists() and (run / "metrics.json").exists()
    assert ensure_run(config, run, data_dir=data_dir, verbose=0, log=logs.append) == "reused"
    other = json.loads(json.dumps(config))
    other["training"]["epochs"] = 2
    with pytest.raises(RunConflict, match=r"training\.epochs: asked 2, run has 1"):
        ensure_run(other, run, data_dir=data_dir, verbose=0)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(RunConflict, match="not a run directory"):
        ensure_run(config, tmp_path / "junk", data_dir=data_dir, verbose=0)
    (run / "metrics.json").unlink()          # interrupted after training: resumed, in a fresh process
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv(runtime.OPT_OUT, raising=False)
    assert ensure_run(config, run, data_dir=data_dir, verbose=0, isolate=True, log=logs.append) == "resumed"
    metrics = json.loads((run / "metrics.json").read_text())
    if runtime.uses_glibc():                 # the fresh process started with the allocator thresholds raised
        assert runtime.allocator_tuned({"GLIBC_TUNABLES": metrics["glibc_tunables_this_process"]})
    # each epoch records the setting of the process that trained it: here the one epoch, trained in this process
    assert [r["glibc_tunables"] for r in json.loads((run / "history.json").read_text())] == [tunables_before]
    assert [m.split()[1] for m in logs] == ["training", str(run) + ":", "resuming"]
