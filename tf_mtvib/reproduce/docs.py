"""Where the reproductions write, and how they splice generated Markdown.

* The committed results and pages live in the repository checkout the package
  runs from (``docs/results``, ``docs/RESULTS.md``, ...). Nothing is written
  relative to the current directory: :func:`doc_paths` resolves every
  document option a command leaves unset against the checkout, and outside a
  checkout (the package installed from a wheel) the command needs
  ``--results-dir`` and its other document options, or exits with status 2.
* :func:`write_section` replaces the block between two marker comments of a
  page, the one splicing rule of every generated page.

Imports neither TensorFlow nor Keras.
"""
from __future__ import annotations

import argparse
import pathlib
from typing import Mapping, Optional

__all__ = ["checkout_root", "doc_paths", "write_section"]


def checkout_root() -> Optional[pathlib.Path]:
    """The repository checkout holding this package (its ``setup.py`` or ``pyproject.toml``, and ``docs/``), or None."""
    root = pathlib.Path(__file__).resolve().parents[2]
    packaged = (root / "setup.py").is_file() or (root / "pyproject.toml").is_file()
    return root if packaged and (root / "docs").is_dir() else None


def doc_paths(parser: argparse.ArgumentParser, args: argparse.Namespace, defaults: Mapping[str, str]) -> None:
    """Fill each ``args.<name>`` left None with ``<checkout>/<defaults[name]>``.

    Outside a checkout ``parser.error`` (exit status 2) names the options to give.
    """
    unset = [name for name in defaults if getattr(args, name) is None]
    if not unset:
        return
    root = checkout_root()
    if root is None:
        flags = ", ".join("--" + n.replace("_", "-") for n in unset)
        parser.error(f"not running from a repository checkout, so there is no docs/ to write into: give {flags} "
                     "(e.g. --results-dir ./results)")
    for name in unset:
        setattr(args, name, root / defaults[name])


def write_section(report: pathlib.Path, body: str, begin: str, end: str, top: bool = False) -> None:
    """Replace the generated part of ``report`` (between ``begin`` and ``end``), creating it
    if needed: at the end, or (``top``) after the report's title line."""
    text = report.read_text() if report.exists() else "# Results\n\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + block + tail
    elif top:
        title, sep, rest = text.partition("\n")
        text = title + "\n\n" + block + "\n\n" + rest.lstrip("\n")
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
