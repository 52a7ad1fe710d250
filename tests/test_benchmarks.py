"""Smoke tests of the benchmark scripts: each runs with --quick and writes valid JSON.

No timing is asserted (the figures depend on the machine and its load).
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402  (benchmarks/common.py)


def _run(script, tmp_path, *extra, data_dir=None):
    out = tmp_path / f"{script}.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if data_dir is not None:
        env["TF_MTVIB_DATA_DIR"] = str(data_dir)
    proc = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--quick", "--output", str(out), *extra],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == script and doc["quick"] is True
    m = doc["machine"]
    for key in ("cpu_model", "cpu_count", "cpus_usable", "tensorflow", "keras", "python"):
        assert m[key], key
    assert doc["tables"] and doc["tables"][0].startswith("| ")
    assert doc["tables"][0] in proc.stdout          # the printed table is the stored one
    assert doc["results"]["rows"]
    return doc


def _timings(series, rounds):
    """Every timing series has one positive value per round."""
    for name, values in series.items():
        assert len(values) == rounds and all(v > 0 for v in values), name


def _derived(recorded, num, den, scale=1.0):
    """A recorded ratio summary is the one common.ratio_stats computes from the recorded timings."""
    expected = {k: (v if k == "rounds" else v * scale) for k, v in common.ratio_stats(num, den).items()}
    assert recorded.keys() == expected.keys()
    for k, v in expected.items():
        assert recorded[k] == pytest.approx(v, rel=1e-9), k


@pytest.mark.slow
def test_bench_train_quick(tmp_path):
    doc = _run("bench_train", tmp_path)
    rows = doc["results"]["rows"]
    assert {r["model"] for r in rows} == {"gs", "mtvib"}
    for r in rows:
        t = r["step_seconds"]
        assert set(t) == set(r["images_per_second"]) == {"library", "reference", "library_xla", "library_bf16"}
        _timings(t, r["rounds"])
        assert r["rounds"] == 3
        for k, v in t.items():
            assert r["images_per_second"][k] == pytest.approx(r["batch_size"] / common.median(v), rel=1e-9), k
        _derived(r["library_vs_reference"], t["reference"], t["library"])
        _derived(r["xla_vs_no_xla"], t["library"], t["library_xla"])
        assert r["bf16_vs_float32"]["rounds"] == 3
        assert r["flops_per_image"]["training_per_example"] > 2 * r["flops_per_image"]["forward_per_example"]
        assert set(r["percent_of_peak"]) == set(r["images_per_second"])
        assert all(0 < v < 100 for v in r["percent_of_peak"].values())
    assert doc["results"]["min_library_vs_reference"] == min(
        r["library_vs_reference"]["median_of_round_ratios"] for r in rows)
    assert doc["results"]["peak"]["fp32_peak_flops"] > 0


@pytest.mark.slow
def test_bench_allocator_quick(tmp_path):
    from tf_mtvib.runtime import MALLOC_TUNABLES, allocator_tuned, uses_glibc

    if not uses_glibc():
        pytest.skip("glibc's allocator only")
    doc = _run("bench_allocator", tmp_path, "--models", "gs")
    res = doc["results"]
    procs = res["processes"]
    assert [p["variant"] for p in procs] == ["default", "tuned"] and res["rounds"] == 1
    assert procs[0]["glibc_tunables"] is None
    assert allocator_tuned({"GLIBC_TUNABLES": procs[1]["glibc_tunables"]})
    assert all(k in procs[1]["glibc_tunables"] for k in MALLOC_TUNABLES)
    for p in procs:
        assert p["minor_page_faults"] > 0 and p["user_seconds"] > 0 and p["images_per_second"]["gs"] > 0
        assert 100 < p["peak_resident_mib"] < 64 * 1024   # TensorFlow alone is over 100 MiB; MiB, not KiB
    assert res["tuned_vs_default_peak_resident"] == pytest.approx(
        procs[1]["peak_resident_mib"] / procs[0]["peak_resident_mib"])
    (row,) = res["rows"]
    assert row["model"] == "gs"
    _derived(row["tuned_vs_default"], row["images_per_second"]["tuned"], row["images_per_second"]["default"])
    assert res["min_tuned_vs_default"] == row["tuned_vs_default"]["median_of_round_ratios"]


@pytest.mark.slow
def test_bench_torch_quick(tmp_path):
    pytest.importorskip("torch")
    doc = _run("bench_torch", tmp_path)
    rows = doc["results"]["rows"]
    assert {r["model"] for r in rows} == {"gs", "mtvib"}
    for r in rows:
        assert set(r["images_per_second"]) == {"keras_float32", "torch_float32", "keras_mixed_bfloat16",
                                               "torch_bfloat16"}
        assert all(v > 0 for v in r["images_per_second"].values())
        # the shape-derived count agrees with PyTorch's own FLOP counter on the PyTorch step
        assert r["torch_counted_flops_per_image"] == r["flops_per_image"]["training_per_example"]
        for key in ("keras_vs_torch_float32", "keras_vs_torch_bfloat16", "bfloat16_vs_float32_keras",
                    "bfloat16_vs_float32_torch"):
            assert r[key]["rounds"] == 3
    assert doc["machine"]["torch_threads"] == doc["machine"]["cpus_usable"]


@pytest.mark.slow
def test_cw_reference_quick(tmp_path, data_dir):
    pytest.importorskip("cleverhans")
    doc = _run("cw_reference", tmp_path, data_dir=data_dir)
    rows = doc["results"]["rows"]
    assert [(r["model"], r["targeted"]) for r in rows] == [("mlp", False), ("mlp", True), ("vib_mlp", False),
                                                           ("vib_mlp", True)]
    for r in rows:
        assert r["examples"] == 20 and {"ours", "cleverhans"} <= set(r)
        assert 0 <= r["ours"]["success_rate"] <= 1 and 0 <= r["cleverhans"]["success_rate"] <= 1
        assert r["agrees"] == (r["success_gap_points"] <= 2.0 and (r["l2_relative_gap"] is None
                                                                   or r["l2_relative_gap"] <= 0.05))


@pytest.mark.slow
def test_cw_reference_describes_its_models(tmp_path, data_dir):
    """With --run, the results' notes say how each attacked model was trained, read from the run itself."""
    import cw_reference
    from tf_mtvib import runs

    run_dir = common.smoke_run("mnist", "vib_mlp", data_dir, tmp_path)
    run = runs.load_run(run_dir)
    line = cw_reference.describe_run(run)
    t, m = run.config["training"], run.metrics()
    assert line.startswith(f"{run_dir}: vib_mlp (beta {run.model.hparams['beta']:g}), preset smoke, ")
    assert f"{m['epochs']} epochs on {m['num_train']:,} images" in line
    assert f"Adam lr {t['learning_rate']:g}" in line and f"seed {t['seed']}" in line
    assert line.endswith(f"test accuracy (mean mode) {100 * m['test']['mean']['digit']:.2f} %")
    # the deterministic twin has no KL, so no beta, though its hyper-parameters carry the default
    det_dir = common.smoke_run("mnist", "mlp", data_dir, tmp_path)
    det = runs.load_run(det_dir)
    assert "beta" in det.model.hparams
    assert cw_reference.describe_run(det).startswith(f"{det_dir}: mlp, preset smoke, ")


