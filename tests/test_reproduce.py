"""The reproduction driver: resumable runs, report regeneration."""
import json

from tf_mtvib.reproduce.mtl import BEGIN, END, aggregate, main, write_section


def test_write_section_replaces_only_the_generated_part(tmp_path):
    report = tmp_path / "RESULTS.md"
    report.write_text("# Results\n\nhand-written intro\n\n## Deep VIB\n\nkept\n")
    write_section(report, "first")
    write_section(report, "second")
    text = report.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "second" in text and "first" not in text
    assert "hand-written intro" in text and "## Deep VIB\n\nkept" in text


def test_aggregate_means_and_spreads_over_seeds():
    r = lambda a: {"eps": [0, 0.1], "accuracy": {"t": a, "joint": a}, "label": "m"}
    agg = aggregate([r([0.8, 0.4]), r([0.6, 0.2])])
    assert agg["accuracy"]["t"] == [0.7, 0.30000000000000004] or agg["accuracy"]["t"] == [0.7, 0.3]
    assert agg["seeds"] == 2 and abs(agg["accuracy_std"]["t"][0] - 0.1414) < 1e-3


def test_reproduce_smoke_trains_evaluates_and_reuses(tmp_path, data_dir, capsys):
    argv = ["--preset", "smoke", "--datasets", "multimnist", "--models", "gs", "--root", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results"), "--report", str(tmp_path / "RESULTS.md"),
            "--settings", "fgsm", "--data-dir", str(data_dir)]
    assert main(argv) == 0
    run = tmp_path / "runs" / "smoke" / "multimnist" / "gs-s0"
    cached = json.loads((run / "robustness-fgsm.json").read_text())["result"]
    table = (tmp_path / "RESULTS.md").read_text()
    joint_row = next(line for line in table.splitlines() if line.startswith("| joint |"))
    assert joint_row.rstrip(" |").endswith(f"{100 * cached['accuracy']['joint'][-1]:.2f}")
    assert (tmp_path / "results" / "smoke" / "multimnist" / "fgsm" / "robustness.png").exists()
    capsys.readouterr()
    assert main(argv) == 0  # the second call reuses the finished run
    assert "finished, reused" in capsys.readouterr().out
