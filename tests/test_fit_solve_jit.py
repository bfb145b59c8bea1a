"""`solve` with a fixed-step solver and `dt` inside `jit`, with NumPy save times.

Under `jit`, `jnp.asarray` turns a NumPy constant into a tracer; `solve` must keep the
host values to lay out the fixed-step grid (`fit` relies on this).
"""

import jax
import jax.numpy as jnp
import numpy as np

import jaxode


def test_fixed_step_dt_with_numpy_ts_under_jit():
    ts = np.array([0.0, 0.3, 1.0, 1.25])  # intervals need 3, 7 and 3 steps of 0.1

    def decay(t, y, k):
        return -k * y

    @jax.jit
    def run(k):
        return jaxode.solve(decay, jnp.array([1.0]), ts, k, solver="euler", dt=0.1).ys

    ys = run(0.5)
    eager = jaxode.solve(decay, jnp.array([1.0]), ts, 0.5, solver="euler", dt=0.1).ys
    np.testing.assert_allclose(ys, eager, rtol=1e-12)
    # by hand: 3 steps of 0.1, 7 of 0.1, 3 of 0.25/3
    expected = np.cumprod([1.0, 0.95**3, 0.95**7, (1 - 0.5 * 0.25 / 3) ** 3])
    np.testing.assert_allclose(np.ravel(ys), expected, rtol=1e-12)
