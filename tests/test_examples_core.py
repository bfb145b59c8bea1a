"""The ensemble example on four host devices (the other examples: test_examples.py)."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import FOUR_DEVICES_ENV

ROOT = Path(__file__).resolve().parents[1]


def _example(name, *argv, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"),
                           *argv], env=env, capture_output=True, text=True,
                          timeout=300)


def test_ensemble_example_on_four_devices(tmp_path):
    res = _example("ensemble", "--members", "8", "--out", str(tmp_path),
                   env_extra=FOUR_DEVICES_ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    assert ("8 members on 4 device(s): ys (8, 101, 2), members per device "
            "[2, 2, 2, 2]") in res.stdout
    assert "all ok: True" in res.stdout
    assert (tmp_path / "ensemble_example.png").stat().st_size > 5000
