"""The PEtab tables read into index arrays, checked once, on the host.

Every value a table gives (a condition's override, an observable or noise parameter
of a measurement) is a number or the id of a parameter-table entry; `Source` holds
both kinds as arrays (`resolve(source, q)` picks `q[ref]` or the number), so the
compiled program gathers values instead of branching. Errors name the file, the row
(or id), the column and the value.
"""

import dataclasses
import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pandas as pd
import sympy as sp
from petab.v1.math import sympify_petab

from ._symbolic import OdeModel

__all__ = ["Source", "resolve", "Parameters", "Conditions", "Observables",
           "Measurements", "read_parameters", "read_conditions", "read_observables",
           "read_measurements", "SCALES", "TRANSFORMS", "NOISES", "PRIORS"]

SCALES = {"lin": 0, "log": 1, "log10": 2}
TRANSFORMS = {"lin": 0, "log": 1, "log10": 2}
NOISES = {"normal": 0, "laplace": 1}
PRIORS = {"parameterScaleNormal": 0, "parameterScaleLaplace": 1,
          "parameterScaleUniform": 2, "normal": 3, "laplace": 4, "uniform": 5,
          "logNormal": 6, "logLaplace": 7}


class Source(NamedTuple):
    """Values that are numbers (`const`) or parameter-table entries (`q[ref]` where
    `is_ref`), any shape."""

    is_ref: np.ndarray
    ref: np.ndarray
    const: np.ndarray


def resolve(source: Source, q):
    """The values of `source` given the parameter-table vector `q` (natural units)."""
    return jnp.where(source.is_ref, q[source.ref], source.const)


def _empty(cell) -> bool:
    return cell is None or (isinstance(cell, float) and math.isnan(cell)) or (
        isinstance(cell, str) and not cell.strip())


def _value(cell, index: dict, where: str) -> tuple[bool, int, float]:
    """A number, or the id of a parameter-table entry."""
    try:
        return False, 0, float(cell)
    except (TypeError, ValueError):
        pass
    name = str(cell).strip()
    if name in index:
        return True, index[name], 0.0
    raise ValueError(f"{where}: {cell!r} is neither a number nor a parameter id of "
                     "the parameter table.")


def _source(cells: list, index: dict, wheres: list[str]) -> Source:
    parts = [_value(c, index, w) for c, w in zip(cells, wheres)]
    return Source(np.array([p[0] for p in parts], bool),
                  np.array([p[1] for p in parts], np.int32),
                  np.array([p[2] for p in parts], np.float64))


def _choice(table: dict, cell, where: str, default: str) -> int:
    key = default if _empty(cell) else str(cell).strip()
    if key not in table:
        raise ValueError(f"{where}: unknown value {cell!r}; expected one of "
                         f"{sorted(table)}.")
    return table[key]


# ------------------------------------------------------------------ parameters


@dataclasses.dataclass(frozen=True)
class Parameters:
    """The parameter table: `ids` in table order; `scale` (codes of `SCALES`),
    `lower`, `upper`, `nominal` (natural units), `estimate` (bool); `prior` (codes
    of `PRIORS`, -1 for none) and `prior_par` (two numbers each)."""

    ids: tuple[str, ...]
    scale: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    nominal: np.ndarray
    estimate: np.ndarray
    prior: np.ndarray
    prior_par: np.ndarray

    @property
    def index(self) -> dict:
        return {name: i for i, name in enumerate(self.ids)}


def _prior(row, pid: str, file: str) -> tuple[int, tuple[float, float]]:
    kind = row.get("objectivePriorType")
    if _empty(kind):
        return -1, (0.0, 0.0)
    code = _choice(PRIORS, kind, f"{file}, parameter {pid!r}, column "
                   "'objectivePriorType'", "")
    pars = row.get("objectivePriorParameters")
    if _empty(pars) and kind == "parameterScaleUniform":
        s = str(row.get("parameterScale", "lin")).strip()
        lo, hi = float(row["lowerBound"]), float(row["upperBound"])
        return code, (_scaled(lo, s), _scaled(hi, s))
    try:
        values = tuple(float(v) for v in str(pars).split(";"))
    except ValueError:
        values = ()
    if len(values) != 2 or not all(map(math.isfinite, values)):
        raise ValueError(f"{file}, parameter {pid!r}, column "
                         f"'objectivePriorParameters': {pars!r} is not two numbers "
                         "separated by ';'.")
    return code, values


