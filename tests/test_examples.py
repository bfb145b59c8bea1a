"""The example scripts run, and print what they promise. All but the 4-device one run
in one Python process, each from a clean start (64-bit mode off, no open figures):
starting Python and importing JAX once instead of six times saves half a minute."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> command-line arguments (small sizes)
RUNS = {
    "bptt": ["--length", "30"],
    "cnf": ["--steps", "2"],
    "lotka_volterra": ["--steps", "50", "--out", "fit.png"],
    "odenet": ["--steps", "2", "--channels", "4"],
    "simulate": ["--quick", "--out", "."],
    "sine": ["--steps", "30"],
}

RUNNER = """
import runpy, sys, traceback
import jax
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
for path, *argv in {runs!r}:
    jax.config.update("jax_enable_x64", False)  # as in a fresh process
    sys.argv = [path, *argv]
    print("=== start", path, flush=True)
    try:
        runpy.run_path(path, run_name="__main__")
        print("=== ok", flush=True)
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        print("=== failed", flush=True)
    plt.close("all")
"""

# what each script's output must contain
PROMISED = {
    "bptt": ["vanishing", "max |hand - autodiff|"],
    "cnf": ["negative log-likelihood", "sample mean"],
    "lotka_volterra": ["a2"],
    "odenet": ["test error", "NFE forward"],
    "simulate": ["largest gap over the run "],
    "sine": ["single-step RMSE"],
}


def _run_examples(tmp_path) -> dict[str, str]:
    runs = [[str(ROOT / "examples" / f"{name}.py"), *argv]
            for name, argv in RUNS.items()]
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER.format(runs=runs)], cwd=tmp_path,
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = {}
    for part in proc.stdout.split("=== start ")[1:]:
        path, text = part.split("\n", 1)
        outputs[Path(path).stem] = text
    return outputs


def test_examples_run_and_print_what_they_promise(tmp_path):
    outputs = _run_examples(tmp_path)
    assert sorted(outputs) == sorted(RUNS)
    failed = {name: text[-2000:] for name, text in outputs.items()
              if not text.rstrip().endswith("=== ok")}
    assert not failed, failed
    for name, words in PROMISED.items():
        for w in words:
            assert w in outputs[name], (name, w, outputs[name][-1000:])
    gap = float(outputs["simulate"].split("largest gap over the run ")[1].split()[0])
    assert 0.0 < gap < 5.0  # Euler with h = 0.1 stays within a few animals
    assert (tmp_path / "fit.png").stat().st_size > 5000
    assert (tmp_path / "simulate_example.png").stat().st_size > 5000
    assert (tmp_path / "simulate_example_phase.png").stat().st_size > 5000


def test_examples_directory_is_covered():
    # every example script runs in some test (ensemble, on four devices: tests/test_ensemble.py)
    scripts = {p.stem for p in (ROOT / "examples").glob("*.py")}
    assert scripts == set(RUNS) | {"ensemble"}
