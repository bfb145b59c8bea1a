"""The `jaxode` command: help texts, bad names, every demo's --quick run, bench."""

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import default_optimisation_env, run_in_one_process

from jaxode.demos import _OPS as OPS

import jaxode as jo
from jaxode import cli

ROOT = Path(__file__).resolve().parents[1]


def _jaxode(*argv, cwd=None, timeout=300):
    # XLA's lowest optimisation level comes with `os.environ` (conftest.py)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "jaxode.cli", *argv], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("argv", [[], ["demo"], ["bench"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "usage: jaxode" in text
    if argv == ["demo"]:
        for name in cli.DEMOS:
            assert name in text
        assert "--quick" in text and "--out" in text and "example:" in text
    if argv == ["bench"]:
        assert "RESULTS.md" in text and "--quick" in text and "all" in text


def test_each_demo_has_its_own_help(capsys):
    for name in ("flu", "odenet"):
        assert cli.main(["demo", name, "--help"]) == 0
        text = capsys.readouterr().out
        assert f"usage: jaxode demo {name}" in text and "--quick" in text
    assert "influenza" in cli._demo_help("flu") and "ODE-Net" in cli._demo_help("odenet")


def test_unknown_demo_lists_valid_names(capsys):
    assert cli.main(["demo", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown demo 'nope'" in err and ", ".join(cli.DEMOS) in err


def test_unknown_bench_lists_valid_names(capsys):
    assert cli.main(["bench", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown benchmark 'nope'" in err
    assert "ensemble_scaling" in err and "all" in err


def test_bench_without_directory(tmp_path, capsys):
    assert cli.main(["bench", "--dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "no benchmarks directory" in err and "pip install -e" in err


def test_bench_collects_rows(tmp_path, capsys):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "toy.py").write_text(
        "import sys\n"
        "quick = '--quick' in sys.argv\n"
        "print('timing...')\n"
        "print('| benchmark | jaxode | peer | ratio |')\n"
        "print('|---|---|---|---|')\n"
        "print(f'| toy quick={quick} | 1.0 ms | 2.0 ms | 2.00 |')\n")
    (bench / "broken.py").write_text("raise SystemExit(3)\n")
    results = tmp_path / "R.md"
    code = cli.main(["bench", "all", "--quick", "--dir", str(bench), "--results",
                     str(results)])
    assert code == 1  # one script failed
    text = results.read_text()
    assert "| toy quick=True | 1.0 ms | 2.0 ms | 2.00 |" in text
    assert text.count("| benchmark | jaxode | peer | ratio |") == 1
    assert "| broken | FAILED (exit code 3) | 0 |" in text
    assert "- versions: jax " in text and "- machine: " in text
    assert "`jaxode bench all --quick`" in text
    assert "timing..." in capsys.readouterr().out  # the script's output is shown
    assert cli.main(["bench", "toy", "--dir", str(bench), "--results",
                     str(results)]) == 0
    text = results.read_text()
    assert "| toy | toy quick=False |" in text and "quick=True" not in text
    # the scripts not run this time keep their earlier lines
    assert "| broken | FAILED (exit code 3) | 0 |" in text
    assert text.count("| toy | ok | 1 |") == 1


def test_bench_writes_the_readme_table_from_results(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "toy.py").write_text(
        "print('| benchmark | jaxode | peer | ratio |')\n"
        "print('|---|---|---|---|')\n"
        "print('| toy row | 1.0 ms | 2.0 ms | 2.00 |')\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{cli.README_START}\nold row\n"
                      f"{cli.README_END}\n\nafter\n")
    assert cli.main(["bench", "toy", "--dir", str(bench)]) == 0
    text = readme.read_text()
    assert "old row" not in text and text.startswith("# x\n\nbefore\n\n")
    assert text.endswith(f"{cli.README_END}\n\nafter\n")
    row = [ln for ln in text.splitlines() if "toy row" in ln]
    assert len(row) == 1 and row[0].startswith("| `toy` (20")
    assert row[0].endswith("| toy row | 1.0 ms | 2.0 ms | 2.00 |")
    assert (bench / "RESULTS.md").read_text().count("toy row") == 1


def test_table_rows_skip_headers_and_separators():
    out = "x\n| a | b |\n|:--|--:|\n| 1 | 2 |\n| 3 | 4 |\nend | 5 |\n"
    assert cli._table_rows(out) == ["| 1 | 2 |", "| 3 | 4 |"]


# what each demo must show at --quick size: (words in the target, op, bound); the
# test reads the printed number and compares it itself
QUICK_TARGETS = {
    "simulate": [("Euler RNN vs the rounded observations", "<=", 0.6),
                 ("distance from (375, 250)", "<=", 2.0)],
    "lotka-volterra": [("converged", ">=", 1), ("inside their 95 %", ">=", 6)],
    "sine": [("Elman RNN 1-step", "<=", 0.08), ("LSTM 1-step", "<=", 0.08),
             ("LSTM 80-step", "<=", 0.3)],
    "bptt": [("hand - autodiff", "<=", 1e-12), ("sigmoid RNN", "<", 1e-3),
             ("linear RNN", ">", 1e3), ("LSTM (forget bias 3)", ">=", 1e-3)],
    "odenet": [("parameters / ResNet", "<=", 0.3), ("step memory / ResNet", "<=", 0.6),
               ("forward NFE", ">=", 2.0)],
    "cnf": [("nats learned", ">=", 0.15), ("probability mass", ">=", 0.9)],
    "petab": [("nllh at the published estimates", "<=", 1e-3),
              ("best start minus", "<=", 15.0)],
    "lynx-hare": [("converged", ">=", 1)] + [
        (f"{name} relative difference", "<=", 0.05)
        for name in ("alpha", "beta", "gamma", "delta", "hare0", "lynx0")] + [
        (f"sigma {s} relative difference", "<=", 0.2) for s in ("hare", "lynx")],
    "flu": [(f"{noise} {what}", op, bound) for noise in ("normal", "negbinomial")
            for what, op, bound in (("beta", "<=", 0.03), ("gamma", "<=", 0.05),
                                    ("R0", "<=", 0.1), ("fit converged", ">=", 1))],
}
_TARGET = re.compile(r"^target: (.+): (\S+) (<=|>=|<|>) (\S+) (met|MISSED)$")


def _targets(stdout: str) -> dict[str, float]:
    found = {}
    for line in stdout.splitlines():
        if m := _TARGET.match(line.strip()):
            found[m.group(1)] = float(m.group(2))
    return found


# The quick demos run in two Python processes, four demos each (`run_in_one_process`:
# starting Python and importing JAX twice instead of eight times saves half a minute).
# The first group compiles far more than it runs, so it keeps the suite's lowest XLA
# optimisation level (and, the longer, starts first); the second spends its time
# training (the sine demo's two forecasters, 700 steps each), so it runs at XLA's
# default level. Split the other way they take 5 % longer.
DEMO_GROUPS = (("odenet", "cnf", "flu", "bptt", "petab"),
               ("sine", "lotka-volterra", "simulate", "lynx-hare"))
TRAINING_GROUP = DEMO_GROUPS[1]


def test_demo_groups_hold_every_demo_once():
    names = [name for group in DEMO_GROUPS for name in group]
    assert sorted(names) == sorted(cli.DEMOS)


def _check_quick_demo(name: str, stdout: str, code, out: Path) -> None:
    assert code == "0", (code, stdout[-3000:])
    printed = _targets(stdout)
    assert len(printed) == len(QUICK_TARGETS[name]), printed
    for words, op, bound in QUICK_TARGETS[name]:
        (value,) = [v for what, v in printed.items() if words in what]
        assert OPS[op](value, bound), (name, words, value, op, bound)
    pngs = sorted(out.glob("*.png"))
    assert pngs, f"demo {name} wrote no PNG"
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert str(png) in stdout  # the demo says where it saved each figure
    if name == "simulate":
        assert {p.name for p in pngs} == {"simulate.png", "simulate_phase.png"}
        assert "within" in stdout and "(375, 250)" in stdout


@pytest.mark.parametrize("group", DEMO_GROUPS, ids="-".join)
def test_demo_quick_writes_pngs_and_meets_its_targets(group, tmp_path):
    env = default_optimisation_env() if group == TRAINING_GROUP else None
    _, results = run_in_one_process(
        [(name, "jaxode.cli", ["demo", name, "--quick", "--out", str(tmp_path / name)])
         for name in group], env=env)
    assert list(results) == list(group), results
    failed = {}
    for name in group:  # every demo is checked, then the failures reported together
        try:
            _check_quick_demo(name, *results[name], tmp_path / name)
        except AssertionError as e:
            failed[name] = str(e)[-3000:]
    assert not failed, failed


def test_a_demo_that_misses_a_target_exits_with_status_1(monkeypatch, capsys):
    from jaxode.demos import Target, report

    module = types.ModuleType("jaxode.demos._missing")
    module.run = lambda out, quick: {"targets": report([
        Target("error %", 2.0, "<=", 3.0), Target("nats learned", 0.01, ">=", 0.15)])}
    monkeypatch.setitem(sys.modules, "jaxode.demos._missing", module)
    monkeypatch.setitem(cli.DEMOS, "missing", ("_missing", "a demo that misses"))
    assert cli.main(["demo", "missing", "--quick", "--out", "."]) == 1
    captured = capsys.readouterr()
    assert "target: error %: 2 <= 3 met" in captured.out
    assert "missed 1 of its targets: target: nats learned: 0.01 >= 0.15 MISSED" in (
        captured.err)
    module.run = lambda out, quick: {"targets": report([Target("x", 1, "<", 2)])}
    assert cli.main(["demo", "missing", "--quick", "--out", "."]) == 0


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"jaxode {jo.__version__}"


def test_no_command_or_no_demo_name_says_what_to_type(capsys):
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "usage: jaxode" in err and "choose a command: `jaxode demo NAME`" in err
    assert "lotka-volterra" in err
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "name a demo" in err and ", ".join(cli.DEMOS) in err


def test_console_exit_code_on_bad_name():
    res = _jaxode("demo", "nope")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"jaxode: error: unknown demo 'nope'; valid demos: {', '.join(cli.DEMOS)}"]


def test_a_demo_takes_its_own_options_and_refuses_unknown_ones(capsys):
    assert cli.main(["demo", "lynx-hare", "--help"]) == 0
    assert "--bayes" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "lynx-hare", "--bogus"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--bogus"])
    assert e.value.code == 2