def _scaled(x: float, scale: str) -> float:
    return {"lin": x, "log": math.log(x), "log10": math.log10(x)}[scale]


def read_parameters(df: pd.DataFrame, file: str) -> Parameters:
    """The parameter table (indexed by `parameterId`) as arrays."""
    for column in ("parameterScale", "lowerBound", "upperBound", "estimate"):
        if column not in df.columns:
            raise ValueError(f"{file}: the column {column!r} is missing.")
    scale, prior, prior_par = [], [], []
    for pid, row in df.iterrows():
        scale.append(_choice(SCALES, row["parameterScale"],
                             f"{file}, parameter {pid!r}, column 'parameterScale'",
                             "lin"))
        code, pars = _prior(row, pid, file)
        prior.append(code)
        prior_par.append(pars)
    estimate = np.array([bool(int(e)) for e in df["estimate"]])
    nominal = (df["nominalValue"].to_numpy(float) if "nominalValue" in df.columns
               else np.full(len(df), np.nan))
    lower, upper = df["lowerBound"].to_numpy(float), df["upperBound"].to_numpy(float)
    for i, pid in enumerate(df.index):
        if estimate[i] and not lower[i] < upper[i]:
            raise ValueError(f"{file}, parameter {pid!r}: lowerBound {lower[i]} is "
                             f"not below upperBound {upper[i]}.")
        if estimate[i] and scale[i] and lower[i] <= 0:
            raise ValueError(f"{file}, parameter {pid!r}: lowerBound {lower[i]} is "
                             "not positive, as a log scale needs.")
    return Parameters(tuple(str(i) for i in df.index), np.array(scale, np.int32),
                      lower, upper, nominal, estimate, np.array(prior, np.int32),
                      np.array(prior_par, np.float64).reshape(-1, 2))


# ------------------------------------------------------------------ conditions


@dataclasses.dataclass(frozen=True)
class Conditions:
    """Per condition (rows in `ids` order): the model's parameter vector `p`
    (`Source`, condition x parameter) and the initial-state overrides: `y_has`
    (bool, condition x state) and their values `y`."""

    ids: tuple[str, ...]
    p: Source
    y_has: np.ndarray
    y: Source


def read_conditions(df: pd.DataFrame, ids: list[str], model: OdeModel,
                    params: Parameters, file: str) -> Conditions:
    """The rows `ids` of the condition table (indexed by `conditionId`)."""
    index = params.index
    pnames = [str(s) for s in model.parameters]
    snames = [str(s) for s in model.states]
    for column in df.columns:
        if column != "conditionName" and column not in pnames + snames:
            raise ValueError(f"{file}: the column {column!r} names no parameter, "
                             "compartment or species of the model.")
    p_cells, p_where, y_cells, y_where, y_has = [], [], [], [], []
    for cid in ids:
        row = df.loc[cid] if cid in df.index else pd.Series(dtype=object)
        for j, name in enumerate(pnames):
            cell = row.get(name)
            if _empty(cell):
                cell = name if name in index else model.defaults[j]
            p_cells.append(cell)
            p_where.append(f"{file}, condition {cid!r}, column {name!r}")
        for name in snames:
            cell = row.get(name)
            y_has.append(not _empty(cell))
            y_cells.append(0.0 if _empty(cell) else cell)
            y_where.append(f"{file}, condition {cid!r}, column {name!r}")
    shape_p, shape_y = (len(ids), len(pnames)), (len(ids), len(snames))
    p = _source(p_cells, index, p_where)
    y = _source(y_cells, index, y_where)
    return Conditions(tuple(ids), Source(*(a.reshape(shape_p) for a in p)),
                      np.array(y_has, bool).reshape(shape_y),
                      Source(*(a.reshape(shape_y) for a in y)))


# ----------------------------------------------------------------- observables


