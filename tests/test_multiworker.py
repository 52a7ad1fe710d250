"""Multi-worker training with real worker processes on localhost ports (no mocks of the strategy).

Every process a test starts runs in its own process group, which the
``procs`` fixture kills when the test ends, passed or failed.
"""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tf_mtvib import distributed
from tf_mtvib.launch import core_shares, free_ports

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
ENV.pop("TF_CONFIG", None)
TIMEOUT = 600


class Processes:
    """Starts processes in new process groups; :meth:`kill_all` kills every group."""

    def __init__(self, directory: pathlib.Path):
        self.directory = directory
        self.started = []

    def start(self, cmd, name, env=None, cwd=None):
        out = open(self.directory / f"{name}.out", "w")
        p = subprocess.Popen([str(c) for c in cmd], env=env or ENV, cwd=cwd or ROOT, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        p.log = self.directory / f"{name}.out"
        self.started.append(p)
        return p

    def wait(self, p, timeout=TIMEOUT):
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{p.args} did not finish in {timeout}s:\n{output(p)[-3000:]}")

    def kill_all(self):
        for p in self.started:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()


def output(p) -> str:
    return p.log.read_text(errors="replace")


@pytest.fixture
def procs(tmp_path):
    logs = tmp_path / "proc-logs"
    logs.mkdir()
    ps = Processes(logs)
    try:
        yield ps
    finally:
        ps.kill_all()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie (exited, not yet reaped by its parent) is not running
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _launch(procs, name, train_args, cwd=None, workers=2):
    return procs.start([sys.executable, "-m", "tf_mtvib.launch", "--workers", workers, "--log-dir",
                        procs.directory / f"{name}-workers", "--", *train_args], name, cwd=cwd)


# --------------------------------------------------------------------------
# TF_CONFIG
# --------------------------------------------------------------------------
@pytest.mark.parametrize("value,message", [
    (None, "needs the TF_CONFIG"),
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": ["localhost:1"]}}', '"task" object'),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}', "task.index"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}', "task.type"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}', "only"),
    ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "no worker"),
])
def test_tf_config_validation(value, message):
    env = {} if value is None else {"TF_CONFIG": value}
    with pytest.raises(distributed.ClusterConfigError, match=re.escape(message)):
        distributed.cluster_from_env(env)


def test_tf_config_roles():
    chiefless = distributed.cluster_from_env({"TF_CONFIG": distributed.tf_config(["h1:1", "h2:2"], 1)})
    assert (chiefless.num_workers, chiefless.worker_id, chiefless.is_chief, chiefless.address) == (2, 1, False, "h2:2")
    with_chief = distributed.cluster_from_env({"TF_CONFIG": json.dumps(
        {"cluster": {"chief": ["c:1"], "worker": ["w:2"]}, "task": {"type": "worker", "index": 0}})})
    assert (with_chief.num_workers, with_chief.worker_id, with_chief.is_chief) == (2, 1, False)


@pytest.mark.parametrize("value,message", [(None, "needs the TF_CONFIG"), ("[1, 2", "not valid JSON")])
def test_missing_or_invalid_tf_config_is_exit_2_not_a_hang(value, message, procs, tmp_path):
    env = dict(ENV)
    if value is not None:
        env["TF_CONFIG"] = value
    p = procs.start([sys.executable, ROOT / "train.py", "--dataset", "multimnist", "--model", "gs", "--preset", "smoke",
                     "--strategy", "multi-worker", "--output-dir", tmp_path / "run"], "train", env=env)
    assert procs.wait(p, timeout=120) == 2, output(p)[-2000:]
    assert message in output(p) and "tf_mtvib.launch" in output(p)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------
# The launcher
# --------------------------------------------------------------------------
def test_core_shares_and_free_ports():
    assert core_shares(2, [0, 1]) == [[0], [1]]
    assert core_shares(2, [0, 1, 2, 3, 4]) == [[0, 1, 2], [3, 4]]
    assert core_shares(3, [5, 6]) == [[5], [6], [5]]          # more workers than cores: one core each, shared
    ports = free_ports(4)
    assert len(set(ports)) == 4 and all(0 < p < 65536 for p in ports)


def test_launcher_refuses_a_strategy_flag(procs):
    p = procs.start([sys.executable, "-m", "tf_mtvib.launch", "--", "--dataset", "multimnist", "--model", "gs",
                     "--strategy", "mirrored"], "launch")
    assert procs.wait(p, timeout=120) == 2 and "--strategy" in output(p)


