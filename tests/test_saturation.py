"""S_k (tf_mtvib.saturation), the per-task clipped loss, the per-task attack and the
gradient-masking check of evaluate_robustness, on small constructed cases."""
import pathlib
import warnings

import numpy as np
import pytest
import tensorflow as tf

from tf_mtvib import attacks as A
from tf_mtvib import saturation
from tf_mtvib.evaluate import GradientMaskingWarning, evaluate_robustness, markdown_table

from test_attacks import SPEC, tiny_model


def _images(n=240, seed=3):
    return np.random.default_rng(seed).random((n,) + SPEC.input_shape).astype(np.float32)


def _scaled(scale_a, scale_b=1.0, seed=0):
    """A tiny deterministic model whose task heads' kernels and biases are multiplied:
    the logit margins grow in proportion."""
    model = tiny_model(seed=seed)
    for task, c in (("a", scale_a), ("b", scale_b)):
        head = model.network.get_layer(task)
        head.kernel.assign(head.kernel * c)
        head.bias.assign(head.bias * c)
    return model


def _margins(model, x, task):
    logits = model.network(tf.constant(x), training=False)[task].numpy()
    top2 = np.sort(logits, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _predicted(model, x):
    logits = model.network(tf.constant(x), training=False)
    return {t: np.argmax(v.numpy(), axis=1) for t, v in logits.items()}


def _dataset(x, y, batch=60):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def test_thresholds_are_the_float32_clip_bounds():
    assert saturation.upper_threshold() == np.float32(1.0 - 1e-7)
    assert float(saturation.upper_threshold()) < 1.0
    # the next float32 above the threshold is the first saturated probability
    assert np.nextafter(saturation.upper_threshold(), np.float32(2)) > saturation.upper_threshold()
    # a logit margin of 15 is below it, 17 above it (the note's table)
    two = saturation.saturation_of({"a": np.array([[15.0, 0.0], [17.0, 0.0]], np.float32)}, {"a": np.array([0, 0])})
    assert two["a"]["saturated"].tolist() == [False, True]


def test_S_k_equals_the_share_of_exactly_zero_gradients_under_the_task_clipped_loss():
    x = _images()
    base = _margins(tiny_model(), x, "a")
    model = _scaled(16.0 / np.median(base))   # about half the images beyond a margin of 16 on task a
    y = _predicted(model, x)                   # every image right: no confidently wrong one
    s = saturation.measure(model, _dataset(x, y))
    assert 0.2 < s["S"]["a"] < 0.8, s          # a real mix of saturated and unsaturated images
    zero = A.zero_gradient(A.network_logits(model.network), tf.constant(x), y, A.clipped_task_loss("a")).numpy()
    assert zero.mean() == s["S"]["a"]
    # image by image: the zero-gradient images are exactly the saturated ones
    sat = saturation.saturation_of({"a": model.network(tf.constant(x), training=False)["a"].numpy()}, y)
    assert np.array_equal(zero, sat["a"]["saturated"])
    # the logits loss moves every one of them, and task b's clipped loss is not saturated
    assert not A.zero_gradient(A.network_logits(model.network), tf.constant(x), y, A.task_loss("a")).numpy().any()
    assert not A.zero_gradient(A.network_logits(model.network), tf.constant(x), y,
                               A.clipped_task_loss("b")).numpy().any()
    assert s["S"]["b"] == 0.0


def test_confidently_wrong_images_have_a_zero_gradient_but_do_not_count_in_S():
    x = _images()
    model = _scaled(16.0 / np.median(_margins(tiny_model(), x, "a")))
    y = _predicted(model, x)
    y["a"] = (y["a"] + 1) % 3                  # every label wrong now
    s = saturation.measure(model, _dataset(x, y))
    zero = A.zero_gradient(A.network_logits(model.network), tf.constant(x), y, A.clipped_task_loss("a")).numpy()
    assert s["S"]["a"] == 0.0 and s["correct"]["a"] == 0.0
    assert 0.0 < s["saturated_wrong"]["a"] and zero.mean() == s["S"]["a"] + s["saturated_wrong"]["a"]


def test_clipped_task_loss_is_one_term_of_the_summed_clipped_loss():
    x = _images(12)
    model = _scaled(3.0)
    y = _predicted(model, x)
    logits = model.network(tf.constant(x), training=False)
    total = float(A.clipped_probability_ce(y, logits))
    parts = sum(float(A.make_loss(f"clipped_prob_ce:{t}", model)(y, logits)) for t in SPEC.task_names)
    assert total == pytest.approx(parts, rel=1e-6)
    with pytest.raises(ValueError, match="unknown attack loss"):
        A.make_loss("clipped_prob_ce:nope", model)
    with pytest.raises(ValueError, match="one attack per task"):
        A.make_loss("per_task", model)


def test_masking_check_warns_on_huge_logits_and_records_the_share():
    x = _images(400)
    base = tiny_model()
    x = x[(_margins(base, x, "a") > 0.05) & (_margins(base, x, "b") > 0.05)][:120]
    model = _scaled(1e4, 1e4)                  # margins above 500: softmax is exactly one-hot
    y = _predicted(model, x)
    with pytest.warns(GradientMaskingWarning, match=r"zero_gradient\.a 100\.0 %.*Remedy"):
        r = evaluate_robustness(model, _dataset(x, y), "fgsm", [0.0, 0.1, 0.3], loss="sum", verbose=0)
    m = r["masking"]
    assert m["zero_gradient"] == {"a": 1.0, "b": 1.0} and m["attack_loss_zero_gradient"] == 1.0
    assert m["S"] == {"a": 1.0, "b": 1.0}
    assert r["accuracy"]["a"] == [1.0, 1.0, 1.0]          # never moved
    # PGD records the same check, at the clean image
    with pytest.warns(GradientMaskingWarning):
        p = evaluate_robustness(model, _dataset(x, y), "pgd", [0.0, 0.1], loss="sum", steps=2, verbose=0)
    assert p["masking"]["zero_gradient"] == {"a": 1.0, "b": 1.0}


def test_no_warning_on_an_ordinary_model_and_the_clipped_loss_warns_where_logits_do_not():
    x = _images(120)
    y = _predicted(tiny_model(), x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        r = evaluate_robustness(tiny_model(), _dataset(x, y), "fgsm", [0.0, 0.1], verbose=0)
    assert r["masking"]["zero_gradient"] == {"a": 0.0, "b": 0.0} and r["zero_gradient"] == 0.0
    base = _margins(tiny_model(), x, "a")
    keep = (base > 0.6 * np.median(base)) & (base < 2.5 * np.median(base))
    x, y = x[keep], {t: v[keep] for t, v in y.items()}
    model = _scaled(30.0 / np.median(base))    # margins from 18 to 75: beyond the clip, short of exp underflow
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        evaluate_robustness(model, _dataset(x, y), "fgsm", [0.0, 0.1], loss="per_task", verbose=0)
    with pytest.warns(GradientMaskingWarning, match="clips probabilities"):
        c = evaluate_robustness(model, _dataset(x, y), "fgsm", [0.0, 0.1], loss="clipped_prob_ce:per_task",
                                verbose=0)
    assert c["masking"]["zero_gradient"]["a"] == c["masking"]["S"]["a"] > 0.5


def test_per_task_attack_scores_each_task_under_its_own_loss():
    x = _images(90)
    model = tiny_model()
    y = _predicted(model, x)
    eps = [0.0, 0.2]
    per_task = evaluate_robustness(model, _dataset(x, y), "fgsm", eps, loss="per_task", verbose=0)
    assert "joint" not in per_task["accuracy"]
    for t in SPEC.task_names:
        alone = evaluate_robustness(model, _dataset(x, y), "fgsm", eps, loss=t, verbose=0)
        assert per_task["accuracy"][t] == alone["accuracy"][t]
    summed = evaluate_robustness(model, _dataset(x, y), "fgsm", eps, loss="sum", verbose=0)
    assert per_task["accuracy"] != {t: summed["accuracy"][t] for t in SPEC.task_names}
    table = markdown_table([per_task])
    assert "| a |" in table and "joint" not in table


# --------------------------------------------------------------------------
# python -m tf_mtvib.reproduce saturation, end to end on a smoke run
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_reproduce_saturation_measures_a_cell_retrains_a_lost_run_and_reports(data_dir, tmp_path, capsys):
    import json
    import shutil

    from tf_mtvib.reproduce import saturation as R
    from tf_mtvib.train import main as train_main

    root, results = tmp_path / "runs", tmp_path / "results"
    run = root / "smoke" / "multimnist" / "mtvib-s0"
    assert train_main(["--dataset", "multimnist", "--model", "mtvib", "--preset", "smoke", "--epochs", "1",
                       "--num-train", "64", "--num-test", "40", "--output-dir", str(run), "--verbose", "0",
                       "--data-dir", str(data_dir)]) == 0
    cell = results / "smoke" / "multimnist" / "mtvib-s0"
    cell.mkdir(parents=True)
    for name in ("config.json", "metrics.json"):
        shutil.copyfile(run / name, cell / name)
    # the pages it fills: copies, never the checkout's docs
    pages = {name: tmp_path / f"{name}.md" for name in ("RESULTS", "robustness")}
    for name, page in pages.items():
        shutil.copyfile(pathlib.Path(__file__).resolve().parents[1] / "docs" / f"{name}.md", page)
    argv = ["--preset", "smoke", "--cells", "multimnist/mtvib-s0", "--results-dir", str(results), "--root", str(root),
            "--sweeps", "logits-sum,clipped-per_task,clipped-per_task-sampled", "--data-dir", str(data_dir),
            "--report", str(pages["RESULTS"]), "--robustness-doc", str(pages["robustness"])]
    assert R.main(argv) == 0
    doc = json.loads((cell / "saturation.json").read_text())
    assert doc["saturation"]["n"] == 40 and set(doc["saturation"]["S"]) == {"top_left", "bottom_right"}
    assert set(doc["sweeps"]) == {"logits-sum", "clipped-per_task", "clipped-per_task-sampled"}
    assert doc["agreement"]["ok"] and all(r["diff"] == 0 for r in doc["agreement"]["tasks"].values())
    assert set(doc["mechanism"]["tasks"]) == {"top_left", "bottom_right"}
    assert not doc["run"]["retrained_here"] and doc["run"]["machine"]["cores"] >= 1
    assert doc["run"]["same_model_as_cell"]     # the cell's own run: the same test accuracies
    masked = doc["sweeps"]["clipped-per_task"]["masking"]
    assert masked["task_loss"] == "clipped_prob_ce:TASK" and "joint" not in doc["sweeps"]["clipped-per_task"]["accuracy"]
    report = (results / "smoke" / "saturation.md").read_text()
    assert "## multimnist" in report and "| mtvib-s0 | 40 |" in report and "Mechanism check" in report

    # the checkpoint is gone: reported, then retrained from the committed config with --retrain
    shutil.rmtree(run)
    assert R.main(argv) == 0
    assert "--retrain retrains it" in capsys.readouterr().out
    assert R.main(argv + ["--retrain", "--measure-at", "1"]) == 0
    again = json.loads((cell / "saturation.json").read_text())
    assert again["run"]["retrained_here"]
    along = json.loads((cell / "along.json").read_text())   # S_k along the retraining, copied into the cell
    assert list(along["epochs"]) == ["1"] and along["epochs"]["1"]["saturation"]["n"] == 40
    assert set(again["sweeps"]) == set(doc["sweeps"])


@pytest.mark.slow
def test_measure_at_writes_S_and_the_sweeps_at_the_chosen_epochs_and_keeps_them_out_of_epoch_times(data_dir, tmp_path):
    import json

    from tf_mtvib.train import main as train_main

    run = tmp_path / "run"
    assert train_main(["--dataset", "multimnist", "--model", "gs", "--preset", "smoke", "--epochs", "2",
                       "--num-train", "64", "--num-test", "30", "--output-dir", str(run), "--verbose", "0",
                       "--measure-at", "2,1", "--data-dir", str(data_dir)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["training"]["measure_at"] == [1, 2]
    along = json.loads((run / "along.json").read_text())
    assert sorted(along["epochs"]) == ["1", "2"]
    for record in along["epochs"].values():
        assert record["saturation"]["n"] == 30
        assert set(record["sweeps"]) == {"logits-sum", "clipped-per_task", "clipped-sum"}
        assert record["sweeps"]["clipped-per_task"]["masking"]["S"] == record["saturation"]["S"]
    metrics = json.loads((run / "metrics.json").read_text())
    # the last epoch's clean accuracy under the sweeps is the run's test accuracy
    assert along["epochs"]["2"]["sweeps"]["logits-sum"]["clean"] == metrics["test"]["mean"]
    assert metrics["measure_seconds_this_process"] > 0
    assert metrics["train_seconds_this_process"] > metrics["measure_seconds_this_process"]


def test_time_rows_count_only_the_models_retrained_here_and_prefer_the_whole_retrain():
    from tf_mtvib.reproduce.saturation import time_rows

    machine = {"cpu": "Some CPU", "isa": ["avx512_bf16"]}
    data = {"mtfl": {
        "gs-s0": {"run": {"retrained_here": False, "trained": 3600.0, "machine": machine}},        # not this study's
        "stl-s0": {"run": {"retrained_here": True, "trained": 3600.0, "retrain": {"seconds": 5400.0},
                           "machine": machine}},
        "uwl-s0": {"run": {"retrained_here": True, "trained": 1800.0, "retrain": None, "machine": machine}}}}
    rows = time_rows(data)
    # records without the every-process count fall back to the last process's wall time, starred
    assert "| mtfl/stl-s0 | 1.50* |" in "\n".join(rows) and "| mtfl/uwl-s0 | 0.50* |" in "\n".join(rows)
    assert not any("gs-s0" in r for r in rows)
    assert "| total (2 models) | 2.00 | |" in rows
    assert any("A starred row" in r for r in rows)
    assert time_rows({"mtfl": {"gs-s0": data["mtfl"]["gs-s0"]}}) == []


def test_time_rows_sum_every_process_of_a_resumed_retrain(tmp_path):
    """A retrain resumed in a second process: its last process's wall time (retrain.seconds) undercounts; the
    row sums the epochs of every process (history.json) and the measurements along training (along.json)."""
    from tf_mtvib import runs
    from tf_mtvib.reproduce.saturation import _training_seconds, time_rows
    from tf_mtvib.saturation import ALONG_JSON

    runs.write_json(tmp_path / runs.HISTORY, [{"epoch": e, "seconds": 1000.0} for e in range(1, 4)])
    runs.write_json(tmp_path / ALONG_JSON, {"epochs": {"1": {"seconds": 100.0}, "3": {"seconds": 200.0}}})
    counted = _training_seconds(tmp_path)
    assert counted == {"epoch_seconds": 3000.0, "measure_seconds": 300.0}
    run = {"retrained_here": True, "trained": 1100.0, "retrain": {"seconds": 1200.0}, "machine": {}, **counted}
    rows = time_rows({"mtfl": {"gs-s0": {"run": run}}})
    assert "| mtfl/gs-s0 | 0.92 |" in "\n".join(rows)          # 3,300 s, not the last process's 1,200 s
    assert not any("starred" in r for r in rows)


def test_mechanism_check_passes_within_two_se_and_names_excess_and_deficit():
    """The mechanism check on constructed sweeps: a masked accuracy at S_k passes; one above it by more than
    2 SE misses as an excess (images moved and left correct); one below it is called out as impossible."""
    from tf_mtvib.reproduce.saturation import excess, mechanism_check, mechanism_summary, two_se

    n, S = 10_000, 0.36
    tol = two_se(S, n)                                          # 2 * sqrt(0.36 * 0.64 / 10,000) = 0.0096
    assert abs(tol - 0.0096) < 1e-12
    eps = [0.0, 0.05, 0.1, 0.2, 0.3]
    flat = {"eps": eps, "accuracy": {"a": [0.85, 0.37, S + 0.005, S, S + 0.009]}}     # eta 0.05 is not judged
    creep = {"eps": eps, "accuracy": {"a": [0.85, 0.37, S, S + 0.005, S + 0.014]}}
    below = {"eps": eps, "accuracy": {"a": [0.85, 0.37, S, S - 0.02, S]}}
    ok, miss, low = (mechanism_check(sw, {"a": S}, n) for sw in (flat, creep, below))
    assert ok["pass"] and ok["tasks"]["a"]["accuracy"] == [S + 0.005, S, S + 0.009]
    assert not miss["pass"] and abs(miss["tasks"]["a"]["max_gap"] - 0.014) < 1e-12
    assert [round(x, 3) for x in miss["tasks"]["a"]["excess"]] == [0.0, 0.005, 0.014]
    stored_only = {k: v for k, v in miss["tasks"]["a"].items() if k != "excess"}
    assert excess(stored_only) == miss["tasks"]["a"]["excess"]   # the report derives it from accuracy and S
    assert not low["pass"]
    assert mechanism_summary([("gs-s0", ok)]) == "1 of 1 tasks pass."
    text = mechanism_summary([("gs-s0", ok), ("uwl-s0", miss)])
    assert text.startswith("1 of 2 tasks pass.") and "Every miss is an excess" in text and "1.4 points, uwl-s0 a" in text
    text = mechanism_summary([("uwl-s0", miss), ("stl-s0", low)])
    assert "Below S_k by more than 2 SE" in text and "stl-s0 a" in text and "Every miss" not in text


def test_a_paper_budget_run_is_set_beside_its_row_of_the_paper_table():
    """The paper-budget run's last epoch beside Table V's GS row: a sweep equal to the paper's curves is at
    distance 0, one 10 points below everywhere at 10 (shape 0: the same curve, shifted)."""
    from tf_mtvib.reproduce.protocols import paper_curves
    from tf_mtvib.reproduce.saturation import DEFAULT_EPS, against_paper_row

    paper = paper_curves("mtfl")["gs"]
    same = {t: [a / 100 for a in c] for t, c in paper.items()}
    lower = {t: [(a - 10) / 100 for a in c] for t, c in paper.items()}
    doc = {"epochs": {"10": {"saturation": {"n": 1000}, "sweeps": {}},
                      "200": {"saturation": {"n": 1000, "S": {t: 0.0 for t in paper}},
                              "sweeps": {"logits-sum": {"eps": list(DEFAULT_EPS), "accuracy": same},
                                         "clipped-sum": {"eps": list(DEFAULT_EPS), "accuracy": lower}}}}}
    text = "\n".join(against_paper_row("paper/mtfl/gs-s0", doc))
    assert text.startswith("At epoch 200 beside Table V's GS row")
    assert "| epoch | logits-sum | clipped-sum |" in text and "| 200 | 0.0 (0.0) | 10.0 (0.0) |" in text
    assert "| 10 | - | - |" in text and "28 cells" in text
    assert f"| gender | paper | {paper['gender'][0]:.1f} |" in text
    assert against_paper_row("paper/mtfl/gs-s0", {"epochs": {"5": {"saturation": {"n": 1}, "sweeps": {}}}}) == []


def test_tally_explains_a_task_only_when_both_curves_are_flat_and_s_k_reaches_the_papers_level():
    """MTFL's paper rows are flat (plateaus); a masked curve flat at the paper's level is explained, one flat
    far below it is not, and one that declines is not. MultiMNIST's paper rows decline: a flat masked curve
    there does not have the paper's shape."""
    from tf_mtvib.reproduce.saturation import DEFAULT_EPS, MASKED, paper_plateaus
    from tf_mtvib.reproduce.saturation import tally as tally_of

    paper = {d: paper_plateaus(d) for d in ("mtfl", "multimnist")}
    tally = lambda cells: tally_of(cells, paper)
    gs = paper["mtfl"]["gs"]
    tasks = list(gs)

    def record(levels, slope=0.0, n=1000):                  # levels: the masked plateau per task (fractions)
        acc = {t: [0.8] + [v + slope * e for e in DEFAULT_EPS[1:]] for t, v in zip(tasks, levels)}
        return {"saturation": {"S": dict(zip(tasks, levels)), "n": n},
                "sweeps": {MASKED: {"eps": list(DEFAULT_EPS), "accuracy": acc}}}

    at_level = [gs[t]["level"] / 100 for t in tasks]
    text = "\n".join(tally([("mtfl", "gs-s0", record(at_level))]))
    assert "shapes agree on 4 of 4" in text and "S_k reaches its level on 4 of 4" in text and "Explained: 4 of 4" in text
    text = "\n".join(tally([("mtfl", "gs-s0", record([v - 0.1 for v in at_level]))]))
    assert "reaches its level on 0 of 4 (below it on 4, by 10.0-10.0 points)" in text and "explains the paper's curve on 0 of 4" in text
    text = "\n".join(tally([("mtfl", "gs-s0", record(at_level, slope=-0.5))]))   # falls 10 points over 0.1-0.3
    assert "flat on 0 of 4" in text and "Explained: 0 of 4" in text
    mm = tally([("multimnist", "gs-s0", {
        "saturation": {"S": {"top_left": 0.5, "bottom_right": 0.5}, "n": 10000},
        "sweeps": {MASKED: {"eps": list(DEFAULT_EPS), "accuracy": {t: [0.9] + [0.5] * 6 for t in ("top_left", "bottom_right")}}}})])
    assert "the paper's on 0 of 2" in "\n".join(mm) and "shapes agree on 0 of 2" in "\n".join(mm)
    assert tally([("mtfl", "gs-s1", record(at_level))]) == []          # seed 0 only
