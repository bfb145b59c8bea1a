"""`benchmarks/gpu.py`: its quick run prints result rows with only the benchmark's
own dependencies importable, a wrong answer is never timed, a failing section does
not stop the others, and a size that would not fit the time left is skipped."""

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"

# The run as on a machine with jax, diffrax, equinox, optax, torch and torchdiffeq
# and nothing else of the test environment: these imports fail in it.
_BARE = """
import runpy, sys
for name in ("matplotlib", "sklearn", "pytest", "pandas", "hypothesis"):
    sys.modules[name] = None  # `import name` fails; find_spec says it is absent
sys.path.insert(0, {bench!r})
sys.argv = [{script!r}, *sys.argv[1:]]
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.fixture(scope="module")
def gpu():
    """The benchmark script as a module (benchmarks/ on the path for its helpers)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


def test_quick_run_prints_rows_without_the_test_dependencies(tmp_path):
    out = tmp_path / "gpu.md"
    # the low XLA optimisation level comes with `os.environ` (conftest.py)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    code = _BARE.format(bench=str(SCRIPT.parent), script=str(SCRIPT))
    proc = subprocess.run(
        [sys.executable, "-c", code, "--quick", "--budget", "45", "--out", str(out)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    text = proc.stdout
    assert proc.returncode == 0, text[-3000:] + proc.stderr[-3000:]
    assert "device: cpu (JAX platform cpu" in text
    assert "| benchmark | jaxode | peer | ratio |" in text
    assert "WRONG ANSWER" not in text and "FAILED" not in text, text[-4000:]
    rows = [ln for ln in text.split("| benchmark | jaxode | peer | ratio |")[-1]
            .splitlines() if ln.startswith("| cpu: ")]
    lorenz = [r for r in rows if "Lorenz ensemble, RK4" in r
              and "2^8 = 256 members" in r and "members/s" in r]
    assert lorenz, text[-4000:]
    # torchdiffeq timed, or said why not (on a loaded machine the budget may drop it)
    assert ("torchdiffeq rk4 (cpu)" in lorenz[0] or "torchdiffeq: not run" in lorenz[0]
            or any("skipped" in ln and "torchdiffeq" in ln for ln in text.splitlines())
            ), text[-4000:]
    assert any("DiffEqGPU paper" in r for r in rows)
    # rows printed as they come are marked: `jaxode bench` reads each one once
    assert sum(ln.startswith("| cpu: ") for ln in text.splitlines()) == len(rows)
    # every section gave a row, or was left out for lack of time (never silently)
    for section, mark in [("lorenz_tsit5", "Tsit5"), ("stiff", "Robertson"),
                          ("lstm", "LSTM"), ("spiral", "spiral"),
                          ("odenet", "ODE-Net"), ("loop", "loop:")]:
        assert (any(mark in r for r in rows)
                or f"{section}: not run, the time budget is spent" in text), section
    written = out.read_text()
    assert "device: cpu" in written and "\n".join(rows) in written
    assert "(wall time" in written


def test_a_wrong_or_failing_contender_is_not_timed(gpu):
    calls = {"wrong": 0, "nan": 0}

    def counted(name, value):
        def fn():
            calls[name] += 1
            return value
        return fn

    def broken():
        raise RuntimeError("no device")

    res = gpu.race({"ref": lambda: np.ones(3), "close": lambda: np.ones(3) + 1e-6,
                    "wrong": counted("wrong", 2 * np.ones(3)),
                    "nan": counted("nan", np.full(3, np.nan)), "broken": broken},
                   rounds=3, deadline=math.inf, reference="ref",
                   error=gpu.rel_error, tol=1e-3)
    assert res["close"]["rounds"] == 3 and res["close"]["err"] < 1e-5
    assert "WRONG ANSWER (error 1.0e+00" in res["wrong"]["error"]
    assert "WRONG ANSWER" in res["nan"]["error"]
    assert calls == {"wrong": 1, "nan": 1}  # the checking call only
    assert res["broken"]["error"] == "failed (RuntimeError: no device)"


def test_a_failing_section_does_not_stop_the_next(gpu, capsys):
    ctx = gpu.Context(gpu.PLANS["quick"], None, "test")

    def fails(sec):
        raise ValueError("boom")

    def works(sec):
        sec.row("after the failure", "1 ms", "2 ms", "2x")

    runners = dict(gpu.RUNNERS)
    gpu.RUNNERS.update(lorenz_rk4=fails, lstm=works)
    try:
        gpu.run_sections(ctx, ["lorenz_rk4", "lstm"], budget=1e9)
    finally:
        gpu.RUNNERS.clear()
        gpu.RUNNERS.update(runners)
    assert ctx.rows == ["| test: lorenz_rk4: FAILED (ValueError: boom) | - | - | - |",
                        "| test: after the failure | 1 ms | 2 ms | 2x |"]
    assert ctx.skipped == ["lorenz_rk4: FAILED (ValueError: boom)"]
    assert "Traceback" in capsys.readouterr().out


def test_sizes_stop_growing_when_the_next_would_not_fit(gpu):
    ctx = gpu.Context(gpu.PLANS["quick"], None, "test")
    sec = gpu.Section("lorenz_rk4", 10.0, ctx)
    # last run at 1000 members: the reference 0.1 s per call, a peer 3 s
    history = {"ref": [(1000, 0.5, 0.1)], "peer": [(1000, 4.0, 3.0)]}
    active = ["ref", "peer"]
    sizes = gpu.grow(sec, [4000, 10 ** 8], history, active, "ref")
    assert next(sizes) == 4000  # the peer (~13 s predicted) is dropped, ref runs
    assert active == ["ref"]
    assert "peer from 4000 members on" in ctx.skipped[0]
    history["ref"].append((4000, 0.5, 0.4))  # now growing linearly
    assert list(sizes) == []  # 10^8 members: ~10^4 s
    assert "sizes from 100000000 on" in ctx.skipped[1]
