"""The attack-protocol study (python -m tf_mtvib.reproduce protocols)."""
import json

import pytest

from tf_mtvib.datasets import get_spec
from tf_mtvib.reproduce import protocols as P
from tf_mtvib.reproduce.__main__ import COMMANDS


def test_grid_names_round_trip_and_cover_every_option():
    grid = P.protocol_grid()
    names = [P.protocol_name(p) for p in grid]
    assert names[0] == "today" and len(set(names)) == len(names) == 15
    assert all(P.parse_protocol(n) == p for n, p in zip(names, grid))
    for key, levels in P.LEVELS.items():
        assert {p[key] for p in grid} == set(levels)
    assert len(P.protocol_grid("full")) == 108 and len(P.protocol_grid("one-factor")) == 9
    assert P.effective({**P.TODAY, "mode": "eot"}, stochastic=False) == P.TODAY
    with pytest.raises(ValueError):
        P.parse_protocol("loss=hinge")


def test_paper_curves_read_the_paper_tables():
    curves = P.paper_curves("multimnist")
    assert curves["stl"]["top_left"] == [94.8, 86.1, 85.4, 84.0, 82.5, 80.2, 77.1]     # Table III, task 1
    assert P.paper_curves("multifashion")["stl"]["top_left"][-1] == 44.9             # the typo, read as 44.9
    mtfl = P.paper_curves("mtfl")
    assert set(mtfl) == set(P.mtl.MODELS) and set(mtfl["mtvib"]) == {"gender", "smile", "glasses", "pose"}
    assert all(len(c) == len(P.DEFAULT_EPS) and None not in c for by_task in mtfl.values() for c in by_task.values())


def test_shape_and_distance():
    curve = [94.8, 86.1, 85.4, 84.0, 82.5, 80.2, 77.1]                  # MultiMNIST task 1, STL
    shape = P.curve_shape(curve)
    assert shape["drop"] == pytest.approx(8.7) and shape["slope"] == pytest.approx((77.1 - 86.1) / 2.5)
    paper = P.paper_curves("multimnist")
    assert P.distances(paper, paper)["mad"] == 0.0
    shifted = {m: {t: [a - 10 for a in c] for t, c in by_task.items()} for m, by_task in paper.items()}
    d = P.distances(shifted, paper)
    assert d["mad"] == pytest.approx(10.0) and d["shape"] == pytest.approx(0.0) and d["cells"] == 5 * 2 * 7


def _result(curve, n=400):
    return {"eps": list(P.DEFAULT_EPS), "num_examples": n, "tasks": ["a"], "accuracy": {"a": curve}}