@pytest.mark.slow
def test_ctrl_c_stops_every_worker(procs, tmp_path):
    p = _launch(procs, "interrupted", ["--dataset", "multimnist", "--model", "gs", "--preset", "smoke",
                                       "--output-dir", tmp_path / "run"])
    deadline = time.time() + 120
    while time.time() < deadline and len(re.findall(r"\[launch\] worker \d pid", output(p))) < 2:
        time.sleep(0.05)
    pids = [int(x) for x in re.findall(r"\[launch\] worker \d pid (\d+)", output(p))]
    assert len(pids) == 2, output(p)
    os.kill(p.pid, signal.SIGINT)
    assert procs.wait(p, timeout=60) == 128 + signal.SIGINT
    assert not any(_alive(pid) for pid in pids), "a worker outlived the launcher"


@pytest.mark.slow
def test_two_worker_smoke_run_writes_one_run_directory(procs, tmp_path, data_dir):
    """No --output-dir: the launcher picks one for both workers; only the chief writes it."""
    p = _launch(procs, "smoke", ["--dataset", "multimnist", "--model", "uwl", "--preset", "smoke", "--sync-batchnorm",
                                 "--eval-samples", "0", "--data-dir", data_dir, "--verbose", "2"], cwd=tmp_path)
    assert procs.wait(p) == 0, output(p)[-4000:]
    (run,) = (tmp_path / "runs").iterdir()
    assert sorted(f.name for f in run.iterdir()) == ["backup", "config.json", "history.json", "logs", "metrics.json",
                                                     "model.keras"]
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1]
    assert all(k in history[0] for k in ("loss", "top_left_sigma", "joint_accuracy"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["replicas"], metrics["workers"], metrics["loop"]) == (2, 2, "custom")
    assert set(metrics["test"]["mean"]) == {"top_left", "bottom_right", "joint"}
    assert json.loads((run / "config.json").read_text())["training"]["strategy"] == "multi-worker"
    assert list((run / "logs").rglob("events.out.tfevents.*"))
    assert (run / "backup" / "checkpoint").exists()
    log = output(p)
    assert "2 replica(s)" in log and "Epoch 2/2" in log and "test accuracy" in log   # the chief's progress, streamed


# --------------------------------------------------------------------------
# Equivalence: 2 workers == MirroredStrategy over 2 logical CPUs; the custom loop == fit
# --------------------------------------------------------------------------
def _steps(procs, tmp_path, mode, model, workers=1):
    out = tmp_path / f"{mode}-{model}.npz"
    script = [sys.executable, ROOT / "tests" / "multiworker_steps.py", out, mode, model]
    if workers == 1:
        return out, [procs.start(script, f"{mode}-{model}")]
    addresses = [f"localhost:{port}" for port in free_ports(workers)]
    return out, [procs.start(script, f"{mode}-{model}-{i}", env={**ENV, "TF_CONFIG": distributed.tf_config(addresses, i)})
                 for i in range(workers)]


def _max_diff(a, b, a_prefix="w_", b_prefix="w_"):
    """max |a - b| over every weight of two .npz files of multiworker_steps.py."""
    n = len([k for k in a.files if k.startswith("w_")])
    return max(float(np.max(np.abs(a[f"{a_prefix}{k}"] - b[f"{b_prefix}{k}"]))) for k in range(n))


@pytest.mark.slow
def test_two_workers_match_mirrored_strategy_and_the_loop_matches_fit(procs, tmp_path):
    """UWL with synchronised BatchNorm, SGD, 8 steps of global batch 16 from the same initial weights:
    2 worker processes give the weights of 2 mirrored devices in one process (the same global batch,
    split the same way), and the custom loop on one device gives the weights of Keras fit."""
    runs = {"multi-worker": _steps(procs, tmp_path, "multi-worker", "uwl", workers=2)}
    for p in runs["multi-worker"][1]:
        assert procs.wait(p) == 0, output(p)[-3000:]
    runs.update({mode: _steps(procs, tmp_path, mode, "uwl") for mode in ("mirrored", "default", "fit")})
    for _, ps in runs.values():
        for p in ps:
            assert procs.wait(p) == 0, output(p)[-3000:]
    w = {mode: np.load(out) for mode, (out, _) in runs.items()}
    assert int(w["multi-worker"]["replicas"]) == 2 and int(w["mirrored"]["replicas"]) == 2
    assert _max_diff(w["multi-worker"], w["fit"], "init_", "init_") == 0   # the same initial weights
    update = _max_diff(w["fit"], w["fit"], "w_", "init_")
    diffs = {pair: _max_diff(w[pair[0]], w[pair[1]])
             for pair in (("multi-worker", "mirrored"), ("default", "fit"), ("multi-worker", "fit"))}
    for (a, b), d in diffs.items():
        print(f"max |weights({a}) - weights({b})| = {d:.3g} (largest update {update:.3g})")
    assert diffs["multi-worker", "mirrored"] <= 1e-6 * update
    assert diffs["default", "fit"] <= 1e-6 * update
    # 2 replicas against 1 device: the same sums in another order, which BatchNorm's one-pass variance
    # (E[x^2] - E[x]^2 over the synchronised sums) amplifies; reported above, not a float-tolerance figure


# --------------------------------------------------------------------------
# Fault tolerance
# --------------------------------------------------------------------------
def test_half_written_checkpoint_is_never_loaded(tmp_path):
    """A kill during a save leaves ckpt-N's files without the `checkpoint` state file pointing at
    them: the loop restores the previous checkpoint."""
    import keras

    from tf_mtvib.datasets import Split, get_spec
    from tf_mtvib.models import build_model

    spec = get_spec("multimnist")
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (8,) + spec.input_shape, dtype=np.uint8),
                  {t: rng.integers(0, 10, 8) for t in spec.task_names}, spec)
    import tensorflow as tf

    def fresh():
        model = build_model("gs", spec)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        return model

    strategy = tf.distribute.get_strategy()
    first = distributed.custom_fit(fresh(), strategy, split, 8, 1, tmp_path, verbose=0)
    backup = tmp_path / "backup"
    assert first == {"initial_epoch": 0, "steps_per_epoch": 1, "epochs_run": 1}
    state = (backup / "checkpoint").read_text()
    for suffix in (".index", ".data-00000-of-00001"):   # a torn ckpt-2, as a kill mid-save leaves it
        (backup / f"ckpt-2{suffix}").write_bytes(b"\0" * 10)
    assert tf.train.latest_checkpoint(str(backup)).endswith("ckpt-1")
    second = distributed.custom_fit(fresh(), strategy, split, 8, 2, tmp_path, verbose=0)
    assert second["initial_epoch"] == 1 and second["epochs_run"] == 1
    assert (backup / "checkpoint").read_text() != state