@pytest.mark.slow
def test_bench_precision_quick(tmp_path, data_dir):
    doc = _run("bench_precision", tmp_path, "--models", "gs", "--seeds", "0,1", data_dir=data_dir)
    parity, tta = doc["results"]["parity"], doc["results"]["tta"]
    assert [(r["model"], r["precision"], r["seed"]) for r in parity] == [
        ("gs", "float32", 0), ("gs", "float32", 1), ("gs", "mixed_bfloat16", 0), ("gs", "mixed_bfloat16", 1)]
    f32, bf16 = doc["results"]["parity_summary"]
    assert f32["seeds"] == bf16["seeds"] == [0, 1] and "points_vs_float32" not in f32
    mean = lambda prec, t: sum(r["accuracy"][t] for r in parity if r["precision"] == prec) / 2
    for t in ("top_left", "bottom_right"):
        assert bf16["points_vs_float32"][t] == pytest.approx(100 * (mean("mixed_bfloat16", t) - mean("float32", t)))
    assert bf16["within_1_point"] == all(abs(bf16["points_vs_float32"][t]) <= 1 for t in ("top_left", "bottom_right"))
    assert [(r["model"], r["seed"], r["precision"]) for r in tta] == [
        ("gs", 0, "float32"), ("gs", 0, "mixed_bfloat16"), ("gs", 1, "float32"), ("gs", 1, "mixed_bfloat16")]
    for r in tta:
        assert r["evaluations"] and r["evaluations"][0]["train_seconds"] > 0
        assert set(r["best"]) == {"top_left", "bottom_right", "joint"}
        assert r["targets"] == {"top_left": 0.9, "bottom_right": 0.9} and r["preset"] == "full"
    assert len(doc["tables"]) == 2


