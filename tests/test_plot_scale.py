"""plot.phase_portrait and plot.losses draw what they are given."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import jaxode
from jaxode import plot


def _rotation(t, y, args):
    return jnp.stack([-args * y[1], args * y[0]])


def test_phase_portrait_field_and_trajectories():
    theta = np.linspace(0, np.pi, 20)
    paths = np.stack([np.stack([r * np.cos(theta), r * np.sin(theta)], -1)
                      for r in (0.5, 1.0)])
    fig = plot.phase_portrait(_rotation, 2.0, xlim=(-1.5, 1.5), ylim=(-1.5, 1.5),
                              trajectories=paths, grid=12, title="rotation")
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 20]
    assert len(lines) == 2
    np.testing.assert_allclose(lines[1].get_ydata(), paths[1, :, 1])
    assert ax.get_xlim() == (-1.5, 1.5) and ax.get_title() == "rotation"
    # colour bar: |f| = 2 r on the grid, largest at the corners, 2 * 1.5 * sqrt(2)
    low, high = fig.axes[1].get_ylim()
    assert high == pytest.approx(2 * 1.5 * np.sqrt(2), rel=1e-6)
    assert low == pytest.approx(2 * np.hypot(*[1.5 - 3 / 11 * 5] * 2), rel=1e-6)


def test_phase_portrait_bad_trajectories():
    with pytest.raises(ValueError, match=r"`trajectories` must have shape .*\(5, 3\)"):
        plot.phase_portrait(_rotation, 1.0, xlim=(0, 1), ylim=(0, 1),
                            trajectories=np.zeros((5, 3)))


def test_losses_log_scale_and_several_curves():
    fig = plot.losses({"train": np.geomspace(1, 1e-3, 50), "val": np.geomspace(2, 1e-2, 50)})
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 2
    assert ax.get_legend() is not None
    fig = plot.losses(np.array([1.0, -0.5, 0.2]))  # a negative loss: linear axis
    assert fig.axes[0].get_yscale() == "linear"
    # what `train` returns plots its loss curve
    history = jaxode.TrainHistory(loss=np.geomspace(1, 1e-2, 7), grad_norm=np.ones(7))
    (line,) = plot.losses(history).axes[0].get_lines()
    np.testing.assert_array_equal(line.get_ydata(), history.loss)


def test_importing_plot_keeps_the_users_backend_and_pyplot_untouched(tmp_path):
    code = (
        "import matplotlib; matplotlib.use('svg')\n"
        "import sys, numpy as np, jaxode.plot as P\n"
        "fig = P.losses({'train': np.linspace(1.0, 0.1, 20)})\n"
        f"fig.savefig({str(tmp_path / 'l.png')!r})\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "l.png").read_bytes()[:4] == b"\x89PNG"


def test_core_runs_without_the_extras_and_each_extra_names_its_install():
    # the core install leaves matplotlib and scikit-learn out: the solver runs
    # without them, and each module that needs one says which extra to install (one
    # process: starting Python and JAX takes seconds)
    code = (
        "import sys; sys.modules['matplotlib'] = None; sys.modules['sklearn'] = None\n"
        "import jaxode, jax.numpy as jnp\n"
        "print(jaxode.solve(lambda t, y, a: -y, jnp.ones(1), jnp.linspace(0, 1, 3))"
        ".ys[-1, 0])\n"
        "for call in ('import jaxode.plot', 'import jaxode.data; jaxode.data.digits()'):\n"
        "    try:\n        exec(call)\n        print('=== no error from', call)\n"
        "    except ImportError as e:\n        print('===', e)\n"
        # the command line: a demo names the extra in one line, no traceback
        "import contextlib, io, tempfile; from jaxode import cli\n"
        "err = io.StringIO()\n"
        "with contextlib.redirect_stderr(err):\n"
        "    code = cli.main(['demo', 'simulate', '--quick', '--out',"
        " tempfile.mkdtemp()])\n"
        "print('===', code, err.getvalue())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("===")
    assert abs(float(out[0]) - 0.36788) < 1e-3
    assert "pip install 'jaxode[plot]'" in out[1], out
    assert "pip install 'jaxode[data]'" in out[2], out
    status, message = out[3].strip().split(" ", 1)
    assert status == "2" and message.startswith("jaxode: error:"), out[3]
    assert "jaxode[plot]" in message and "Traceback" not in message
