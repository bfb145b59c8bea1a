"""The classical RK4 tableau as a diffrax solver, so diffrax takes the same steps as
jaxode's `RK4` in the benchmarks (diffrax ships no RK4)."""

import diffrax
import numpy as np


class DiffraxRK4(diffrax.AbstractERK):
    tableau = diffrax.ButcherTableau(
        c=np.array([0.5, 0.5, 1.0]),
        b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
        b_error=np.zeros(4),
        a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
    )
    interpolation_cls = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 4
