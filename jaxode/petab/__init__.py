"""PEtab problems: an SBML model and the PEtab tables as one compiled objective.

Needs the extra `[petab]` (the `petab` library, `python-libsbml`, `sympy`, `pandas`).
"""

from pathlib import Path

PROBLEMS = Path(__file__).resolve().parent / "problems"

__all__ = ["PROBLEMS"]