@pytest.mark.slow
def test_kill_a_worker_mid_epoch_then_resume(procs, tmp_path, data_dir):
    run = tmp_path / "run"
    epochs, train, batch = 4, 512, 32
    args = ["--dataset", "multimnist", "--model", "gs", "--preset", "smoke", "--epochs", epochs, "--num-train", train,
            "--eval-samples", "0", "--output-dir", run, "--data-dir", data_dir, "--verbose", "0"]
    p = _launch(procs, "first", args)
    history, state = run / "history.json", run / "backup" / "checkpoint"
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and p.poll() is None:
        if state.exists() and history.exists() and len(json.loads(history.read_text() or "[]")) >= 1:
            break
        time.sleep(0.05)
    assert p.poll() is None, "training finished (or failed) before a worker could be killed:\n" + output(p)[-3000:]
    pids = dict(re.findall(r"\[launch\] worker (\d) pid (\d+)", output(p)))
    os.kill(int(pids["1"]), signal.SIGKILL)
    assert procs.wait(p, timeout=120) == 128 + signal.SIGKILL, output(p)[-3000:]
    assert not _alive(int(pids["0"])), "the launcher left the chief running"
    assert "worker 1" in output(p) and "stopping the others" in output(p)

    import tensorflow as tf

    done = len(json.loads(history.read_text()))
    saved = int(tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run / "backup"))).get_tensor(
        "epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    assert 1 <= saved <= done < epochs and not (run / "model.keras").exists()
    print(f"worker 1 killed with {done} epoch(s) in history.json, checkpoint at the end of epoch {saved}")

    p = _launch(procs, "resume", ["--resume", "--output-dir", run, "--data-dir", data_dir, "--verbose", "1"])
    assert procs.wait(p) == 0, output(p)[-4000:]
    assert f"(end of epoch {saved}); continuing at epoch {saved + 1} of {epochs}" in output(p)
    assert [r["epoch"] for r in json.loads(history.read_text())] == list(range(epochs))

    import keras

    import tf_mtvib.models  # noqa: F401

    model = keras.models.load_model(run / "model.keras")
    # the optimizer's step counter lives in the checkpoint with the weights: it shows the
    # restart continued from it, with no step lost or repeated
    assert int(model.optimizer.iterations.numpy()) == epochs * (train // batch)
