"""Rosenbrock–Wanner methods: linearly implicit solvers for stiff problems and
index-1 DAEs, as diffrax solvers (so `solve`, `ts` saving, events, dense output,
adjoints, `vmap` and `ensemble` take them unchanged).

One engine runs every method of the transformed form (Hairer & Wanner, *Solving
ODEs II*, §IV.7, eq. 7.25), given its coefficients as a `RosenbrockTableau`. With
`J = ∂f/∂y` and `T = ∂f/∂t` at the step's start and the mass matrix `M` (the
identity for an ODE):

    W   = M / (h γ) − J                        one Jacobian and one LU per step
    U_i = y0 + Σ_{j<i} a_ij k_j
    W k_i = f(t0 + c_i h, U_i) + M Σ_{j<i} (C_ij / h) k_j + d_i h T
    y1  = U_s + k_s                            stiffly accurate
    err = k_s                                  (y1 minus the embedded solution U_s)

No Newton iterations: a step costs `s` evaluations of `f`, one Jacobian (forward
mode, or the user's `jac`), one LU factorisation (`jax.scipy.linalg`) and `s` triangular solves.
`T` is computed (one more JVP, sharing the Jacobian's) only when `f` reads `t`.

Shampine's Rosenbrock23 (MATLAB's `ode23s`) does not fit this form: its third stage
and error estimate use `f(t0, y0)` and `f` at the midpoint directly, which in the
transformed form would need products `J k_j` besides `M k_j`. It keeps a step of its
own and shares the Jacobian code.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = ["RosenbrockTableau", "AbstractRosenbrock", "Rodas5", "Rodas5P",
           "Rosenbrock23", "RODAS5", "RODAS5P"]


# ------------------------------------------------------------------------ tableau


@dataclasses.dataclass(frozen=True)
class RosenbrockTableau:
    """Coefficients of a stiffly accurate Rosenbrock–Wanner method in the
    transformed form (Hairer & Wanner II, eq. 7.25).

    **Arguments:**

    - `gamma`: the diagonal `γ` of the method's `Γ` matrix.
    - `a`, `C`: strictly lower-triangular matrices as rows; row `i` has `i` entries.
    - `c`: stage times (`c_i = Σ_j α_ij` of the untransformed method).
    - `d`: weights of the time derivative (`d_i = Σ_j Γ_ij`).
    - `H`: dense-output weights, one row per coefficient of the interpolant
      (`K_r = Σ_i H_ri k_i`), or `()` for no dense output of its own.
    - `order`: the order of the method; its embedded solution has one less.

    The tableau checks itself when created: shapes, `γ` as `d_1`, the stiffly
    accurate last two rows, and, by recovering the untransformed `α` and `Γ`, that
    `c` and `d` are their row sums and that the weights meet the conditions of
    orders 1 and 2. A mistyped coefficient fails at import.
    """

    gamma: float
    a: tuple[tuple[float, ...], ...]
    C: tuple[tuple[float, ...], ...]
    c: tuple[float, ...]
    d: tuple[float, ...]
    H: tuple[tuple[float, ...], ...]
    order: int

    def __post_init__(self):
        s = len(self.c)
        if not len(self.a) == len(self.C) == len(self.d) == s:
            raise ValueError(
                f"tableau has {s} stage times, {len(self.a)} rows of `a`, "
                f"{len(self.C)} rows of `C` and {len(self.d)} entries of `d`; all "
                "must be equal.")
        for name, rows in (("a", self.a), ("C", self.C)):
            for i, row in enumerate(rows):
                if len(row) != i:
                    raise ValueError(
                        f"row {i} of `{name}` must have {i} entries, got {len(row)}.")
        if any(len(row) != s for row in self.H):
            raise ValueError(f"every row of `H` must have {s} entries.")
        if self.c[0] != 0 or self.d[0] != self.gamma:
            raise ValueError(
                f"the first stage needs c[0] == 0 and d[0] == gamma ({self.gamma}); "
                f"got c[0]={self.c[0]}, d[0]={self.d[0]}.")
        if (self.c[-1], self.c[-2], self.d[-1], self.d[-2]) != (1, 1, 0, 0) or tuple(
                self.a[-1]) != tuple(self.a[-2]) + (1.0,):
            raise ValueError(
                "the last two stages must be stiffly accurate: c = 1, d = 0, and "
                "row s of `a` equal to row s-1 followed by 1.")
        self._check_untransformed()

    def _check_untransformed(self):
        s = self.stages
        C = np.zeros((s, s))
        a = np.zeros((s, s))
        for i in range(s):
            C[i, :i] = self.C[i]
            a[i, :i] = self.a[i]
        # C = diag(1/γ) − Γ⁻¹ and a = α Γ⁻¹ (Hairer & Wanner II, eq. 7.26)
        gamma_full = np.linalg.inv(np.eye(s) / self.gamma - C)
        alpha = a @ gamma_full
        b = np.append(self.a[-1], 1.0) @ gamma_full  # y1 = y0 + Σ m_i k_i
        beta = alpha + gamma_full - np.diag(np.diag(gamma_full))
        checks = {
            "c (row sums of alpha)": (alpha.sum(1), np.asarray(self.c)),
            "d (row sums of Gamma)": (gamma_full.sum(1), np.asarray(self.d)),
            "order 1 (sum of b)": (b.sum(), 1.0),
            "order 2": (b @ beta.sum(1), 0.5 - self.gamma),
        }
        for what, (got, want) in checks.items():
            if not np.allclose(got, want, rtol=1e-10, atol=1e-10):
                raise ValueError(f"tableau fails its check of {what}: {got} != {want}.")

    @property
    def stages(self) -> int:
        return len(self.c)


def _rows(text: str) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(x) for x in line.split()) for line in text.strip()
                 .splitlines())


# Rodas5: G. Di Marzo, RODAS5(4), MSc thesis, Univ. Geneva, 1993. Transformed form, as
# tabulated in OrdinaryDiffEq.jl (MIT).
_RODAS5_A6 = (-14.09640773051259, 6.925207756232704, -41.47510893210728,
              2.343771018586405, 24.13215229196062)
RODAS5 = RosenbrockTableau(
    gamma=0.19,
    a=((), (2.0,), (3.040894194418781, 1.041747909077569),
       (2.576417536461461, 1.622083060776640, -0.9089668560264532),
       (2.760842080225597, 1.446624659844071, -0.3036980084553738,
        0.2877498600325443),
       _RODAS5_A6, _RODAS5_A6 + (1.0,), _RODAS5_A6 + (1.0, 1.0)),
    C=((),) + _rows("""
        -10.31323885133993
        -21.04823117650003 -7.234992135176716
        32.22751541853323 -4.943732386540191 19.44922031041879
        -20.69865579590063 -8.816374604402768 1.260436877740897 -0.7495647613787146
        -46.22004352711257 -17.49534862857472 -289.6389582892057 93.60855400400906 318.3822534212147
        34.20013733472935 -14.15535402717690 57.82335640988400 25.83362985412365 1.408950972071624 -6.551835421242162
        42.57076742291101 -13.80770672017997 93.98938432427124 18.77919633714503 -31.58359187223370 -6.685968952921985 -5.810979938412932
        """),  # noqa: E501
    c=(0.0, 0.38, 0.3878509998321533, 0.4839718937873840, 0.4570477008819580, 1.0,
       1.0, 1.0),
    d=(0.19, -0.1823079225333714636, -0.319231832186874912, 0.3449828624725343,
       -0.377417564392089818, 0.0, 0.0, 0.0),
    H=_rows("""
        27.354592673333357 -6.925207756232857 26.40037733258859 0.5635230501052979 -4.699151156849391 -1.6008677469422725 -1.5306074446748028 -1.3929872940716344
        44.19024239501722 1.3677947663381929e-13 202.93261852171622 -35.5669339789154 -181.91095152160645 3.4116351403665033 2.5793540257308067 2.2435122582734066
        -44.0988150021747 -5.755396159656812e-13 -181.26175034586677 56.99302194811676 183.21182741427398 -7.480257918273637 -5.792426076169686 -5.32503859794143
        """),  # noqa: E501
    order=5,
)

# Rodas5P: G. Steinebach, BIT Numer. Math. 63 (2023) 27. Transformed form, as
# tabulated in OrdinaryDiffEq.jl (MIT).
_RODAS5P_A6 = (-7.502846399306121, 2.561846144803919, -11.627539656261098,
               -0.18268767659942256, 0.030198172008377946)
RODAS5P = RosenbrockTableau(
    gamma=0.21193756319429014,
    a=((), (3.0,), (2.849394379747939, 0.45842242204463923),
       (-6.954028509809101, 2.489845061869568, -10.358996098473584),
       (2.8029986275628964, 0.5072464736228206, -0.3988312541770524,
        -0.04721187230404641),
       _RODAS5P_A6, _RODAS5P_A6 + (1.0,), _RODAS5P_A6 + (1.0, 1.0)),
    C=((),) + _rows("""
        -14.155112264123755
        -17.97296035885952 -2.859693295451294
        147.12150275711716 -1.41221402718213 71.68940251302358
        165.43517024871676 -0.4592823456491126 42.90938336958603 -5.961986721573306
        24.854864614690072 -3.0009227002832186 47.4931110020768 5.5814197821558125 -0.6610691825249471
        30.91273214028599 -3.1208243349937974 77.79954646070892 34.28646028294783 -19.097331116725623 -28.087943162872662
        37.80277123390563 -3.2571969029072276 112.26918849496327 66.9347231244047 -40.06618937091002 -54.66780262877968 -9.48861652309627
        """),  # noqa: E501
    c=(0.0, 0.6358126895828704, 0.4095798393397535, 0.9769306725060716,
       0.4288403609558664, 1.0, 1.0, 1.0),
    d=(0.21193756319429014, -0.42387512638858027, -0.3384627126235924,
       1.8046452872882734, 2.325825639765069, 0.0, 0.0, 0.0),
    H=_rows("""
        25.948786856663858 -2.5579724845846235 10.433815404888879 -2.3679251022685204 0.524948541321073 1.1241088310450404 0.4272876194431874 -0.17202221070155493
        -9.91568850695171 -0.9689944594115154 3.0438037242978453 -24.495224566215796 20.176138334709044 15.98066361424651 -6.789040303419874 -6.710236069923372
        11.419903575922262 2.8879645146136994 72.92137995996029 80.12511834622643 -52.072871366152654 -59.78993625266729 -0.15582684282751913 4.883087185713722
        """),  # noqa: E501
    order=5,
)


# ------------------------------------------------------------ the linearisation


def _reads_t(field: Callable, t0, y) -> bool:
    """Whether the output of `field(t, y)` depends on `t` (from its jaxpr, at trace
    time): an autonomous `f` skips the JVP for `∂f/∂t`. The jaxpr is walked back
    from its outputs, so a use of `t` whose result is dropped (diffrax's time
    reversal `t * direction` in front of an `f` without `t`) does not count; `t * 0`
    does."""
    jaxpr = jax.make_jaxpr(lambda t: field(t, y))(t0).jaxpr
    variables = lambda vs: [v for v in vs if type(v).__name__ != "Literal"]  # noqa: E731
    needed = set(variables(jaxpr.outvars))
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            needed.update(variables(eqn.invars))
    return jaxpr.invars[0] in needed


class _Linearised(eqx.Module):
    """The flat vector field `F(t, y)` of one step (the sign of the step's direction
    applied, as diffrax's terms define it) and its linearisation at `(t0, y0)`."""

    field: Callable
    unravel: Callable
    y0: jax.Array  # the state at the step's start, flattened
    f0: jax.Array
    J: jax.Array
    dfdt: jax.Array | None


def _linearise(terms, t0, t1, y0, args, jac: Callable | None) -> _Linearised:
    flat0, unravel = ravel_pytree(y0)
    h = t1 - t0
    # contr(t0, t1) is ±h exactly: the sign of diffrax's (possibly reversed) time
    # (a step of length zero, see `_in_place`, takes +1 without dividing by zero)
    zero = h == 0
    sign = jnp.where(zero, 1, terms.contr(t0, t1) / jnp.where(zero, 1, h))
    sign = sign.astype(flat0.dtype)

    def field(t, flat):
        out = terms.vf_prod(t, unravel(flat), args, sign)
        return ravel_pytree(out)[0].astype(flat0.dtype)

    reads_t = _reads_t(field, t0, flat0)
    inner = getattr(terms, "term", None)  # diffrax's WrapTerm around the user's term
    if jac is not None and isinstance(inner, diffrax.ODETerm):
        J = sign * jnp.asarray(jac(t0 * terms.direction, y0, args), flat0.dtype)
        J = J.reshape(flat0.size, flat0.size)
        if not reads_t:
            return _Linearised(field, unravel, flat0, field(t0, flat0), J, None)
        # ∂f/∂t by a JVP whose primal output is f(t0, y0): one evaluation, not two
        f0, dfdt = jax.jvp(lambda t: field(t, flat0), (t0,), (jnp.ones_like(t0),))
        return _Linearised(field, unravel, flat0, f0, J, dfdt)
    n = flat0.size
    eye = jnp.eye(n, dtype=flat0.dtype)
    if reads_t:  # one batch of n + 1 JVPs: n columns of J, then ∂f/∂t
        dts = jnp.concatenate([jnp.zeros(n, t0.dtype), jnp.ones(1, t0.dtype)])
        dys = jnp.concatenate([eye, jnp.zeros((1, n), flat0.dtype)])
        f0, cols = jax.vmap(lambda dt, dy: jax.jvp(field, (t0, flat0), (dt, dy)),
                            out_axes=(None, 0))(dts, dys)
        return _Linearised(field, unravel, flat0, f0, cols[:n].T, cols[n])
    f0, cols = jax.vmap(lambda dy: jax.jvp(lambda y: field(t0, y), (flat0,), (dy,)),
                        out_axes=(None, 0))(eye)
    return _Linearised(field, unravel, flat0, f0, cols.T, None)


# Up to this many states, the stages multiply by W⁻¹ (formed from the LU) instead of
# solving with the LU factors: no more work (n³ against a step's 8 solves of 2n²
# each), and under `vmap` on CPU, where every batched triangular solve is a loop
# over the members, about 3x faster: 10^4 Robertson members in one `ensemble` call
# took 1.71 s and then 0.56 s (the ensemble row of `benchmarks/stiff.py` went from
# 2.56 s to 0.58-0.60 s); single solves are unchanged.
_INVERSE_UP_TO = 16


def _lu_solver(W: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """`b ↦ W⁻¹ b` with one LU factorisation of `W`.

    `jax.scipy.linalg`'s LU, not lineax's: lineax differentiates a solve with tangent
    and transpose solves that raise on non-finite input whatever `throw` says, so one
    start of a vmapped fit that drives a solve to NaN stopped every start with an
    error; JAX's LU is differentiated as plain operations, and a failed solve is
    reported through `sol.ok` / `throw` like any other."""
    factors = jax.scipy.linalg.lu_factor(W)
    n = W.shape[0]
    if n > _INVERSE_UP_TO:
        return lambda b: jax.scipy.linalg.lu_solve(factors, b)
    inverse = jax.scipy.linalg.lu_solve(factors, jnp.eye(n, dtype=W.dtype))
    return lambda b: inverse @ b


def _in_place(h, t0) -> tuple[jax.Array, jax.Array]:
    """`(h, zero)`: a step of length zero (a member of a vmapped solve that has
    finished and steps in place while the others go on) runs with a small stand-in
    step, and its caller returns `y0`. Dividing by the zero step would be masked in
    the values but not in their derivatives: 0 · inf is NaN, in the gradient of
    every member (measured: two Robertson-like members with different step counts
    gave a NaN gradient for the one that finished first)."""
    zero = h == 0
    eps = jnp.finfo(jnp.result_type(h)).eps
    return jnp.where(zero, eps * jnp.maximum(1.0, jnp.abs(t0)), h), zero


def _collapsed(h, t0) -> jax.Array:
    """A step so small that a singular `W` cannot be cured by shrinking it."""
    eps = jnp.finfo(jnp.result_type(h)).eps
    return jnp.abs(h) <= 1e3 * eps * jnp.maximum(1.0, jnp.abs(t0))


# ------------------------------------------------------------------- the engine


class _PointwiseInterpolation(diffrax.AbstractLocalInterpolation):
    """A local interpolation given by its value at a point (`at`); the increment
    over an interval is the difference of two values."""

    def at(self, t):
        raise NotImplementedError

    def evaluate(self, t0, t1=None, left=True):
        del left
        if t1 is not None:
            return jtu.tree_map(lambda a, b: b - a, self.at(t0), self.at(t1))
        return self.at(t0)


def _fraction(t, t0, t1) -> jax.Array:
    """`(t − t0) / (t1 − t0)`, and 0 on a step of length zero (see `_in_place`)."""
    span = t1 - t0
    zero = span == 0
    return jnp.where(zero, 0, (t - t0) / jnp.where(zero, 1, span))


class _RosenbrockInterpolation(_PointwiseInterpolation):
    """The method's order-4 dense output between `t0` and `t1`:
    `y(t0 + θh) = (1−θ) y0 + θ (y1 + (1−θ)(K1 + θ (K2 + θ K3)))`."""

    t0: jax.Array
    t1: jax.Array
    y0: Any
    y1: Any
    K: Any  # pytree like y, each leaf with a leading axis of 3

    def at(self, t):
        th = _fraction(t, self.t0, self.t1)

        def leaf(y0, y1, K):
            th_ = th.astype(y0.dtype)
            inner = K[0] + th_ * (K[1] + th_ * K[2])
            return (1 - th_) * y0 + th_ * (y1 + (1 - th_) * inner)

        return jtu.tree_map(leaf, self.y0, self.y1, self.K)


class _LinearlyImplicit(diffrax.AbstractAdaptiveSolver):
    """What every Rosenbrock method here shares: any diffrax term (the user's ODE,
    or the adjoint system of `adjoint="backsolve"`), an optional analytic `jac`,
    no state between steps."""

    term_structure: ClassVar = diffrax.AbstractTerm
    jac: Callable | None = None

    def init(self, terms, t0, t1, y0, args):
        return None

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


class AbstractRosenbrock(_LinearlyImplicit):
    """A stiffly accurate Rosenbrock–Wanner method given by its `tableau`.

    **Arguments:**

    - `jac`: optional analytic Jacobian `jac(t, y, args) -> (n, n)` of the vector
      field with respect to the state (flattened, for a pytree state); by default
      `jax.jacfwd`.
    - `mass`: optional constant mass matrix `M` of shape `(n, n)` for
      `M dy/dt = f(t, y, args)`, possibly singular (index-1 DAEs).
    """

    tableau: ClassVar[RosenbrockTableau]
    interpolation_cls: ClassVar[Callable[..., _RosenbrockInterpolation]] = (
        _RosenbrockInterpolation)
    mass: Any = None

    def order(self, terms):
        return self.tableau.order

    def error_order(self, terms):
        return self.tableau.order  # the embedded solution has order p - 1

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        tab = self.tableau
        lin = _linearise(terms, t0, t1, y0, args, self.jac)
        flat0 = lin.y0
        dtype = flat0.dtype
        h, in_place = _in_place((t1 - t0).astype(dtype), t0)
        mass = None if self.mass is None else jnp.asarray(self.mass, dtype)
        identity = jnp.eye(flat0.size, dtype=dtype)
        solve = _lu_solver((identity if mass is None else mass) / (h * tab.gamma)
                           - lin.J)
        ks = []
        for i in range(tab.stages):
            u = _combine(flat0, tab.a[i], ks)
            rhs = lin.f0 if i == 0 else lin.field(t0 + tab.c[i] * h, u)
            memory = _combine(None, tab.C[i], ks)
            if memory is not None:
                rhs = rhs + (memory if mass is None else mass @ memory) / h
            if lin.dfdt is not None and tab.d[i] != 0:
                rhs = rhs + (tab.d[i] * h) * lin.dfdt
            ks.append(solve(rhs))
        flat1 = u + ks[-1]
        error = ks[-1]
        # a singular W at a step too small to shrink (an index > 1 DAE, a Jacobian
        # that is not finite): end with a result code, not NaNs or endless rejections
        singular = (~jnp.all(jnp.isfinite(ks[0])) & jnp.all(jnp.isfinite(lin.f0))
                    & _collapsed(h, t0))
        flat1 = jnp.where(singular | in_place, flat0, flat1)
        error = jnp.where(singular | in_place, 0, error)
        result = diffrax.RESULTS.where(singular, diffrax.RESULTS.singular,
                                       diffrax.RESULTS.successful)
        stacked = jnp.stack([_combine(jnp.zeros_like(flat0), row, ks) for row in tab.H])
        K = jax.vmap(lin.unravel)(stacked)
        dense = dict(y0=y0, y1=lin.unravel(flat1), K=K)
        return lin.unravel(flat1), lin.unravel(error), dense, None, result


def _combine(base, coeffs, ks):
    """`base + Σ coeffs[j] ks[j]` over the non-zero coefficients (`None` for none)."""
    out = base
    for coeff, k in zip(coeffs, ks):
        if coeff != 0:
            out = coeff * k if out is None else out + coeff * k
    return out


class Rodas5P(AbstractRosenbrock):
    """Steinebach's Rodas5P (BIT Numer. Math. 2023): an 8-stage, L-stable,
    stiffly accurate Rosenbrock method of order 5 with an order-4 error estimate
    and an order-4 dense output; more robust than Rodas5 at tight tolerances and
    with inexact Jacobians. jaxode's default stiff solver: `solver="rodas5p"` or
    `solver="stiff"`. For stiff ODEs and, with `mass`, index-1 DAEs."""

    tableau: ClassVar[RosenbrockTableau] = RODAS5P


class Rodas5(AbstractRosenbrock):
    """Di Marzo's Rodas5 (1993): an 8-stage, L-stable, stiffly accurate Rosenbrock
    method of order 5 with an order-4 error estimate and dense output.
    `solver="rodas5"`."""

    tableau: ClassVar[RosenbrockTableau] = RODAS5


# ------------------------------------------------------------------- Rosenbrock23

_D = 1.0 / (2.0 + math.sqrt(2.0))
_E32 = 6.0 + math.sqrt(2.0)


class _Rosenbrock23Interpolation(_PointwiseInterpolation):
    t0: jax.Array
    t1: jax.Array
    y0: object
    k1: object  # h · k1 and h · k2, as pytrees like y
    k2: object

    def at(self, t):
        s = _fraction(t, self.t0, self.t1)
        w1 = s * (1 - s) / (1 - 2 * _D)
        w2 = s * (s - 2 * _D) / (1 - 2 * _D)
        return jtu.tree_map(lambda y, a, b: (y + w1 * a + w2 * b).astype(y.dtype),
                            self.y0, self.k1, self.k2)


class Rosenbrock23(_LinearlyImplicit):
    """Shampine's L-stable Rosenbrock method of order 2 with an order-3 error
    estimate (MATLAB's `ode23s`; "The MATLAB ODE suite", SIAM J. Sci. Comput. 18,
    1997): for stiff problems at moderate tolerances (`rtol` 1e-3 ... 1e-6).
    `solver="rosenbrock23"`; `jac` as for `Rodas5P`.

    With `d = 1/(2 + √2)`, `W = I − h d J`:

        k1 = W⁻¹ (f(t, y) + h d T)
        k2 = W⁻¹ (f(t + h/2, y + h k1/2) − k1) + k1
        y1 = y + h k2                                  (order 2, L-stable)
        k3 = W⁻¹ (f(t + h, y1) − e32 (k2 − f1) − 2 (k1 − f0) + h d T),  e32 = 6 + √2
        error = h (k1 − 2 k2 + k3) / 6                 (from the order-3 companion)

    The interpolant between steps is the method's own,
    `y(t + s h) = y + h (s(1−s) k1 + s(s−2d) k2) / (1 − 2d)`.
    """

    interpolation_cls: ClassVar[Callable[..., _Rosenbrock23Interpolation]] = (
        _Rosenbrock23Interpolation)

    def order(self, terms):
        return 2

    def error_order(self, terms):
        return 3

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        lin = _linearise(terms, t0, t1, y0, args, self.jac)
        flat0 = lin.y0
        h = (t1 - t0).astype(flat0.dtype)
        f = lin.field
        solve = _lu_solver(jnp.eye(flat0.size, dtype=flat0.dtype) - (h * _D) * lin.J)
        hdT = 0 if lin.dfdt is None else (h * _D) * lin.dfdt
        f0 = lin.f0
        k1 = solve(f0 + hdT)
        f1 = f(t0 + h / 2, flat0 + (h / 2) * k1)
        k2 = solve(f1 - k1) + k1
        flat1 = flat0 + h * k2
        f2 = f(t1, flat1)
        k3 = solve(f2 - _E32 * (k2 - f1) - 2 * (k1 - f0) + hdT)
        error = (h / 6) * (k1 - 2 * k2 + k3)
        dense = dict(y0=y0, k1=lin.unravel(h * k1), k2=lin.unravel(h * k2))
        return (lin.unravel(flat1), lin.unravel(error), dense, None,
                diffrax.RESULTS.successful)