@dataclasses.dataclass(frozen=True)
class Observables:
    """The observable table: `ids`; `formula` and `noise` (sympy, in the model's
    `t`, states and parameters, the parameter-table symbols `table` and the
    placeholders `placeholders`); `transform`, `distribution` (codes); for each
    observable the placeholder positions of its observable and noise parameters."""

    ids: tuple[str, ...]
    formula: tuple[sp.Expr, ...]
    noise: tuple[sp.Expr, ...]
    table: tuple[sp.Symbol, ...]
    placeholders: tuple[sp.Symbol, ...]
    transform: np.ndarray
    distribution: np.ndarray
    obs_slots: tuple[tuple[int, ...], ...]
    noise_slots: tuple[tuple[int, ...], ...]


def _placeholders(kind: str, oid: str, exprs) -> list[str]:
    prefix, suffix = kind, f"_{oid}"
    found = {str(s) for e in exprs for s in e.free_symbols}
    numbered = []
    for name in found:
        middle = name[len(prefix):-len(suffix)] if (
            name.startswith(prefix) and name.endswith(suffix)) else ""
        if middle.isdigit():
            numbered.append((int(middle), name))
    numbered.sort()
    if [n for n, _ in numbered] != list(range(1, len(numbered) + 1)):
        raise ValueError(f"observable {oid!r}: the placeholders {sorted(found)} are "
                         f"not numbered {kind}1_{oid}, {kind}2_{oid}, ...")
    return [name for _, name in numbered]


def _canonical(expr, symbols: dict, where: str, allowed: set) -> sp.Expr:
    mapping = {}
    for s in expr.free_symbols:
        name = str(s)
        if name not in symbols and name not in allowed:
            raise ValueError(f"{where}: the symbol {name!r} is neither a model "
                             "variable nor a parameter-table id nor a placeholder "
                             "of this observable.")
        mapping[s] = symbols[name]
    return expr.xreplace(mapping)


def read_observables(df: pd.DataFrame, model: OdeModel, params: Parameters,
                     file: str) -> Observables:
    """The observable table (indexed by `observableId`), its formulas in sympy."""
    symbols = {str(s): s for s in (*model.states, *model.parameters,
                                   *model.assignments)}
    symbols.setdefault("time", model.t)
    symbols.setdefault(str(model.t), model.t)
    table = tuple(sp.Symbol(name) for name in params.ids if name not in symbols)
    symbols.update({str(s): s for s in table})
    ids, formulas, noises, places, slots = [], [], [], [], ([], [])
    transform, distribution = [], []
    for oid, row in df.iterrows():
        where = f"{file}, observable {oid!r}"
        try:
            formula = sympify_petab(row["observableFormula"])
            noise = sympify_petab(row.get("noiseFormula", 1.0))
        except Exception as error:
            raise ValueError(f"{where}: cannot read a formula ({error}).") from error
        noise = noise.xreplace({s: formula for s in noise.free_symbols
                                if str(s) == oid})
        names = (_placeholders("observableParameter", oid, [formula]),
                 _placeholders("noiseParameter", oid, [noise]))
        for group, names_k in zip(slots, names):
            group.append(tuple(range(len(places), len(places) + len(names_k))))
            places.extend(sp.Symbol(n) for n in names_k)
        symbols.update({str(s): s for s in places})
        allowed = set(names[0]) | set(names[1])
        formulas.append(_substitute(model, _canonical(formula, symbols, where,
                                                      allowed)))
        noises.append(_substitute(model, _canonical(noise, symbols, where, allowed)))
        transform.append(_choice(TRANSFORMS, row.get("observableTransformation"),
                                 f"{where}, column 'observableTransformation'", "lin"))
        distribution.append(_choice(NOISES, row.get("noiseDistribution"),
                                    f"{where}, column 'noiseDistribution'", "normal"))
        ids.append(str(oid))
    return Observables(tuple(ids), tuple(formulas), tuple(noises), table,
                       tuple(places), np.array(transform, np.int32),
                       np.array(distribution, np.int32), tuple(slots[0]),
                       tuple(slots[1]))


def _substitute(model: OdeModel, expr: sp.Expr) -> sp.Expr:
    for _ in range(len(model.assignments) + 1):
        new = model.substitute(expr)
        if new == expr:
            break
        expr = new
    return expr


