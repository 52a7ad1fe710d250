"""Deep VIB reproduction: the beta-sweep command, the three evaluation modes, the information bounds."""
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tf_mtvib.datasets import Split, get_spec
from tf_mtvib.models import build_model, kl_per_example
from tf_mtvib.reproduce import vib

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tiny_split(n=48, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    return Split(images=images, labels={"digit": np.arange(n, dtype=np.int64) % 10}, spec=get_spec("mnist"))


def _noisy_vib(seed=0):
    """An untrained vib_mlp whose posterior scale is large (raw scale bias +10: sigma ~ softplus(5) ~ 5)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model("vib_mlp", get_spec("mnist"), latent_dim=16)
    proj = model.latent_layers[0].projection
    bias = np.zeros(proj.bias.shape, np.float32)
    bias[16:] = 10.0
    proj.bias.assign(bias)
    return model


# --------------------------------------------------------------------------
# The command on a tiny budget
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory, request):
    value = os.environ.get("TF_MTVIB_DATA_DIR")
    if not value:
        pytest.skip("real-data test: set TF_MTVIB_DATA_DIR")
    out = tmp_path_factory.mktemp("vib") / "sweep"
    argv = ["--betas", "1e-3,1e-1", "--preset", "smoke", "--epochs", "1", "--max-test", "64",
            "--cw-examples", "8", "--cw-betas", "1e-1", "--cw-binary-steps", "2", "--cw-iterations", "10",
            "--attack-examples", "16",
            "--output-dir", str(out), "--data-dir", value, "--verbose", "0",
            "--results-dir", str(out.parent / "docs" / "results" / "vib"), "--doc", str(out.parent / "docs" / "vib.md")]
    proc = subprocess.run([sys.executable, "-m", "tf_mtvib.reproduce", "vib", *argv], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, argv, proc.stdout


@pytest.mark.slow
def test_sweep_is_published_and_the_page_generated_from_its_json(smoke_sweep):
    out, _, _ = smoke_sweep
    docs = out.parent / "docs"
    published = docs / "results" / "vib" / out.name
    result = json.loads((published / vib.JSON_NAME).read_text())
    assert all("/" not in r["run_dir"] for r in [result["baseline"], *result["vib"]])  # no machine paths
    assert all((published / name).exists() for name in vib.FIGURES.values())
    page = (docs / "vib.md").read_text()
    body = page[page.index(vib.DOC_BEGIN):page.index(vib.DOC_END)]
    assert vib.markdown_table(result) in body and "results/vib/" in body and str(out.parent) not in body


@pytest.mark.slow
def test_sweep_attacks_the_cw_betas_and_the_baseline_with_cw_and_draws_fig3(smoke_sweep):
    """Fig. 4(b): CW-L2 untargeted and targeted on the deterministic baseline and the models of --cw-betas
    (here 1e-1 of 1e-3 and 1e-1), on the first N test images, timed on a named CPU; Fig. 3 as a PNG."""
    out, _, _ = smoke_sweep
    result = json.loads((out / vib.JSON_NAME).read_text())
    assert result["cw"]["examples"] == 8 and result["cw"]["binary_steps"] == 2 and result["cw"]["betas"] == [0.1]
    low, high = result["vib"]
    assert low["beta"] == 1e-3 and "cw" not in low
    for row in [result["baseline"], high]:
        for kind in ("untargeted", "targeted"):
            c = row["cw"][kind]
            assert 0.0 <= c["accuracy"] <= c["clean"] <= 1.0 and 0.0 <= c["success_rate"] <= 1.0
            assert c["seconds"] > 0
        assert row["cw"]["untargeted"]["eot_samples"] == (0 if row["baseline"] else vib.CW_EOT_SAMPLES)
        assert row["cw"]["machine"]["cpu"] and row["cw"]["machine"]["cores"] >= 1
    assert (out / vib.FIG3_NAME).read_bytes()[:8] == PNG_MAGIC
    table = vib.cw_table(result)
    assert table in (out / vib.TABLE_NAME).read_text() and "| vib_mlp | 0.001 |" not in table
    page = (out.parent / "docs" / "vib.md").read_text()
    assert "Fig. 4(b): CW-L2 on the first 8 test images" in page and vib.FIG3_NAME in page


@pytest.mark.slow
def test_every_model_names_the_cpu_it_trained_on_and_the_page_its_time(smoke_sweep):
    out, _, _ = smoke_sweep
    result = json.loads((out / vib.JSON_NAME).read_text())
    for row in [result["baseline"], *result["vib"]]:
        (cpu,) = row["train_machines"]                       # one process, one machine
        assert cpu.startswith(row["cw"]["machine"]["cpu"] if row.get("cw") else "") and "(" in cpu
    page = (out.parent / "docs" / "vib.md").read_text()
    times = vib.time_table([(out.name, result)])
    assert "### Time per model" in page and times in page and times.count("\n| `sweep` |") == 3


@pytest.mark.slow
def test_sweep_attacks_every_model_with_fgsm_pgd_and_the_masking_check(smoke_sweep):
    """Item 5: the FGSM/PGD sweeps every family gets, with the random-sign control and the masking verdict,
    on the first N test images of every model; published in the table and on the page."""
    out, _, _ = smoke_sweep
    result = json.loads((out / vib.JSON_NAME).read_text())
    assert result["attacks"]["examples"] == 16
    for row in [result["baseline"], *result["vib"]]:
        a = row["attacks"]
        for name in vib.SWEEP_ATTACKS:
            acc = a[name]["accuracy"]["digit"]
            assert a[name]["num_examples"] == 16 and a[name]["tasks"] == ["digit"] and a[name]["eps"][0] == 0.0
            assert len(acc) == len(a[name]["eps"]) and all(0.0 <= v <= 1.0 for v in acc)
            assert a[name]["loss"] == "per_task" and a[name]["mode"] == "mean"
        assert a["pgd"]["accuracy"]["digit"][0] == a["fgsm"]["accuracy"]["digit"][0]     # the same clean images
        assert a["masking_verdict"]["verdict"] in ("none", "masking", "overshoot")
    assert vib.attack_table(result) in (out / vib.TABLE_NAME).read_text()
    page = (out.parent / "docs" / "vib.md").read_text()
    assert "FGSM and PGD, as every family is attacked, on the first 16 test images" in page
    assert "### Verdicts" in page and "`paper`: no sweep at 200 epochs" in page


@pytest.mark.slow
def test_sweep_writes_json_table_and_three_pngs(smoke_sweep):
    out, _, stdout = smoke_sweep
    result = json.loads((out / vib.JSON_NAME).read_text())
    for name in vib.FIGURES.values():
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5_000
    assert [r["beta"] for r in result["vib"]] == [1e-3, 1e-1]
    assert result["preset"] == "smoke" and result["schedule"] == "paper" and result["eval_samples"] == 12
    for r in result["vib"]:
        numbers = [*r["error_pct"].values(), *r["ce_nats"].values(), r["kl_nats"], r["izx_bits"], r["izy_bits"]]
        assert all(math.isfinite(v) for v in numbers), r
        assert r["epochs"] == 1 and r["num_train"] == 256 and r["num_test"] == 64 and r["stochastic"]
        # Fig. 1(a)'s training error, on the images the run trained on, in the same modes
        assert r["num_train_evaluated"] == 256 and set(r["train_error_pct"]) == set(r["error_pct"])
        assert all(0.0 <= v <= 100.0 for v in r["train_error_pct"].values())
        # I(Z;X) <= mean KL / ln 2 and I(Z;Y) >= H(Y) - CE / ln 2, in bits
        assert r["izx_bits"] == pytest.approx(r["kl_nats"] / math.log(2), rel=1e-12)
        assert r["izy_bits"] == pytest.approx(result["h_y_bits"] - r["ce_nats"]["sampled"] / math.log(2), rel=1e-12)
    assert 3.0 < result["h_y_bits"] <= math.log2(10) + 1e-9
    table = (out / vib.TABLE_NAME).read_text()
    assert table in stdout and "| mlp | - |" in table and "| vib_mlp | 0.1 |" in table
    tr = result["vib"][0]["train_error_pct"]
    assert f"| {tr['1shot']:.2f} / {tr['avg']:.2f} |" in table


def test_the_table_shows_no_training_error_for_a_sweep_evaluated_before_it_was_recorded():
    row = {"model": "vib_mlp", "beta": 1e-3, "epochs": 10, "num_train": 60000, "izx_bits": 3.0, "izy_bits": 3.2,
           "error_pct": {"1shot": 2.5, "1shot_std": 0.1, "avg": 2.1, "mean": 2.2}, "ce_nats": {"sampled": 0.1}}
    old = vib.markdown_table({"baseline": None, "vib": [row]})
    assert "| 2.50 (±0.10) | 2.10 | 2.20 | - | 3.00 |" in old
    new = vib.markdown_table({"baseline": None, "vib": [{**row, "train_error_pct": {"1shot": 0.5, "avg": 0.25}}]})
    assert "| 2.20 | 0.50 / 0.25 | 3.00 |" in new


@pytest.mark.slow
def test_sweep_baseline_is_deterministic_with_no_rate(smoke_sweep):
    out, _, _ = smoke_sweep
    base = json.loads((out / vib.JSON_NAME).read_text())["baseline"]
    assert base["model"] == "mlp" and base["baseline"] and base["beta"] is None and not base["stochastic"]
    assert base["kl_nats"] == 0.0 and base["izx_bits"] is None   # no rate bound for a deterministic encoder
    e = base["error_pct"]
    assert e["1shot"] == e["avg"] == e["mean"] and e["1shot_std"] == 0.0
    assert math.isfinite(base["izy_bits"])


@pytest.mark.slow
def test_sweep_reuses_finished_runs_and_refuses_other_configs(smoke_sweep, capsys):
    out, argv, _ = smoke_sweep
    first = json.loads((out / vib.JSON_NAME).read_text())
    assert vib.main(argv) == 0
    result = json.loads((out / vib.JSON_NAME).read_text())
    # reused, not retrained: the rows keep the status the first sweep recorded, and so do the error figures
    assert {r["status"] for r in [result["baseline"], *result["vib"]]} == {"trained"}
    assert [r["error_pct"] for r in result["vib"]] == [r["error_pct"] for r in first["vib"]]
    (out / vib.JSON_NAME).unlink()          # with no earlier record, each run's own history says how it was trained
    assert vib.main(argv) == 0
    result = json.loads((out / vib.JSON_NAME).read_text())
    assert {r["status"] for r in [result["baseline"], *result["vib"]]} == {"trained"}
    # a history written before epochs named their process, with no earlier record: all that is known is reuse
    for r in [result["baseline"], *result["vib"]]:
        hist = pathlib.Path(r["run_dir"]) / "history.json"
        hist.write_text(json.dumps([{k: v for k, v in row.items() if k != "process"}
                                    for row in json.loads(hist.read_text())]))
    (out / vib.JSON_NAME).unlink()
    assert vib.main(argv) == 0
    result = json.loads((out / vib.JSON_NAME).read_text())
    assert {r["status"] for r in [result["baseline"], *result["vib"]]} == {"reused"}
    changed = [a if a != "1" else "2" for a in argv]   # --epochs 2
    assert vib.main(changed) == 2
    assert "another configuration" in capsys.readouterr().err


# --------------------------------------------------------------------------
# Evaluation modes and bounds (no data needed)
# --------------------------------------------------------------------------
def test_one_shot_differs_from_average_and_mean_mode_is_deterministic():
    model = _noisy_vib()
    x = _tiny_split(8).images.astype(np.float32) / 255.0
    one_a, one_b = (model.probabilities(x, samples=1)["digit"].numpy() for _ in range(2))
    avg = model.probabilities(x, samples=12)["digit"].numpy()
    mean_a, mean_b = (model.probabilities(x, samples=0)["digit"].numpy() for _ in range(2))
    assert np.abs(one_a - one_b).max() > 1e-3      # each 1-shot call draws a new z
    assert np.abs(one_a - avg).max() > 1e-3
    np.testing.assert_array_equal(mean_a, mean_b)
    np.testing.assert_allclose(avg.sum(-1), 1.0, rtol=1e-5)

    split = _tiny_split()
    ev = vib.evaluate_model(model, split, samples=12, batch_size=16, seed=3)
    assert ev["stochastic"] and ev["num_test"] == len(split) and ev["samples"] == 12
    assert ev["error_pct"]["1shot_std"] > 0.0
    ce = ev["ce_nats"]
    pairs = [("sampled", "avg"), ("sampled", "mean"), ("avg", "mean")]
    assert min(abs(ce[a] - ce[b]) for a, b in pairs) > 1e-4     # three different modes, every pair compared
    assert ce["avg"] <= ce["sampled"]                            # Jensen: -log E[p] <= E[-log p]
    assert vib.evaluate_model(model, split, samples=12, batch_size=16, seed=3) == ev   # seeded: repeatable
    kl = kl_per_example(model, split.images.astype(np.float32) / 255.0).numpy()
    assert ev["kl_nats"] == pytest.approx(float(kl.mean()), rel=1e-5)
    bits = vib.info_bits(ev["kl_nats"], ev["ce_nats"]["sampled"], math.log2(10))
    assert bits["izx_bits"] == pytest.approx(kl.mean() / math.log(2), rel=1e-5)


def test_deterministic_model_has_equal_modes_and_zero_kl():
    import keras

    keras.utils.set_random_seed(0)
    model = build_model("mlp", get_spec("mnist"), latent_dim=16)
    x = _tiny_split(8).images.astype(np.float32) / 255.0
    np.testing.assert_array_equal(model.probabilities(x, samples=1)["digit"].numpy(),
                                  model.probabilities(x, samples=0)["digit"].numpy())
    ev = vib.evaluate_model(model, _tiny_split(), samples=4, batch_size=16)
    e = ev["error_pct"]
    assert not ev["stochastic"] and ev["kl_nats"] == 0.0
    assert e["1shot"] == e["avg"] == e["mean"] and e["1shot_std"] == 0.0
    assert ev["ce_nats"]["sampled"] == pytest.approx(ev["ce_nats"]["mean"], rel=1e-5)
    assert vib.info_bits(None, 0.5, 3.0) == {"izx_bits": None, "izy_bits": pytest.approx(3.0 - 0.5 / math.log(2))}


# --------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------
def test_label_entropy_and_beta_list():
    assert vib.label_entropy_bits(np.arange(1000) % 10) == pytest.approx(math.log2(10))
    assert vib.label_entropy_bits([3, 3, 3]) == 0.0
    assert vib.parse_betas("1, 1e-9,1e-3,0") == [0.0, 1e-9, 1e-3, 1.0]   # sorted, as documented
    for bad in ("", "1e-3,,1", "a", "-1", "1e-3,1e-3", "nan"):
        with pytest.raises(ValueError):
            vib.parse_betas(bad)
    assert [vib.run_name("vib_mlp", b) for b in (1e-9, 1e-3, 1.0)] == \
        ["vib_mlp-beta1e-09", "vib_mlp-beta0.001", "vib_mlp-beta1"]
    assert vib.run_name("mlp") == "mlp"


def test_schedules_reach_the_training_config(tmp_path):
    from tf_mtvib.train import build_config, parse_args

    demo = build_config(parse_args(vib.train_argv("vib_mlp", tmp_path / "r", 1e-3, preset="cpu", schedule="demo",
                                                  epochs=3, max_train=60000)))
    t = demo["training"]
    assert (t["learning_rate"], t["adam_beta1"], t["lr_decay"], t["lr_decay_epochs"], t["ema_momentum"],
            t["batch_size"], t["epochs"]) == (1e-4, 0.5, 0.97, 2, 0.999, 100, 3)
    assert demo["hparams"] == {"beta": 1e-3} and demo["limits"]["max_train"] == 60000
    paper = build_config(parse_args(vib.train_argv("mlp", tmp_path / "m", preset="smoke")))["training"]
    assert (paper["learning_rate"], paper["adam_beta1"], paper["lr_decay"], paper["ema_momentum"]) == \
        (1e-3, 0.9, 1.0, None)


def test_a_preset_with_its_own_rate_schedule_does_not_decay_the_sweeps_schedule():
    """``--preset full`` sets a cosine decay for every data set; a VIB run trains with its --schedule's rate
    (constant, or the demo's step decay) on every preset."""
    from tf_mtvib import train
    from tf_mtvib.train import presets_for

    for preset in presets_for("mnist"):
        for schedule, s in vib.SCHEDULES.items():
            argv = vib.train_argv("vib_mlp", "/tmp/unused", 1e-3, preset=preset, schedule=schedule)
            t = train.build_config(train.parse_args(argv))["training"]
            assert t.get("lr_schedule") in (None, "constant"), (preset, schedule)
            assert (t["learning_rate"], t["lr_decay"], t["batch_size"]) == (s["learning_rate"], s["lr_decay"],
                                                                           s["batch_size"])
    assert "--lr-schedule" in vib.train_argv("mlp", "/tmp/unused", preset="full")
    assert "--lr-schedule" not in vib.train_argv("mlp", "/tmp/unused", preset="cpu")   # configs as before


def test_long_runs_write_their_test_error_every_20_epochs_and_it_is_published_before_they_end(tmp_path, capsys):
    from tf_mtvib.train import build_config, parse_args

    # Table 1's 200-epoch runs write the test accuracy every 20 epochs; a short run writes none (its config as before)
    table1 = build_config(parse_args(vib.train_argv("vib_mlp", tmp_path / "r", 1e-3, preset="paper", schedule="demo")))
    assert table1["training"]["epochs"] == 200 and table1["training"]["test_at"] == list(range(20, 201, 20))
    assert "test_at" not in build_config(parse_args(vib.train_argv("mlp", tmp_path / "m", preset="cpu",
                                                                   epochs=10)))["training"]
    # what the runs have written (train.py --test-at's file, as tests/test_train.py checks it) is published
    out, results, doc = tmp_path / "demo-s1", tmp_path / "results", tmp_path / "vib.md"
    for name, acc, weights in (("mlp", 0.985, {}), ("vib_mlp-beta0.001", 0.9887, {"weights": "ema"})):
        (out / name).mkdir(parents=True)
        (out / name / "test_along.json").write_text(json.dumps(
            {"epochs": {"20": {"test": {"mean": {"digit": acc}, "mc12": {"digit": acc + 0.0001}}, "seconds": 1.0,
                               **weights}}}))
        (out / name / "config.json").write_text(json.dumps({"training": table1["training"]}))
    doc.write_text(f"# VIB\n\n{vib.DOC_BEGIN}\n{vib.DOC_END}\n")
    assert vib.main(["--progress-only", "--output-dir", str(out), "--results-dir", str(results), "--doc", str(doc)]) == 0
    progress = json.loads((results / "demo-s1" / "progress.json").read_text())
    assert set(progress["runs"]) == {"mlp", "vib_mlp-beta0.001"} and progress["training"]["mlp"]["epochs"] == 200
    text = doc.read_text()
    assert "### `demo-s1`: in progress" in text
    # the weights evaluated: the moving average (--ema-momentum), or '-' for a record that predates the field
    assert "| vib_mlp-beta0.001 | 20 | ema | 1.13 | 1.12 |" in text and "| mlp | 20 | - | 1.50 | 1.49 |" in text
    assert vib.main(["--progress-only", "--output-dir", str(tmp_path / "none"), "--results-dir", str(results),
                     "--doc", str(doc)]) == 2
    assert "has written test_along.json yet" in capsys.readouterr().err
    # when the sweep ends, publishing it brings progress.json to the runs' last epoch (no stale file is left)
    along = json.loads((out / "mlp" / "test_along.json").read_text())
    along["epochs"]["100"] = {**along["epochs"]["20"], "weights": "ema"}
    (out / "mlp" / "test_along.json").write_text(json.dumps(along))
    (out / vib.JSON_NAME).write_text(json.dumps({"baseline": None, "vib": [], "failed": []}))
    assert vib.publish_sweep({}, out, results) == results / "demo-s1"
    progress = json.loads((results / "demo-s1" / "progress.json").read_text())
    assert set(progress["runs"]["mlp"]) == {"20", "100"}
    table = vib.progress_table(progress)
    assert table.index("| mlp | 20 |") < table.index("| mlp | 100 |")   # epochs in order, not as text


def _published(schedule, seed, vib_error, base_error, epochs=200, num_train=60000):
    """A published sweep's JSON, as far as the verdicts read it."""
    row = lambda model, beta, err: {"model": model, "beta": beta, "epochs": epochs, "num_train": num_train,
                                    "error_pct": {"avg": err}}
    return {"schedule": schedule, "seed": seed, "baseline": row("mlp", None, base_error),
            "vib": [row("vib_mlp", 1e-4, 2.0), row("vib_mlp", 1e-3, vib_error)]}


def test_table1_verdicts_judge_the_demo_seeds_mean_and_report_the_paper_schedule():
    close = [_published("demo", s, e, 1.4) for s, e in ((1, 1.10), (2, 1.20), (3, 1.25))]   # mean 1.183
    lines = vib.table1_verdicts(close + [_published("paper", 0, 1.5, 1.6)])
    paper, demo = lines
    assert "VIB (beta 0.001) 1.50 %" in paper and "one seed" in paper and "no goal" in paper
    assert "1.18 %" in demo and "range 0.15 points" in demo and ": reproduced" in demo and "seeds 1, 2, 3" in demo
    assert "deterministic 1.40 %" in demo and "seeds asked for" not in demo
    far = vib.table1_verdicts([_published("demo", s, 1.29, 1.4) for s in (1, 2, 3)])[1]   # 0.16 points off
    assert ": not reproduced, +0.16 points" in far and "seeds asked for" not in far
    # fewer seeds than the goal asks for: reported, not judged, whatever the figure
    for errors in ((1.13,), (1.29, 1.40)):
        early = vib.table1_verdicts([_published("demo", s, e, 1.4) for s, e in enumerate(errors)])[1]
        assert "no verdict yet" in early and f"{len(errors)} of the 3 seeds asked for" in early
        assert "seed(s)" not in early                   # the count is said once
        assert "reproduced" not in early
    assert "seed 0)" in vib.table1_verdicts([_published("demo", 0, 1.4, 1.6)])[1]
    short = vib.table1_verdicts([_published("demo", 1, 1.13, 1.4, epochs=10),
                                 _published("demo", 2, 1.13, 1.4, num_train=6000)])
    assert all("no verdict" in line for line in short)


def _cw_published(accuracies, base_accuracy, n=1000):
    cw = lambda a: {"untargeted": {"accuracy": a}, "targeted": {"accuracy": a}}
    return {"cw": {"examples": n}, "baseline": {"cw": cw(base_accuracy)},
            "vib": [{"beta": b, "cw": cw(a)} for b, a in accuracies]}


def test_cw_verdicts_rise_over_the_range_and_the_deterministic_near_zero():
    rising = [(1e-7, 0.9), (1e-6, 0.10), (1e-4, 0.30), (1e-3, 0.31), (1e-2, 0.70), (1e-1, 0.2)]
    lines = vib.cw_verdicts("s", _cw_published(rising, 0.0))
    assert len(lines) == 3 and all(": reproduced" in line for line in lines)
    assert "1e-07" not in lines[0] and "0.1:" not in lines[0]                 # outside [1e-6, 1e-2]
    dip = [(1e-6, 0.10), (1e-4, 0.50), (1e-3, 0.40), (1e-2, 0.70)]           # 10 points down: > 2 SE on 1,000
    untargeted = vib.cw_verdicts("s", _cw_published(dip, 0.02))
    assert ": not reproduced" in untargeted[0] and "down at 0.001" in untargeted[0]
    assert "deterministic" in untargeted[2] and ": not reproduced" in untargeted[2]
    flat = vib.cw_verdicts("s", _cw_published([(1e-6, 0.30), (1e-4, 0.31), (1e-2, 0.32)], 0.0))
    assert ": not reproduced" in flat[0]                                       # 2 points: within 2 SE
    few = vib.cw_verdicts("s", _cw_published([(1e-6, 0.1), (1e-2, 0.9)], 0.0))
    assert "fewer than 3 betas" in few[0]


def test_time_table_sums_training_and_cw_hours_and_names_the_cpus():
    cpu = {"cpu": "Some CPU", "isa": ["avx512_bf16"]}
    published = {"baseline": {"model": "mlp", "beta": None, "epochs": 200, "train_seconds": 3600.0,
                              "median_epoch_seconds": 18.0, "train_machines": ["A (avx512_bf16)", "B (amx_bf16)"],
                              "cw": {"untargeted": {"seconds": 1800.0}, "targeted": {"seconds": 1800.0},
                                     "machine": cpu}},
                 "vib": [{"model": "vib_mlp", "beta": 1e-3, "epochs": 200, "train_seconds": 7200.0,
                          "median_epoch_seconds": None},
                         {"model": "vib_mlp", "beta": 1e-1, "epochs": 200}]}      # no time recorded: no row
    lines = vib.time_table([("s", published)]).splitlines()
    assert len(lines) == 4
    assert lines[2] == ("| `s` | mlp | deterministic | 200 | 1.00 | 18.0 | 1.00 | A (avx512_bf16); B (amx_bf16); "
                        "CW: Some CPU (avx512_bf16) |")
    assert lines[3] == "| `s` | vib_mlp | 0.001 | 200 | 2.00 | - | - | not recorded |"
    assert vib.time_table([("s", {"vib": [published["vib"][1]]})]) == ""


def test_bad_flags(capsys):
    for argv, msg in ((["--betas", "x"], "not a number"), (["--schedule", "fast"], "invalid choice"),
                      (["--epochs", "0"], "must be >= 1"), (["--attack-examples", "-1"], "must be >= 0"),
                      (["--cw-betas", "1e-3"], "needs --cw-examples"),
                      (["--betas", "1e-3", "--cw-examples", "5", "--cw-betas", "1e-2"], "not in --betas")):
        with pytest.raises(SystemExit) as e:
            vib.main(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err