@pytest.mark.slow
def test_bench_precision_time_to_the_paper_targets_at_the_fast_preset(tmp_path, data_dir):
    """``--tta-preset fast --target paper``: the fast preset's precision and fused BatchNorm, each model's own
    Table III row less one point as its targets."""
    doc = _run("bench_precision", tmp_path, "--parts", "tta", "--models", "mtvib", "--precisions", "mixed_bfloat16",
               "--tta-preset", "fast", "--target", "paper", data_dir=data_dir)
    (row,) = doc["results"]["tta"]
    assert row["preset"] == "fast" and row["hparams"]["fused_batchnorm"] is True and row["target"] == "paper"
    assert row["targets"] == pytest.approx({"top_left": 0.939, "bottom_right": 0.927})
    assert "Table III row less one point" in " ".join(doc["notes"])


def test_bench_precision_targets_are_a_number_or_each_models_paper_row():
    import bench_precision

    assert bench_precision.tta_targets("paper", "gs", None) == pytest.approx({"top_left": 0.937, "bottom_right": 0.927})
    assert bench_precision.tta_targets("paper", "mtvib", None) == pytest.approx({"top_left": 0.939,
                                                                                 "bottom_right": 0.927})
    assert bench_precision.tta_targets("0.9", "gs", ["a", "b"]) == {"a": 0.9, "b": 0.9}
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        bench_precision.tta_targets("1.5", "gs", ["a"])


