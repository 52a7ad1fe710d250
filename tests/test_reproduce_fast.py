"""``python -m tf_mtvib.reproduce fast``: the fast preset's search (issue "Speed"): its plan, its choice rule
on constructed cells, its report, and one candidate trained at a smoke budget."""
import json

import pytest

from tf_mtvib.reproduce import fast


def test_the_search_holds_at_most_eight_candidates_on_a_validation_carve():
    assert 1 <= len(fast.CANDIDATES) <= fast.MAX_TRIALS == 8
    for name in fast.CANDIDATES:
        argv = fast.train_argv(name)
        assert argv[argv.index("--val-fraction") + 1] == "0.1" and argv[argv.index("--preset") + 1] == "full"
        assert argv[argv.index("--seed") + 1] == "0"
    # the targets: Table III's MTVIB clean row less one point
    assert fast.targets() == pytest.approx({"top_left": 0.939, "bottom_right": 0.927})


def _cell(val, seconds, cpu=None):
    cell = {"val_accuracy": {t: list(v) for t, v in zip(fast.TASKS, val)}, "epoch_seconds": list(seconds),
            "epoch_load": [0.2] * len(seconds),
            "num_train": 108_000, "machine": {"cpu": "Test CPU", "isa": ["avx512_bf16"], "load_1min": 0.2}}
    if cpu is not None:
        cell["epoch_cpu_seconds"] = list(cpu)
    return cell


def test_a_candidate_reaches_the_targets_when_every_task_does_and_the_cheapest_is_chosen():
    goal = {"top_left": 0.939, "bottom_right": 0.927}
    slow = _cell([(0.93, 0.94, 0.95), (0.92, 0.926, 0.93)], (100, 100, 100))     # both tasks at epoch 3: 300 s
    quick = _cell([(0.939, 0.95), (0.90, 0.927)], (120, 120))                   # epoch 2 (exactly on target): 240 s
    never = _cell([(0.99, 0.99), (0.90, 0.91)], (10, 10))
    assert fast.reached(slow, goal) == {"epoch": 3, "seconds": 300.0, "cpu_seconds": None, "max_load": 0.2}
    assert fast.reached(quick, goal) == {"epoch": 2, "seconds": 240.0, "cpu_seconds": None, "max_load": 0.2}
    assert fast.reached(never, goal) is None
    assert fast.choose({n: fast.reached(c, goal) for n, c in {"a": slow, "b": quick, "c": never}.items()}) == "b"
    assert fast.choose({"c": fast.reached(never, goal)}) is None


def test_cpu_time_decides_when_every_candidate_that_reached_the_targets_has_it():
    """Wall seconds grow with what else shares the cores; the choice compares CPU time when it can."""
    goal = {"top_left": 0.939, "bottom_right": 0.927}
    loaded = _cell([(0.95,), (0.95,)], (400,), cpu=(250,))     # trained beside another process: slow wall
    quiet = _cell([(0.95,), (0.95,)], (300,), cpu=(290,))
    hits = {"a": fast.reached(loaded, goal), "b": fast.reached(quiet, goal)}
    assert hits["a"]["cpu_seconds"] == 250.0 and fast.cost_key(hits) == "cpu_seconds"
    assert fast.choose(hits) == "a"
    hits["b"] = fast.reached(_cell([(0.95,), (0.95,)], (300,)), goal)   # no CPU time: back to wall seconds
    assert fast.cost_key(hits) == "seconds" and fast.choose(hits) == "b"


def test_report_names_the_choice_or_the_shortfall(tmp_path):
    folder = tmp_path / fast.SEARCH_FOLDER
    folder.mkdir()
    (folder / "c1.json").write_text(json.dumps({"argv": [], **_cell([(0.95, 0.96), (0.93, 0.94)], (50, 60))}))
    (folder / "c2.json").write_text(json.dumps({"argv": [], **_cell([(0.96,), (0.95,)], (70,))}))
    assert fast.main(["--report-only", "--results-dir", str(tmp_path), "--report", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "| c1 |" in text and "| epoch 1 | 50 | - | Test CPU (avx512_bf16) | 0.2 |" in text
    assert "Chosen: c1" in text and "fewest wall seconds" in text and "| c3 |" in text and "not run" in text
    (folder / "c1.json").write_text(json.dumps({"argv": [], **_cell([(0.93,), (0.93,)], (50,))}))
    (folder / "c2.json").unlink()
    fast.main(["--report-only", "--results-dir", str(tmp_path), "--report", str(tmp_path / "r.md")])
    assert "the closest fell 0.9 points short on its worst task" in (tmp_path / "r.md").read_text()


def test_report_with_one_candidate_says_it_is_the_only_one_run(tmp_path):
    folder = tmp_path / fast.SEARCH_FOLDER
    folder.mkdir()
    (folder / "c1.json").write_text(json.dumps({"argv": [], **_cell([(0.95, 0.96), (0.93, 0.94)], (50, 60))}))
    assert fast.main(["--report-only", "--results-dir", str(tmp_path), "--report", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "Chosen for now: c1" in text and "the only candidate run so far" in text and "1 candidates" not in text


def test_unknown_candidates_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        fast.main(["--candidates", "c9", "--results-dir", str(tmp_path), "--report", str(tmp_path / "r.md")])
    assert e.value.code == 2 and "choose from c1" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_candidate_trains_records_validation_only_and_is_reused(tmp_path, data_dir, tmp_cache):
    args = ["--smoke", "--candidates", "c2", "--root", str(tmp_path / "runs"), "--results-dir",
            str(tmp_path / "results"), "--report", str(tmp_path / "r.md"), "--data-dir", str(data_dir)]
    assert fast.main(args) == 0
    cell = json.loads((tmp_path / "results" / "search" / "c2.json").read_text())
    assert set(cell["val_accuracy"]) == set(fast.TASKS) and len(cell["epoch_seconds"]) == 2
    assert len(cell["epoch_cpu_seconds"]) == 2 and all(c > 0 for c in cell["epoch_cpu_seconds"])
    assert "test" not in json.dumps(cell).replace("--num-test", "")        # no test figure enters the choice
    assert cell["machine"]["cpu"]
    (tmp_path / "runs").rename(tmp_path / "gone")                          # a second call reuses the cell
    assert fast.main(args) == 0
