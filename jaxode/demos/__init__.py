"""Demos run by `jaxode demo NAME`: each module has `run(out, quick) -> dict`.

A demo states what it must achieve as targets, each a number against a bound; the
result dict carries them under `"targets"` and `jaxode demo` exits with status 1 when
one is missed, so a demo that stops working cannot pass for one that works.
"""

import operator
from dataclasses import dataclass

_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


@dataclass(frozen=True)
class Target:
    """`value op bound`, e.g. `Target("LSTM 80-step RMSE", 0.07, "<=", 0.3)`."""

    what: str
    value: float
    op: str
    bound: float

    @property
    def met(self) -> bool:
        return bool(_OPS[self.op](self.value, self.bound))

    def line(self) -> str:
        """One printed line: `target: WHAT: VALUE OP BOUND met|MISSED`; the tests
        read the numbers back from it."""
        return (f"target: {self.what}: {self.value:.6g} {self.op} {self.bound:.6g} "
                f"{'met' if self.met else 'MISSED'}")


def report(targets: list[Target]) -> list[Target]:
    """Print every target's line and return the list (for the result dict)."""
    for target in targets:
        print(target.line())
    return targets