# ---------------------------------------------------------------- measurements


@dataclasses.dataclass(frozen=True)
class Measurements:
    """The measurement table, one entry per row: `observable` (index), `time`
    (`inf` for a steady state), `value`, `experiment` (index into `experiments`,
    the distinct `(preequilibration or None, simulation)` condition pairs) and the
    placeholder values `placeholders` (`Source`, row x placeholder)."""

    observable: np.ndarray
    time: np.ndarray
    value: np.ndarray
    experiment: np.ndarray
    experiments: tuple[tuple[str | None, str], ...]
    placeholders: Source


def _cell_list(cell) -> list:
    if _empty(cell):
        return []
    return [c.strip() if isinstance(c, str) else c for c in str(cell).split(";")] \
        if isinstance(cell, str) else [cell]


def _number(cell, where: str) -> float:
    try:
        return float(cell)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {cell!r} is not a number.") from None


def read_measurements(df: pd.DataFrame, obs: Observables, params: Parameters,
                      condition_ids, file: str) -> Measurements:
    """The measurement table, checked against the observables and conditions."""
    obs_index = {o: i for i, o in enumerate(obs.ids)}
    n_ph = len(obs.placeholders)
    rows = dict(observable=[], time=[], value=[], experiment=[])
    experiments, cells, wheres = {}, [], []
    for i, (_, row) in enumerate(df.iterrows()):
        where = f"{file}, line {i + 2}"
        oid = str(row["observableId"])
        if oid not in obs_index:
            raise ValueError(f"{where}: the observable {oid!r} is not defined in "
                             "the observable table.")
        o = obs_index[oid]
        t = _number(row["time"], f"{where}, column 'time'")
        m = _number(row["measurement"], f"{where}, column 'measurement'")
        if math.isnan(t) or t < 0:
            raise ValueError(f"{where}, column 'time': {row['time']!r} is not a "
                             "time >= 0 (or inf, a steady state).")
        if obs.transform[o] and not m > 0:
            raise ValueError(f"{where}, column 'measurement': {m!r} is not positive, "
                             f"as the {'log' if obs.transform[o] == 1 else 'log10'} "
                             f"transformation of {oid!r} needs.")
        key = _experiment(row, condition_ids, where)
        rows["experiment"].append(experiments.setdefault(key, len(experiments)))
        row_cells = [0.0] * n_ph
        row_where = [where] * n_ph
        for column, slots in (("observableParameters", obs.obs_slots[o]),
                              ("noiseParameters", obs.noise_slots[o])):
            given = _cell_list(row.get(column))
            if len(given) != len(slots):
                raise ValueError(f"{where}, column {column!r}: {row.get(column)!r} "
                                 f"gives {len(given)} values; the observable "
                                 f"{oid!r} has {len(slots)}.")
            for slot, cell in zip(slots, given):
                row_cells[slot] = cell
                row_where[slot] = f"{where}, column {column!r}"
        cells.extend(row_cells)
        wheres.extend(row_where)
        rows["observable"].append(o)
        rows["time"].append(t)
        rows["value"].append(m)
    src = _source(cells, params.index, wheres)
    shape = (len(df), n_ph)
    return Measurements(np.array(rows["observable"], np.int32),
                        np.array(rows["time"], np.float64),
                        np.array(rows["value"], np.float64),
                        np.array(rows["experiment"], np.int32), tuple(experiments),
                        Source(*(a.reshape(shape) for a in src)))


def _experiment(row, condition_ids, where: str) -> tuple[str | None, str]:
    sim = row.get("simulationConditionId")
    pre = row.get("preequilibrationConditionId")
    pre = None if _empty(pre) else str(pre).strip()
    for column, cid in (("simulationConditionId", sim),
                        ("preequilibrationConditionId", pre)):
        if column == "simulationConditionId" and _empty(cid):
            raise ValueError(f"{where}: no simulationConditionId.")
        if cid is not None and str(cid).strip() not in condition_ids:
            raise ValueError(f"{where}, column {column!r}: the condition {cid!r} is "
                             "not in the condition table.")
    return pre, str(sim).strip()
