"""PEtab problems: an SBML model and the PEtab tables as one compiled objective.

Needs the extra `[petab]` (the `petab` library, `python-libsbml`, `sympy`, `pandas`).
"""

from pathlib import Path

from ._problem import PetabFit as PetabFit, PetabProblem as PetabProblem, load as load

PROBLEMS = Path(__file__).resolve().parent / "problems"

__all__ = ["PROBLEMS", "PetabProblem", "PetabFit", "load"]
