"""The documentation cannot rot: the site builds with `--strict` (a broken reference
fails), every public name has a docstring and a place in the API reference, and every
fenced Python block of the README and the docs runs as pasted."""

import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import default_optimisation_env

import jaxode
import jaxode.bptt
import jaxode.cli
import jaxode.data
import jaxode.nn
import jaxode.plot

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", re.M | re.S)
SKIP = "# not run:"  # first line of a block that cannot run on one machine


def python_blocks(path: Path) -> list[str]:
    """The fenced Python blocks of a Markdown file, dedented, in order."""
    return [textwrap.dedent(m.group(2)) for m in FENCE.finditer(path.read_text())]


def public_names() -> list[tuple[str, object]]:
    modules = [jaxode, jaxode.nn, jaxode.data, jaxode.plot, jaxode.bptt]
    return [(f"{m.__name__}.{n}", getattr(m, n)) for m in modules for n in m.__all__]


def test_docs_build_strict(tmp_path):
    site = tmp_path / "site"
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for page in ["index.html", "tour/index.html", "benchmarks/index.html",
                 "demos/lotka-volterra/index.html", "api/core/index.html"]:
        assert (site / page).exists(), page
    core = (site / "api/core/index.html").read_text()
    assert 'id="jaxode.solve"' in core and 'id="jaxode.fit"' in core


@pytest.mark.parametrize("name", [name for name, _ in public_names()])
def test_public_name_has_docstring(name):
    obj = dict(public_names())[name]
    if not (callable(obj) or inspect.ismodule(obj)):
        return  # constants are described in their module's docstring
    doc = inspect.getdoc(obj) or ""
    short = name.rsplit(".", 1)[-1]
    # a dataclass (equinox module) without a docstring gets its signature as __doc__
    assert doc and not doc.startswith(f"{short}("), f"{name} has no docstring"
    assert len(doc.split()) >= 5, f"{name}: docstring too short: {doc!r}"


def test_public_names_are_in_the_api_reference():
    api = "\n".join(p.read_text() for p in (ROOT / "docs/api").glob("*.md"))
    whole = set(re.findall(r"^::: (jaxode\.\w+)$", api, re.M))  # whole-module pages
    for name, obj in public_names():
        if inspect.ismodule(obj):  # a submodule has a page of its own
            assert (ROOT / "docs/api" / f"{name.rsplit('.', 1)[-1]}.md").exists(), name
            continue
        module = name.rsplit(".", 1)[0]
        assert f"::: {name}\n" in api or module in whole, f"{name} is not in docs/api"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run_as_pasted(page, tmp_path):
    blocks = python_blocks(page)
    runnable = [b for b in blocks if not b.startswith(SKIP)]
    assert len(blocks) - len(runnable) <= 2, f"{page.name}: too many blocks skipped"
    if not runnable:
        return
    # one process per page, the blocks in order in one namespace, as a reader pastes
    # them; each block is announced so a failure names it
    program = "\n".join(
        f"print('--- block {i}', flush=True)\nexec(compile({b!r}, 'block {i}', 'exec'))"
        for i, b in enumerate(runnable))
    # the README trains for real (1 000 LSTM steps): XLA's lowest optimisation level,
    # which the rest of the suite compiles with, makes that three times slower
    run = subprocess.run([sys.executable, "-c", program], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900,
                         env={**default_optimisation_env(), "MPLBACKEND": "Agg"})
    failed = run.stdout.rsplit("--- block ", 1)[-1].split("\n", 1)[0]
    assert run.returncode == 0, (
        f"{page.name}: block {failed} failed:\n{runnable[int(failed)][:400]}\n"
        f"{run.stderr[-3000:]}")
    assert run.stdout.count("--- block ") == len(runnable)


def test_readme_demo_blocks_are_the_recorded_outputs(tmp_path, monkeypatch):
    # the README's demo outputs are written by docs/record_demos.py from the records
    # the demo pages show; rewriting them from those records changes nothing
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import record_demos
    finally:
        sys.path.pop(0)
    copy = tmp_path / "README.md"
    copy.write_text((ROOT / "README.md").read_text())
    monkeypatch.setattr(record_demos, "README", copy)
    rewritten = 0
    for name in jaxode.cli.DEMOS:
        record = ROOT / "docs" / "demos" / name / "output.txt"
        assert record.exists(), f"no record of `jaxode demo {name}` for its page"
        rewritten += record_demos.update_readme(name, record.read_text())
    assert rewritten >= 4
    assert copy.read_text() == (ROOT / "README.md").read_text(), (
        "README demo blocks differ from docs/demos/*/output.txt; run "
        "`python docs/record_demos.py --readme`")
