"""``python -m tf_mtvib.reproduce vmtl``: its plan, its refusals and its report from committed JSON."""
import json

import pytest

from tf_mtvib.reproduce import vmtl


def test_the_plan_reports_seeds_1_to_3_and_develops_on_seed_0():
    assert vmtl.DEV_SEED not in vmtl.SEEDS
    for stage, (methods, fractions, key, seeds) in vmtl.STAGES.items():
        assert set(seeds) == ({vmtl.DEV_SEED} if stage == "kl" else set(vmtl.SEEDS))
    cells = vmtl.stage_cells("grid")
    assert len(cells) == 3 * 3 * 3                                   # methods x fractions x seeds
    folder, name, argv = cells[0]
    assert folder == "it3000" and name == "bmtl-f5-s1"
    assert argv[argv.index("--data-seed") + 1] == argv[argv.index("--seed") + 1] == "1"
    assert argv[argv.index("--batch-size") + 1] == "40"              # 4 images of each of 10 classes per task
    long_argv = vmtl.stage_cells("long")[0][2]
    assert long_argv[long_argv.index("--epochs") + 1] == "150" and "--lr-decay" in long_argv   # 15,000 iterations
    assert "--lr-decay" not in argv


def test_bad_stage_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        vmtl.main(["--stages", "table9", "--results-dir", str(tmp_path), "--report", str(tmp_path / "r.md")])
    assert e.value.code == 2 and "unknown stage" in capsys.readouterr().err


def _cell(path, avg, ratio, n=950):
    path.parent.mkdir(parents=True, exist_ok=True)
    test = {t: avg for t in vmtl.TASKS}
    test["average"] = avg
    path.write_text(json.dumps({"argv": [], "num_test": {t: n for t in vmtl.TASKS}, "test": test,
                                "entropy_ratio": {"pooled": ratio}}))