def test_masking_verdict_rule():
    f = [0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    falling_pgd = [0.9, 0.3, 0.2, 0.1, 0.05, 0.0, 0.0]
    noise = [0.9, 0.88, 0.86, 0.84, 0.82, 0.8, 0.78]
    assert P.masking_verdict(_result(f), _result(falling_pgd), _result(noise))["verdict"] == "none"
    # random sign beats the gradient
    v = P.masking_verdict(_result(f), _result(falling_pgd), _result([0.9, 0.2] + noise[2:]))
    assert v["verdict"] == "masking" and v["random_below_fgsm"] == [0.05]
    # PGD does worse than one FGSM step
    assert P.masking_verdict(_result(f), _result([0.9, 0.7] + f[2:]), _result(noise))["verdict"] == "masking"
    # FGSM rises with eps while PGD keeps falling: the single step overshoots
    rising = [0.9, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    v = P.masking_verdict(_result(rising), _result(falling_pgd), _result(noise))
    assert v["verdict"] == "overshoot" and v["fgsm_rises"] == [0.1, 0.15, 0.2, 0.25, 0.3]


def test_masking_rule_without_the_random_sign_control_checks_the_other_two_rules():
    """A sweep with no random-sign control (VMTL's robustness stage) is judged by rules (b) and (c) alone, and
    says rule (a) was not checked rather than passed."""
    f = [0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    v = P.masking_verdict(_result(f), _result([0.9, 0.3, 0.2, 0.1, 0.05, 0.0, 0.0]))
    assert v["verdict"] == "none" and v["random_below_fgsm"] is None and v["random_sign"] is None
    v = P.masking_rule(P.DEFAULT_EPS, 400, f, [0.9, 0.7] + f[2:])
    assert v["verdict"] == "masking" and v["pgd_above_fgsm"] == [0.05] and v["random_below_fgsm"] is None
    # the same curves judge the same with the control present and harmless
    assert P.masking_rule(P.DEFAULT_EPS, 400, f, [0.9, 0.7] + f[2:], [0.9] * 7)["pgd_above_fgsm"] == [0.05]


def test_each_preset_has_its_own_block_and_a_study_grows_one_data_set_at_a_time():
    assert P.markers("cpu") == (P.BEGIN, P.END)
    begin, end = P.markers("full")
    assert begin != P.BEGIN and "--preset full" in begin and "--preset full" in end
    settings = {"preset": "full", "seed": 0, "subset_seed": 0, "examples": 2000, "eps": [0.0, 0.05],
                "masking": {"examples": 200}, "grid": ["today"]}
    mtfl = {"dataset": "mtfl", "num_examples": 1000}
    mnist = {"dataset": "multimnist", "num_examples": 2000}
    previous = {**settings, "datasets": {"mtfl": mtfl}, "examples_text": "1000"}
    both = P.merged(previous, {**settings, "datasets": {"multimnist": mnist}})
    assert list(both["datasets"]) == ["multimnist", "mtfl"] and both["examples_text"] == "2000/1000"
    redone = P.merged(previous, {**settings, "datasets": {"mtfl": {**mtfl, "num_examples": 999}}})
    assert redone["datasets"]["mtfl"]["num_examples"] == 999            # this run's result wins
    other = P.merged(previous, {**settings, "examples": 500, "datasets": {"multimnist": mnist}})
    assert list(other["datasets"]) == ["multimnist"]                     # other settings: not merged
    assert P.same_settings(previous, settings) and not P.same_settings(None, settings)
    assert P.merged(None, {**settings, "datasets": {"mtfl": mtfl}})["examples_text"] == "1000"


def _record(base, grid, tasks, n=2000, verdict="none", test_set="5e7"):
    """A model's part of a study, as model_record returns it, with made-up curves."""
    curves = {P.protocol_name(p): {t: [base - 6.0 * i - k - j for i in range(len(P.DEFAULT_EPS))]
                                   for k, t in enumerate(tasks)} for j, p in enumerate(grid)}
    return {"curves": curves, "zero_by_protocol": {n_: 0.0 for n_ in curves},
            "zero_gradient": {loss: 0.01 * j for j, loss in enumerate(P.LOSS_LEVELS)},
            "masking": {"num_examples": 200, "verdict": verdict,
                        **{a: [0.5] * len(P.DEFAULT_EPS) for a in ("fgsm", "pgd", "random_sign")}},
            "num_examples": n, "test_set": test_set}


def test_a_study_grows_one_model_at_a_time_carrying_the_parts_whose_runs_are_gone():
    grid = [dict(P.TODAY), P.parse_protocol("loss=clipped_prob_ce")]
    tasks = list(get_spec("multimnist").task_names)
    paper = {m: {t: [90.0 - 2.0 * i for i in range(len(P.DEFAULT_EPS))] for t in tasks} for m in ("gs", "uwl")}
    gs, uwl = _record(95.0, grid, tasks), _record(93.0, grid, tasks, verdict="masking")
    both = P.study_dataset("multimnist", {"uwl": uwl, "gs": gs}, grid, paper)
    assert both["models"] == ["gs", "uwl"] and both["carried"] == []          # the paper's model order
    assert both["masking"]["uwl"]["verdict"] == "masking"
    # GS's run is gone: its part read back from the committed entry gives the same study, marked carried
    kept = P.carried_record(both, "gs")
    assert kept == gs
    grown = P.study_dataset("multimnist", {"gs": kept, "uwl": uwl}, grid, paper, carried=["gs"])
    assert grown == {**both, "carried": ["gs"]}
    # the aggregates are over both models, not over the one measured now
    alone = P.study_dataset("multimnist", {"uwl": uwl}, grid, {"uwl": paper["uwl"]})
    assert alone["protocols"]["today"]["distance"] != grown["protocols"]["today"]["distance"]
    assert both["test_set"] == "5e7"
    with pytest.raises(ValueError, match="different images"):
        P.study_dataset("multimnist", {"gs": kept, "uwl": _record(93.0, grid, tasks, test_set="0ff")}, grid, paper)
    # a part committed before fingerprints were kept has none: the other models' fingerprint stands
    legacy = {**kept, "test_set": None}
    assert P.study_dataset("multimnist", {"gs": legacy, "uwl": uwl}, grid, paper, carried=["gs"])["test_set"] == "5e7"
    with pytest.raises(ValueError, match="different numbers of images"):
        P.study_dataset("multimnist", {"gs": kept, "uwl": _record(93.0, grid, tasks, n=1000)}, grid, paper)
    doc = {"preset": "full", "seed": 0, "subset_seed": 0, "examples_text": "2000", "examples": 2000,
           "eps": list(P.DEFAULT_EPS), "masking": {"examples": 200, "steps": 20, "restarts": 2, "draws": 2},
           "json": "x.json", "datasets": {"multimnist": {**grown, "plot": "p.png"}}}
    assert "GS: measured by an earlier run of this study" in P.render_markdown(doc)
    assert "earlier run" not in P.render_markdown({**doc, "datasets": {"multimnist": {**both, "plot": "p.png"}}})


@pytest.mark.slow
def test_study_runs_end_to_end_at_the_smoke_preset_and_reruns_from_its_caches(tmp_path, data_dir, capsys,
                                                                               monkeypatch):
    assert COMMANDS["protocols"] == "tf_mtvib.reproduce.protocols"
    monkeypatch.chdir(tmp_path)          # nothing may land in a default (repository) path
    doc = tmp_path / "robustness.md"
    begin, end = P.markers("smoke")
    doc.write_text(f"# Robustness\n\nintro\n\n{P.BEGIN}\ncpu's\n{P.END}\n\n{begin}\nold\n{end}\n\nkept\n")
    argv = ["--preset", "smoke", "--datasets", "multimnist", "--models", "gs,mtvib", "--root", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results"), "--doc", str(doc), "--examples", "48",
            "--masking-examples", "24", "--restarts", "2", "--draws", "2", "--pgd-steps", "2",
            "--protocols", "loss=clipped_prob_ce,mode=sampled,clip=off", "--data-dir", str(data_dir)]
    assert P.main(argv) == 2                                           # the runs are not trained yet
    assert "not trained" in capsys.readouterr().err
    assert P.main(argv + ["--train"]) == 0
    out = tmp_path / "results" / "smoke" / "protocols"
    study = json.loads((out / "protocols.json").read_text())
    d = study["datasets"]["multimnist"]
    assert set(d["protocols"]) == {"today", "loss=clipped_prob_ce", "mode=sampled", "clip=off"}
    assert d["num_examples"] == 48 and d["models"] == ["gs", "mtvib"]
    assert d["closest"]["protocol"] == d["ranking"][0]
    assert d["closest"]["mad"] == min(p["distance"]["mad"] for p in d["protocols"].values())
    assert set(d["zero_gradient"]["gs"]) == set(P.LOSS_LEVELS)
    assert all(0.0 <= v <= 1.0 for by_loss in d["zero_gradient"].values() for v in by_loss.values())
    for check in d["masking"].values():
        assert check["verdict"] in ("masking", "overshoot", "none") and check["num_examples"] == 24
    # deterministic GS: the sampled mode is the mean mode, computed once
    assert d["protocols"]["mode=sampled"]["curves"]["gs"] == d["protocols"]["today"]["curves"]["gs"]
    text = doc.read_text()
    assert "old" not in text and "intro" in text and "kept" in text and "cpu's" in text   # its own block only
    assert P.render_markdown(study) in text and (out / "protocols.md").read_text() == P.render_markdown(study)
    assert f"{d['closest']['mad']:.1f} points from" in text
    assert (out / "multimnist.png").stat().st_size > 10_000
    capsys.readouterr()
    assert P.main(argv) == 0                                           # everything from the caches
    assert "0 evaluation(s) computed" in capsys.readouterr().out
    assert json.loads((out / "protocols.json").read_text()) == study
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "robustness.md", "runs"]
    assert (tmp_path / "results" / "smoke" / "multimnist" / "gs-s0" / "metrics.json").exists()   # mtl's cell
    # GS's run is lost: the study keeps GS's committed part and measures the rest again (from the caches)
    (P.mtl.run_dir(tmp_path / "runs", "smoke", "multimnist", "gs", 0) / "model.keras").unlink()
    assert P.main(argv) == 0
    assert "multimnist/gs: its run is gone" in capsys.readouterr().out
    again = json.loads((out / "protocols.json").read_text())
    assert again["datasets"]["multimnist"] == {**d, "carried": ["gs"]}
    assert "GS: measured by an earlier run of this study" in doc.read_text()
    # a model neither trained nor in the committed study is an error, as before
    assert P.main([*argv[:5], "gs,mtvib,uwl", *argv[6:]]) == 2
    assert "not trained" in capsys.readouterr().err
