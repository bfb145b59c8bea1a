"""Tests run in float64 (accuracy claims are checked to tight tolerances); the core
tests also run in float32 with 64-bit mode off, as users run, through `dtype`."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The suite compiles far more than it computes (hundreds of small programs, each run
# a few times), so it asks XLA to compile quickly: the lowest backend optimisation
# level, and the CPU backend's older loop-fusion code generator instead of its
# MLIR fusion emitters (which take about twice as long to compile a solver loop).
# Both change rounding only: every value a test compares stays within its tolerance.
# Set before JAX starts its backend; the subprocesses the tests start (and
# pytest-xdist's workers) inherit them.
QUICK_COMPILE = ("--xla_backend_optimization_level=0",
                 "--xla_cpu_use_fusion_emitters=false")


def _with_quick_compile(flags: str) -> str:
    missing = [f for f in QUICK_COMPILE if f.split("=")[0] not in flags]
    if not missing:
        return flags
    # an XLA that does not know a flag aborts at start-up: keep those it accepts
    for extra in (missing, missing[:1]):
        trial = " ".join([flags, *extra]).strip()
        probe = subprocess.run(
            [sys.executable, "-c", "import jax.numpy as jnp; jnp.zeros(1).sum()"],
            env={**os.environ, "XLA_FLAGS": trial, "JAX_PLATFORMS": "cpu"},
            capture_output=True)
        if probe.returncode == 0:
            return trial
    return flags


os.environ["XLA_FLAGS"] = _with_quick_compile(os.environ.get("XLA_FLAGS", ""))

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.tree_util as jtu  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


def default_optimisation_env() -> dict:
    """`os.environ` without XLA's lowest optimisation level, for a subprocess that
    trains for real: there, running three times slower costs more than compiling
    faster saves."""
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                     if not f.startswith("--xla_backend_optimization_level"))
    return {**os.environ, "XLA_FLAGS": flags}


# Several programs in one Python process, since starting Python and importing JAX
# takes seconds: each starts clean, as in a fresh process (64-bit mode off, no open
# figures), runs under `runpy` as `__main__`, and reports its exit status.
_RUNNER = """
import runpy, sys, traceback
import jax
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
{preamble}
for label, target, argv in {runs!r}:
    jax.config.update("jax_enable_x64", False)
    sys.argv = [target, *argv]
    print("=== start", label, flush=True)
    code = 0
    try:
        if target.endswith(".py"):
            runpy.run_path(target, run_name="__main__")
        else:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = 0 if e.code is None else e.code
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        code = "exception"
    print("=== exit", code, flush=True)
    plt.close("all")
"""


def run_in_one_process(runs, *, env=None, cwd=None, preamble="", timeout=900):
    """Run `runs`, `[(label, script path or module name, argv)]`, one after the other
    in one Python process, after `preamble` (code). Returns the preamble's output and
    `{label: (output, exit status as printed)}`; a program the process never finished
    has the status `None`."""
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(ROOT),
           "JAX_PLATFORMS": "cpu"}
    runs = [(label, str(target), list(argv)) for label, target, argv in runs]
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER.format(preamble=preamble, runs=runs)],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    before, *parts = proc.stdout.split("=== start ")
    results = {}
    for part in parts:
        label, text = part.split("\n", 1)
        text, marker, code = text.rpartition("=== exit ")
        results[label] = (text, code.strip()) if marker else (code, None)
    return before, results


# what a subprocess with four host devices needs in its environment (the others
# inherit the low optimisation level from `os.environ`)
FOUR_DEVICES_ENV = {
    "XLA_FLAGS": os.environ["XLA_FLAGS"] + " --xla_force_host_platform_device_count=4"}


class LinearField(eqx.Module):
    """`f(t, y, args) = A y`: the vector field with a closed-form flow `expm(A t)`."""

    A: jax.Array

    def __call__(self, t, y, args):
        return self.A @ y


def tree_allclose(a, b, *, rtol=1e-10, atol=1e-10) -> bool:
    """True when two pytrees have the same structure and close leaves."""
    if jtu.tree_structure(a) != jtu.tree_structure(b):
        return False
    return all(
        np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
        for x, y in zip(jtu.tree_leaves(a), jtu.tree_leaves(b))
    )


@pytest.fixture
def getkey():
    """A fresh PRNG key on each call, deterministic per test."""
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 1000))
    return lambda: next(keys)


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run a test in float32 with JAX's 64-bit mode off (what users run: Python floats
    and `jnp.linspace` become float32) and in float64. Arrays the test needs must be
    made inside it."""
    x64 = request.param == "float64"
    with jax.enable_x64(x64):
        yield jnp.float64 if x64 else jnp.float32


def rtol_for(dtype, rtol64: float, rtol32: float) -> float:
    """The tolerance that fits `dtype`."""
    return rtol64 if dtype == jnp.float64 else rtol32


@pytest.fixture
def tmp_out(tmp_path):
    return tmp_path


__all__ = ["tree_allclose", "jnp", "FOUR_DEVICES_ENV", "LinearField", "rtol_for"]


# The longest tests (each a fresh process that compiles a whole program: the README's
# blocks, the quick demos, the example scripts, the multi-device runs) start first, so
# that `pytest -n 2` does not end with one worker running a long test alone; the
# longest kinds are named first.
LONG_FIRST = ("test_python_blocks_run_as_pasted[README", "test_demo_quick_",
              "example",
              "test_four_host_devices", "test_two_processes",
              "test_gradients_match_finite_differences_and_each_other",
              "test_two_experiments_sharing_a_rate")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        return next((i for i, s in enumerate(LONG_FIRST) if s in item.name),
                    len(LONG_FIRST))

    items.sort(key=rank)  # stable: otherwise in the order collected
