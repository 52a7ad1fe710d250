"""Nothing breaks in the family refactor: the code before it (a commit of this repository,
checked out with ``git archive``) and today's build the same models and take the same step."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
#: main just before the model families moved into tf_mtvib/families/ (issue "Model families as plugins")
BEFORE_FAMILIES = "f68729140b3bc160959c1199a835ce2827b638cd"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def old_code(tmp_path_factory):
    """The package as it was at :data:`BEFORE_FAMILIES` (skipped where git or the commit is missing)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    ok = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{BEFORE_FAMILIES}^{{commit}}"],
                        capture_output=True)
    if ok.returncode != 0:
        pytest.skip(f"commit {BEFORE_FAMILIES[:8]} is not in this clone (a shallow clone?)")
    root = tmp_path_factory.mktemp("old")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE_FAMILIES, "tf_mtvib"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root


def _run(code_root, *args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(code_root))
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd or code_root, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_old_and_new_code_take_the_same_step_from_the_same_weights(old_code, tmp_path):
    script = REPO / "tests" / "compat_step.py"
    old = json.loads(_run(old_code, script, "save", tmp_path).strip().splitlines()[-1])
    new = json.loads(_run(REPO, script, "load", tmp_path).strip().splitlines()[-1])
    assert set(old) == set(new) == {"stl", "gs", "uwl", "stvib", "mtvib", "vib_mlp", "mlp"}
    for name in old:
        assert new[name]["params"] == old[name]["params"], name
        np.testing.assert_allclose(new[name]["loss"], old[name]["loss"], rtol=1e-6, err_msg=name)
        a = np.load(tmp_path / f"{name}.save.after.npz")
        b = np.load(tmp_path / f"{name}.load.after.npz")
        assert len(a.files) == len(b.files), name
        for k in a.files:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=1e-7, err_msg=f"{name} {k}")


def test_a_run_saved_by_the_old_code_loads_reads_and_resumes(old_code, tmp_path, data_dir):
    """A smoke run trained before the refactor: its config.json reads, its model.keras loads
    and predicts as it did, and, extended by an epoch, it resumes from its backup/."""
    run = tmp_path / "run"
    probe = ("import json, sys, numpy as np; from tf_mtvib.runs import load_run; r = load_run(sys.argv[1]); "
             "x = r.load_split('test', sys.argv[2]).images[:8]; "
             "print(json.dumps({t: v.numpy().tolist() for t, v in r.model.probabilities(x).items()}))")
    _run(old_code, "-m", "tf_mtvib.train", "--dataset", "multimnist", "--model", "mtvib", "--preset", "smoke",
         "--epochs", "1", "--num-train", "64", "--num-test", "32", "--output-dir", run, "--verbose", "0",
         "--data-dir", data_dir)
    before = json.loads(_run(old_code, "-c", probe, run, data_dir).strip().splitlines()[-1])
    after = json.loads(_run(REPO, "-c", probe, run, data_dir).strip().splitlines()[-1])
    for t in before:
        np.testing.assert_allclose(after[t], before[t], rtol=1e-6, atol=1e-7)
    # extend it by one epoch and resume with today's code: it continues from epoch 1's checkpoint
    config = json.loads((run / "config.json").read_text())
    config["training"]["epochs"] = 2
    (run / "config.json").write_text(json.dumps(config))
    for name in ("metrics.json", "model.keras"):
        (run / name).unlink()
    _run(REPO, "-m", "tf_mtvib.train", "--resume", "--output-dir", run, "--verbose", "0", "--data-dir", data_dir,
         cwd=REPO)
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1]
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