def test_report_judges_each_claim_from_the_cells(tmp_path):
    folder = tmp_path / "it3000"
    values = {"bmtl": (0.60, 0.70, 0.80), "vbmtl": (0.62, 0.71, 0.80), "vmtl": (0.66, 0.73, 0.81)}
    for seed, bump in zip((1, 2, 3), (-0.002, 0.0, 0.002)):
        for m, accs in values.items():
            for f, a in zip(vmtl.FRACTIONS, accs):
                _cell(folder / f"{vmtl.cell_name(m, f, seed)}.json", a + bump, 3.0 if m == "vbmtl" else 3.5)
        _cell(folder / f"{vmtl.cell_name('mtvib', 0.05, seed)}.json", 0.655 + bump, 3.0)
        for m, a in (("vmtl-mixture", 0.655), ("vmtl-mean", 0.66), ("vmtl-learnable", 0.665)):
            _cell(folder / f"{vmtl.cell_name(m, 0.05, seed)}.json", a + bump, 3.0)
    for seed, bump in zip((1, 2, 3), (-0.002, 0.0, 0.002)):      # Claim 4: the 5 % cells attacked
        for m, curve in (("bmtl", (0.6, 0.30, 0.10)), ("vmtl", (0.66, 0.40, 0.09))):
            path = folder / f"{vmtl.cell_name(m, 0.05, seed)}.json"
            cell = json.loads(path.read_text())
            accuracy = {t: [a + bump for a in curve] for t in (*vmtl.TASKS, "average")}
            cell["robustness"] = {"eps": [0.0, 0.1, 0.2], "accuracy": accuracy, "zero_gradient": 0.0,
                                  "num_examples": {t: 950 for t in vmtl.TASKS}}
            pgd = (0.6, 0.05, 0.0) if m == "bmtl" else (0.66, 0.04, 0.0)     # PGD: VMTL nowhere above BMTL
            cell["robustness_pgd"] = {"eps": [0.0, 0.1, 0.2], "zero_gradient": 0.01,
                                      "accuracy": {t: [a + bump for a in pgd] for t in (*vmtl.TASKS, "average")},
                                      "num_examples": {t: 950 for t in vmtl.TASKS}}
            path.write_text(json.dumps(cell))
    assert vmtl.main(["--report-only", "--results-dir", str(tmp_path), "--report", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "| vmtl | 66.0 ± 0.2 (n=3) | 40.0 ± 0.2 (n=3) | 9.0 ± 0.2 (n=3) | 0.0 |" in text
    assert "- VMTL above BMTL at 1 of 2 eps > 0" in text and ": mixed; 3 seed(s)." in text
    pgd = text[text.index("under PGD (10 steps"):]                   # the same cells under PGD, judged alike
    assert "| vmtl | 66.0 ± 0.2 (n=3) | 4.0 ± 0.2 (n=3) | 0.0 ± 0.2 (n=3) | 1.0 |" in pgd
    assert "- VMTL above BMTL at 0 of 2 eps > 0" in pgd and ": not reproduced; 3 seed(s)." in pgd
    assert "| vbmtl | - | - | - | - |" in text
    assert "| vmtl | 66.0 ± 0.2 (n=3) | 58.3 |" in text
    assert "- 5 %: VMTL - VBMTL = +4.0 (reproduced), VBMTL - BMTL = +2.0 (reproduced) points" in text
    assert "- 20 %: VMTL - VBMTL = +1.0 (reproduced), VBMTL - BMTL = +0.0 (not reproduced) points" in text
    assert "VMTL's advantage shrinks as data grows" in text
    assert "- 5 %: VMTL - MTVIB = +0.5 points: VMTL above MTVIB" in text and "| uwl | - | - |" in text
    assert "the largest gap between prior variants: 1.0 points" in text and "reproduced" in text
    assert "- 5 %: VMTL 3.50 against VBMTL 3.00: above" in text
    assert "15,000 iterations" in text and "| bmtl | - |" in text    # the long budget: no cell, no number
    assert "- 5 %: VMTL - MTVIB = +0.5 points: VMTL above MTVIB (rule: by more than the larger seed range); " \
           "3 seed(s)." in text
    before = (tmp_path / "r.md").read_text()
    vmtl.main(["--report-only", "--results-dir", str(tmp_path), "--report", str(tmp_path / "r.md")])
    assert (tmp_path / "r.md").read_text() == before
    # with one MTVIB seed the comparison carries the caveat
    for seed in (2, 3):
        (folder / f"{vmtl.cell_name('mtvib', 0.05, seed)}.json").unlink()
    vmtl.main(["--report-only", "--results-dir", str(tmp_path), "--report", str(tmp_path / "r.md")])
    assert "seed range); 1 seed(s): one seed, not a finding." in (tmp_path / "r.md").read_text()


@pytest.mark.slow
def test_smoke_kl_stage_trains_measures_and_reuses(tmp_path, data_dir, tmp_cache):
    args = ["--smoke", "--stages", "kl", "--root", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--report", str(tmp_path / "r.md"), "--data-dir", str(data_dir)]
    assert vmtl.main(args) == 0
    cells = sorted((tmp_path / "results" / "it100").glob("*.json"))
    assert [c.name for c in cells] == sorted(f"{m}-f20-s0.json" for m in vmtl.STAGES["kl"][0])
    cell = json.loads(cells[0].read_text())
    assert set(cell["test"]) == set(vmtl.TASKS) | {"average"} and "joint" not in cell["test"]
    assert cell["entropy_ratio"]["pooled"] > 0 and set(cell["num_test"]) == set(vmtl.TASKS)
    (tmp_path / "runs").rename(tmp_path / "gone")                  # a second call reuses every cell
    assert vmtl.main(args) == 0


@pytest.mark.slow
def test_smoke_robustness_stage_keeps_fgsm_and_pgd_with_the_masking_check(tmp_path, data_dir, tmp_cache,
                                                                          monkeypatch):
    monkeypatch.setitem(vmtl.STAGES, "robustness", (("bmtl", "vmtl"), (0.05,), "short", (1,)))   # 2 cells, not 9
    args = ["--smoke", "--stages", "robustness", "--root", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results"), "--report", str(tmp_path / "r.md"), "--data-dir", str(data_dir)]
    assert vmtl.main(args) == 0
    cells = sorted((tmp_path / "results" / "it100").glob("*.json"))
    assert [c.name for c in cells] == ["bmtl-f20-s1.json", "vmtl-f20-s1.json"]
    cell = json.loads(cells[1].read_text())
    for name, key in vmtl.ROBUSTNESS_KEYS.items():
        r = cell[key]
        assert r["attack"] == name and r["loss"] == "per_task" and set(r["num_examples"]) == set(vmtl.TASKS)
        assert r["accuracy"]["average"][0] == pytest.approx(cell["test"]["average"], abs=1e-6)   # eps 0: clean
        assert 0.0 <= r["zero_gradient"] <= 1.0
    text = (tmp_path / "r.md").read_text()
    assert "under PGD (10 steps" in text and text.count("eps > 0 (rule") == 2


def test_the_families_default_kl_weights_is_the_development_choice():
    """The committed development cells (seed 0) choose the default --kl-weights; the family declares it."""
    import pathlib

    from tf_mtvib.families import get_family

    folder = pathlib.Path(__file__).resolve().parents[1] / "docs" / "results" / "vmtl" / "it3000"
    avg = {kind: json.loads((folder / f"vmtl-{kind}-kl-f5-s0.json").read_text())["test"]["average"]
           for kind in ("elbo", "code")}
    assert get_family("vmtl").hparams["kl_weights"].default == max(avg, key=avg.get)
    assert get_family("vbmtl").hparams["kl_weights"] == get_family("vmtl").hparams["kl_weights"]


@pytest.mark.parametrize("name", ["vmtl", "mtcrl", "fast"])
def test_the_committed_page_is_generated_from_the_committed_cells(name):
    """docs/<name>.md's generated block is exactly what the reproduction builds from docs/results/<name>/."""
    import importlib
    import pathlib

    mod = importlib.import_module(f"tf_mtvib.reproduce.{name}")
    root = pathlib.Path(__file__).resolve().parents[1]
    text = (root / "docs" / f"{name}.md").read_text()
    block = text[text.index(mod.DOC_BEGIN) + len(mod.DOC_BEGIN):text.index(mod.DOC_END)]
    assert block.strip() == mod.build_report(root / "docs" / "results" / name).strip()
