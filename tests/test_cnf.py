"""Continuous normalising flows: closed form, Hutchinson unbiasedness, sampling."""


import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.linalg as jsl
import numpy as np
import pytest

import jaxode as jo
import jaxode.data
from jaxode.nn import CNF

from conftest import LinearField as Linear


class Swirl(eqx.Module):
    """A nonlinear, time-dependent 2-D field (non-zero divergence)."""

    W: jax.Array

    def __call__(self, t, z, args):
        return jnp.tanh(self.W @ z + jnp.array([0.3, -0.2]) * t) - 0.2 * z


A = jnp.array([[0.3, -1.0], [0.8, -0.2]])
W = jnp.array([[0.5, -1.2], [1.0, 0.4]])


def _log_normal(z):
    return -0.5 * jnp.sum(z ** 2, -1) - z.shape[-1] / 2 * jnp.log(2 * jnp.pi)


def test_linear_flow_matches_closed_form():
    t1 = 1.5
    cnf = CNF(Linear(A), dim=2, t1=t1, rtol=1e-10, atol=1e-10)
    x = jr.normal(jr.PRNGKey(1), (6, 2)) * 1.5
    expected = _log_normal(x @ jsl.expm(-A * t1).T) - t1 * jnp.trace(A)
    np.testing.assert_allclose(cnf.log_prob(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(noise):
    x = jnp.array([[0.4, -0.7], [1.2, 0.3]])
    exact = CNF(Swirl(W), dim=2, rtol=1e-9, atol=1e-9).log_prob(x)
    hutch = CNF(Swirl(W), dim=2, trace="hutchinson", noise=noise, rtol=1e-9,
                atol=1e-9)
    keys = jr.split(jr.PRNGKey(3), 400)
    estimates = jax.jit(jax.vmap(hutch.log_prob, in_axes=(None, 0)))(x, keys)
    mean = estimates.mean(0)
    stderr = estimates.std(0) / np.sqrt(len(keys))
    assert bool(jnp.all(stderr > 1e-3))  # a real estimator: it does vary
    assert bool(jnp.all(jnp.abs(mean - exact) < 3 * stderr)), (mean, exact, stderr)


def test_sample_then_log_prob_is_consistent_with_the_base():
    cnf = CNF(Swirl(W), dim=2, rtol=1e-10, atol=1e-10)
    key = jr.PRNGKey(5)
    x, logp = cnf.sample(key, 8, log_prob=True)
    # inverting the samples recovers the base draws...
    z0 = jr.normal(key, (8, 2), dtype=x.dtype)
    back, _ = cnf.inverse(x)
    np.testing.assert_allclose(back, z0, atol=1e-6)
    # ...and the forward log-density matches the backward one
    np.testing.assert_allclose(cnf.log_prob(x), logp, atol=1e-6)


def test_learned_density_normalises():
    """exp(log_prob) integrates to 1 over the plane (a 2-D grid, trapezoid rule)."""
    cnf = CNF(Swirl(W), dim=2, rtol=1e-7, atol=1e-7)
    g = jnp.linspace(-6.0, 6.0, 81)
    xx, yy = jnp.meshgrid(g, g)
    pts = jnp.stack([xx.ravel(), yy.ravel()], -1)
    dens = jnp.exp(cnf.log_prob(pts)).reshape(xx.shape)
    mass = jnp.trapezoid(jnp.trapezoid(dens, g, axis=1), g)
    assert abs(float(mass) - 1.0) < 2e-3


class Scaled(eqx.Module):
    """`f(t, z, args) = args * A z`."""

    A: jax.Array

    def __call__(self, t, z, args):
        return args * (self.A @ z)


def test_args_reach_the_vector_field():
    # the field c * A z with args=c is the field (c A) z
    x = jnp.array([[0.3, -0.7], [1.1, 0.2]])
    c = 2.0
    with_args = CNF(Scaled(A), dim=2, rtol=1e-9, atol=1e-9)
    direct = CNF(Linear(c * A), dim=2, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(with_args.log_prob(x, args=c), direct.log_prob(x),
                               rtol=1e-8)
    key = jr.PRNGKey(3)
    np.testing.assert_allclose(with_args.sample(key, 4, args=c), direct.sample(key, 4),
                               rtol=1e-8)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"vector_field\(t, z, args\)"):
        CNF(lambda t, z: z, dim=2)
    with pytest.raises(ValueError, match="`trace`='approx'"):
        CNF(Swirl(W), dim=2, trace="approx")
    with pytest.raises(ValueError, match="`dim` must be a positive integer"):
        CNF(Swirl(W), dim=0)
    with pytest.raises(ValueError, match="`key` is required"):
        CNF(Swirl(W), dim=2, trace="hutchinson").log_prob(jnp.zeros(2))
    with pytest.raises(ValueError, match=r"shape \(2,\) or \(n, 2\)"):
        CNF(Swirl(W), dim=2).log_prob(jnp.zeros((3, 3)))
    for trace in ["exact", "hutchinson"]:  # checked whichever trace is chosen
        with pytest.raises(ValueError, match="`noise`='uniform' is not one of"):
            CNF(Swirl(W), dim=2, trace=trace, noise="uniform")
        with pytest.raises(ValueError, match="`max_steps` must be a positive integer, "
                                             "got 0"):
            CNF(Swirl(W), dim=2, trace=trace, max_steps=0)
        for t1 in [0.0, -1.0, float("nan"), "1.0"]:
            with pytest.raises(ValueError, match=r"`t1` must be a finite number > 0"):
                CNF(Swirl(W), dim=2, trace=trace, t1=t1)
    with pytest.raises(ValueError, match="`rtol` must be a number"):
        CNF(Swirl(W), dim=2, rtol="1e-5")


@pytest.mark.parametrize("name", jo.data.TOY2D)
def test_toy2d(name):
    x = jo.data.toy2d(name, 500, jr.PRNGKey(0))
    assert x.shape == (500, 2) and bool(jnp.all(jnp.isfinite(x)))
    assert float(jnp.abs(x).max()) < 4.0  # fits the demo's plotting window
    assert float(x.std()) > 0.5


def test_toy2d_bad_name():
    with pytest.raises(ValueError, match="`name`='spiral'"):
        jo.data.toy2d("spiral", 10, jr.PRNGKey(0))


def test_plots(tmp_path):
    from jaxode import plot

    g = np.linspace(-3, 3, 5)
    xx, yy = np.meshgrid(g, g)
    fig = plot.densities2d([("data", np.zeros((4, 2))), ("density", (xx, yy, xx ** 2))])
    assert len(fig.axes) == 2
    fig = plot.nfe_curves({"forward": [30, 26], "backward": [20, 18]})
    assert len(fig.axes[0].lines) == 2
    fig = plot.nfe_vs_tolerance([1e-3, 1e-2], [31, 25], errors=[2.0, 2.5])
    assert len(fig.axes) == 2  # NFE and the error on a twin axis
    fig.savefig(tmp_path / "nfe.png")
    assert (tmp_path / "nfe.png").stat().st_size > 0
