"""reproduce writes into the checkout's docs/ or where it is told, never relative to the current
directory; outside a checkout it needs --results-dir (#41 item 6)."""
import pathlib

import pytest

from tf_mtvib.reproduce import docs, mtl, protocols, saturation, vib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_checkout_is_found_and_is_the_default_destination():
    assert docs.checkout_root() == ROOT


@pytest.mark.parametrize("module,argv", [(mtl, ["--report-only"]), (saturation, ["--report-only"]),
                                         (protocols, []), (vib, [])])
def test_outside_a_checkout_reproduce_exits_2_without_results_dir(module, argv, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(docs, "checkout_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        module.main(argv)
    assert e.value.code == 2
    assert "--results-dir" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []          # nothing written into the current directory


def test_outside_a_checkout_an_explicit_results_dir_is_used(monkeypatch, tmp_path):
    monkeypatch.setattr(docs, "checkout_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "out" / "RESULTS.md"
    assert mtl.main(["--report-only", "--preset", "cpu", "--results-dir", str(ROOT / "docs" / "results"),
                     "--report", str(report)]) == 0
    assert "MultiMNIST" in report.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_section_replaces_only_its_block(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# T\n\nbefore\n<!-- B -->\nold\n<!-- E -->\nafter\n")
    docs.write_section(page, "new", "<!-- B -->", "<!-- E -->")
    assert page.read_text() == "# T\n\nbefore\n<!-- B -->\nnew\n<!-- E -->\nafter\n"