@pytest.mark.slow
def test_bench_precision_parity_variant_with_float32_heads(tmp_path, data_dir):
    """``mixed_bfloat16+float32_heads``: its own runs, trained with --float32-heads, compared with float32's."""
    doc = _run("bench_precision", tmp_path, "--parts", "parity", "--models", "mtvib",
               "--precisions", "float32,mixed_bfloat16+float32_heads", "--workdir", str(tmp_path / "w"),
               data_dir=data_dir)
    assert [r["precision"] for r in doc["results"]["parity"]] == ["float32", "mixed_bfloat16+float32_heads"]
    config = json.loads((tmp_path / "w" / "parity-mtvib-mixed_bfloat16+float32_heads-smoke" / "config.json").read_text())
    assert config["training"]["precision"] == "mixed_bfloat16" and config["hparams"]["float32_heads"] is True
    assert "points_vs_float32" in doc["results"]["parity_summary"][1]
    bad = subprocess.run([sys.executable, str(BENCH / "bench_precision.py"), "--quick", "--parts", "parity",
                          "--precisions", "float32,mixed_bfloat16+nothing"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "unknown option(s) ['nothing']" in bad.stderr


@pytest.mark.slow
def test_bench_load_quick(tmp_path, data_dir):
    """The same training alone and beside a competing process: epoch wall and CPU seconds of each, and the
    loaded / alone ratios computed from them (no timing is asserted)."""
    doc = _run("bench_load", tmp_path, data_dir=data_dir)
    runs = doc["results"]["rows"]
    assert [r["condition"] for r in runs] == ["alone", "beside a competitor"]
    for r in runs:
        assert len(r["epoch_seconds"]) == len(r["epoch_cpu_seconds"]) == 1      # 2 epochs, the first left out
        assert r["epoch_seconds"][0] > 0 and r["epoch_cpu_seconds"][0] > 0
    ratio = doc["results"]["loaded_vs_alone"]["median_cpu_seconds"]["ratio_of_medians"]
    assert ratio == pytest.approx(runs[1]["median_cpu_seconds"] / runs[0]["median_cpu_seconds"])


@pytest.mark.slow
def test_bench_epochs_quick(tmp_path, data_dir):
    doc = _run("bench_epochs", tmp_path, data_dir=data_dir)
    r = doc["results"]
    assert r["images"] == 1200 and r["epochs"] == 3 and [row["iterator"] for row in r["rows"]] == ["fresh", "endless"]
    for row in r["rows"]:
        fits = r["fits"][row["iterator"]]
        assert len(fits) == r["rounds"] and all(len(f["epoch_seconds"]) == 3 and len(f["first_step_waits"]) == 2
                                                for f in fits)
        assert row["timed_seconds"] == [pytest.approx(sum(f["epoch_seconds"][1:])) for f in fits]
        assert row["longest_wait"] == max(w for f in fits for w in f["first_step_waits"])
    _derived(r["fresh_vs_endless"], r["rows"][0]["timed_seconds"], r["rows"][1]["timed_seconds"])


@pytest.mark.slow
def test_bench_pipeline_quick(tmp_path, data_dir):
    doc = _run("bench_pipeline", tmp_path, data_dir=data_dir)
    (r,) = doc["results"]["rows"]
    assert r["dataset"] == "multimnist" and r["train_images"] == 500
    assert set(r["pipeline_vs_training"]) == {"gs", "mtvib"}
    t = r["seconds"]
    _timings(t, r["rounds"])
    units = {k: r["train_images"] if k == "pipeline" else r["batch_size"] * r["timed_steps_per_round"] for k in t}
    for k, v in t.items():
        assert r["images_per_second"][k] == pytest.approx(units[k] / common.median(v), rel=1e-9), k
    for m, st in r["pipeline_vs_training"].items():
        _derived(st, t[f"train_{m}"], t["pipeline"], units["pipeline"] / units[f"train_{m}"])
    _derived(r["real_vs_synthetic_training_gs"], t["train_gs"], t["train_gs_real"])
    assert doc["results"]["min_pipeline_vs_training"] == min(
        st["median_of_round_ratios"] for st in r["pipeline_vs_training"].values())


@pytest.mark.slow
def test_bench_inference_quick(tmp_path, data_dir):
    doc = _run("bench_inference", tmp_path, data_dir=data_dir)
    (r,) = doc["results"]["rows"]
    assert set(r["bytes"]) == {"savedmodel", "tflite_float32", "tflite_float16", "tflite_int8"}
    assert r["bytes"]["tflite_int8"] < r["bytes"]["tflite_float16"] < r["bytes"]["tflite_float32"]
    for b in ("batch1", "batch64"):
        m = r[b]
        assert m["argmax_agreement_with_savedmodel"]["tflite_float32"] == 1.0
        per_call = m["seconds_per_call"]
        assert set(per_call) == {"savedmodel", "tflite_float32", "tflite_float16", "tflite_int8"}
        _timings(per_call, len(per_call["savedmodel"]))
        for k, v in per_call.items():
            assert m["images_per_second"][k] == pytest.approx(m["batch_size"] / common.median(v), rel=1e-9), k
            assert m["ms_per_call"][k] == pytest.approx(1e3 * common.median(v), rel=1e-9), k
        for k in ("tflite_float32", "tflite_float16", "tflite_int8"):
            _derived(m["time_vs_savedmodel"][k], per_call[k], per_call["savedmodel"])
            _derived(m["speed_vs_savedmodel"][k], per_call["savedmodel"], per_call[k])


@pytest.mark.slow
def test_bench_robustness_quick(tmp_path, data_dir):
    doc = _run("bench_robustness", tmp_path, data_dir=data_dir)
    (r,) = doc["results"]["rows"]
    from tf_mtvib.evaluate import DEFAULT_EPS

    assert r["test_images"] == 500 and r["eps"] == list(DEFAULT_EPS)
    t = r["seconds"]
    assert set(t) == {"clean", "fgsm_sweep"}
    _timings(t, r["rounds"])
    assert r["median_seconds"] == {k: pytest.approx(common.median(v), rel=1e-9) for k, v in t.items()}
    _derived(r["sweep_vs_clean"], t["fgsm_sweep"], t["clean"])
    assert set(r["accuracy"]) == {"top_left", "bottom_right", "joint"}
    for task, acc in r["accuracy"].items():
        assert len(acc) == len(DEFAULT_EPS) and all(0.0 <= a <= 1.0 for a in acc), task
    assert all(j <= min(r["accuracy"]["top_left"][i], r["accuracy"]["bottom_right"][i])
               for i, j in enumerate(r["accuracy"]["joint"]))


@pytest.mark.slow
def test_bench_multiworker_quick(tmp_path, data_dir):
    doc = _run("bench_multiworker", tmp_path, data_dir=data_dir)
    (r,) = doc["results"]["rows"]
    assert r["model"] == "gs" and set(r["images_per_second"]) == {"1 worker", "2 workers"}
    assert all(v > 0 for v in r["images_per_second"].values())
    c = r["communication"]
    assert 0 < c["gradient_bytes"] < 4 * c["parameters"] and c["sync_batchnorm_bytes"] > 0
    assert c["ring_bytes_sent_per_worker_per_step"] == c["all_reduced_bytes_per_step"]   # 2(W-1)/W = 1 for W = 2
    assert any("OVERHEAD, NOT SPEED-UP" in n for n in doc["notes"])


# --------------------------------------------------------------------------
# The helpers and the hand-written reference models (no timing)
# --------------------------------------------------------------------------
def test_flop_counter_matches_a_hand_count():
    import keras

    import flops
    from tf_mtvib.layers import GaussianLatent

    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3)(x)                         # 6 x 6 x 4 outputs, 3 x 3 x 3 MACs each
    out = keras.layers.Dense(5)(keras.layers.Flatten()(h))   # 144 x 5
    model = keras.Model(x, out)
    conv, dense = 6 * 6 * 4 * 3 * 3 * 3, 144 * 5
    assert [(r["kind"], r["macs"], r["reads_input"]) for r in flops.layer_macs(model)] == \
        [("conv2d", conv, True), ("dense", dense, False)]
    fl = flops.training_flops(model)
    assert fl["forward_per_example"] == 2 * (conv + dense) == 2 * (3888 + 720)
    assert fl["three_x_forward_per_example"] == 3 * 9216
    assert fl["training_per_example"] == 3 * 9216 - 2 * 3888       # no gradient w.r.t. the image

    # strides, a Dense inside a custom layer, and a layer that does not read the input
    x = keras.Input((9, 9, 1))
    h = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, strides=2)(x))    # 4 x 4 x 2 outputs of 9 MACs
    z = GaussianLatent(3)(keras.layers.Dense(32)(h))                       # 32 x 32, then 32 -> 2 x 3
    model = keras.Model(x, z)
    assert flops.forward_flops(model) == 2 * (4 * 4 * 2 * 9 + 32 * 32 + 32 * 6)


def test_cpu_peak_formula():
    import flops

    peak = flops.cpu_peak(ghz=2.0, fma_bits=512)
    cores = peak["cores"]
    assert peak["fp32_flops_per_cycle_per_core"] == 512 // 32 * 2 == 32
    assert peak["fp32_peak_flops"] == pytest.approx(cores * 2.0e9 * 32)
    assert peak["bf16_peak_flops"] == pytest.approx(peak["fp32_peak_flops"] * (2 if peak["avx512_bf16"] else 1))
    # the AMX tile peak where the CPU has tiles (1,024 bfloat16 operations per cycle per core), else none
    if peak["amx_bf16"]:
        assert peak["amx_bf16_peak_flops"] == pytest.approx(peak["cores"] * 2.0e9 * 1024) and "AMX" in peak["formula"]
    else:
        assert peak["amx_bf16_peak_flops"] is None and "AMX" not in peak["formula"]
    assert f"{cores} x 2.000 x (512/32) x 2" in peak["formula"]
    assert flops.percent_of_peak(100.0, 1e9, 200e9) == pytest.approx(50.0)
def test_interleave_alternates_and_uses_self_measured_time():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b") or 0.25}
    times = common.interleave(fns, rounds=3, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(times["a"]) == len(times["b"]) == 3 and times["b"] == [0.25] * 3
    st = common.ratio_stats([2.0, 4.0, 6.0], [1.0, 1.0, 2.0])
    assert st["median_of_round_ratios"] == 3.0 and st["min"] == 2.0 and st["max"] == 4.0
    assert st["ratio_of_medians"] == 4.0


def test_per_dataset_option_and_table():
    import argparse

    p = argparse.ArgumentParser()
    assert common.per_dataset("multimnist=100,mtfl=32", ["multifashion", "mtfl"], "--x", p) == \
        {"multimnist": 100, "multifashion": 100, "mtfl": 32}
    assert common.per_dataset("8", ["mtfl"], "--x", p) == {"mtfl": 8}
    with pytest.raises(SystemExit):
        common.per_dataset("multimnist=100", ["mtfl"], "--x", p)
    t = common.table(["a", "b"], [["x", 1234.5], ["y", 0.98765]]).splitlines()
    assert t[0].startswith("| a") and "1,234" in t[2] and "0.988" in t[3]


@pytest.mark.parametrize("dataset", ["multimnist", "mtfl"])
def test_reference_models_have_the_library_architecture(dataset):
    from bench_train import MODELS, library_model, reference_model
    from tf_mtvib.datasets import get_spec
    from tf_mtvib.models import DEFAULT_HPARAMS

    spec = get_spec(dataset)
    for name in MODELS:
        lib = library_model(name, spec, 1e-3, False)
        ref = reference_model(name, spec, dict(DEFAULT_HPARAMS), 1e-3)
        assert ref.count_params() == lib.count_params(), name


def test_project_readme_training_speed_is_the_committed_results(tmp_path):
    """The project README's training-speed block is :func:`common.training_speed` of the committed results,
    and its ratios and paired differences are computed from the numbers in the files."""
    readme = common.PROJECT_README.read_text()
    block = readme[readme.index(common.SPEED_BEGIN) + len(common.SPEED_BEGIN):readme.index(common.SPEED_END)]
    assert block.strip("\n") == common.training_speed().strip("\n")
    machine = {"cpu_model": "Test CPU", "isa": ["avx2", "amx_bf16"], "load_average_at_start": [0.3]}
    (tmp_path / "torch.json").write_text(json.dumps({"date": "2026-01-02T00:00:00", "machine": machine, "results": {
        "rows": [{"model": "mtvib", "images_per_second": {"keras_float32": 400.0, "keras_mixed_bfloat16": 500.0,
                                                          "keras_float32_fused_bn": 600.0}}]}}))
    (tmp_path / "precision.json").write_text(json.dumps({"date": "2026-01-02T00:00:00", "machine": machine, "results": {
        "parity": [{"model": "gs", "precision": p, "seed": s, "preset": "fast", "epochs": 4, "num_train": 1000,
                    "accuracy": {"a": acc, "joint": 0.0}}
                   for p, s, acc in (("float32", 0, 0.90), ("mixed_bfloat16", 0, 0.88),
                                     ("float32", 1, 0.80), ("mixed_bfloat16", 1, 0.81), ("float32", 2, 0.5))]}}))
    text = common.training_speed(tmp_path)
    assert "| Test CPU (amx_bf16) | mtvib | 400 | 1.25x | 1.50x | not measured | 0.3 |" in text
    # seed 2 has no bfloat16 partner and is left out: (-2 + 1) / 2 = -0.5
    assert "gs, `mixed_bfloat16` (seeds 0, 1): a -0.5 (seeds -2.0 to +1.0)" in text
    assert "Not yet measured at the `fast` preset." not in text     # the parity above ran at the fast preset
    (tmp_path / "precision.json").write_text(json.dumps({"date": "2026-01-02T00:00:00", "machine": machine, "results": {
        "parity": [{"model": "gs", "precision": p, "seed": 0, "preset": "fast", "epochs": 4, "num_train": 1000,
                    "accuracy": {"a": acc, "joint": 0.0}} for p, acc in (("float32", 0.90), ("mixed_bfloat16", 0.88))]}}))
    assert "gs, `mixed_bfloat16` (seed 0, one pair): a -2.0." in common.training_speed(tmp_path)   # no spread

    # the fast preset's time to the paper's targets, per model and precision, against the 1,800 s goal
    (tmp_path / "precision.json").unlink()
    assert "Not yet measured at the `fast` preset." in common.training_speed(tmp_path)
    tta = lambda model, seed, precision, secs, ratio=None: {
        "model": model, "seed": seed, "precision": precision, "preset": "fast", "target": "paper",
        "num_train": 120000, "reached": {"all": {"train_seconds": secs}} if secs else {},
        **({"speedup_vs_float32": ratio} if ratio else {})}
    (tmp_path / "precision_tta_fast.json").write_text(json.dumps({"date": "2026-01-03T00:00:00", "machine": machine,
        "results": {"tta": [tta("mtvib", 0, "mixed_bfloat16", 1500.0), tta("mtvib", 1, "mixed_bfloat16", 1900.0),
                            tta("mtvib", 2, "mixed_bfloat16", None), tta("gs", 0, "float32", 2000.0),
                            tta("gs", 0, "mixed_bfloat16", 1000.0, 2.0)]}}))
    text = common.training_speed(tmp_path)
    assert ("mtvib, `mixed_bfloat16` (seeds 0, 1, 2): 1,700 s mean (seeds 1,500 to 1,900); 1 of 3 within 1,800 s, "
            "1 not reached") in text
    assert "gs, `mixed_bfloat16` (seed 0): 1,000 s, within 1,800 s (one seed); float32's time over this: 2.00x" in text
    assert "gs, `float32` (seed 0): 2,000 s, over 1,800 s (one seed)" in text
    assert "Test CPU (amx_bf16); load at start 0.3; `precision_tta_fast.json`, 2026-01-03" in text
    assert "Not yet measured at the `fast` preset." not in text


def test_readme_figures_are_the_committed_results(tmp_path):
    """The README's generated block is exactly what benchmarks/common.py renders from
    results/*.json; regenerating it leaves the README unchanged, and the prose outside
    the block states no measured figure (no images/s, ratio or percentage)."""
    import re

    readme = (BENCH / "README.md").read_text()
    copy = tmp_path / "README.md"
    copy.write_text(readme)
    assert common.write_readme(copy) == readme
    block = readme[readme.index(common.README_BEGIN):readme.index(common.README_END)]
    for f in common.results_files():
        doc = json.loads(f.read_text())
        assert all(t in block for t in doc["tables"]), f.name
    outside = readme.replace(block, "")
    outside = re.sub(r"```.*?```", "", outside, flags=re.S)
    outside = re.sub(r"reach(es)? 90%", "", outside)     # bench_precision's target, not a result
    figure = r"\d[\d,.]*\s*(%|img/s|images/s|ms\b|MFLOP|GFLOP|x faster|times faster)"
    assert not re.search(figure, outside), re.findall(".{30}" + figure, outside)


def test_results_record_commands_without_machine_paths():
    assert common.shown_path(str(common.REPO.resolve() / "benchmarks" / "results" / "x.json")) == "benchmarks/results/x.json"
    assert common.shown_path(str(pathlib.Path.home().resolve() / ".cache" / "runs")) == "~/.cache/runs"
    assert common.shown_path(f"--output={common.REPO.resolve()}/a.json") == "--output=a.json"
    assert common.shown_path("--seeds") == "--seeds" and common.shown_path("0,1,2") == "0,1,2"
