"""An SBML file as an `OdeModel`: libsbml reads it, `sbmlmath` turns its MathML into
sympy, and the reaction network becomes `dy/dt = rhs(t, y, p)`.

What an SBML id means in math is what the model's symbol for it holds: a species
with `hasOnlySubstanceUnits=false` is a concentration (its state obeys
`d[S]/dt = sum(stoichiometry * rate) / size(compartment)`, a kinetic law being in
amount per time), one with `hasOnlySubstanceUnits=true` an amount. Every symbol is
`sympy.Symbol(id, real=True)`, as in `petab`'s formulas, and time is
`sympy.Symbol("time", real=True)`, PEtab's name for it.

Each compartment, species and parameter becomes exactly one of:

- a state: a non-constant species without an assignment rule (a boundary species
  without a rate rule has `d/dt = 0`), or a variable of a rate rule;
- an assignment (`OdeModel.assignments`): a variable of an assignment rule, or a
  constant with an initial assignment (its value, an expression in `parameters`);
- a parameter: anything else (non-constant parameters without rules included), in
  SBML order: compartments, parameters, constant species.

Function definitions are expanded and the local parameters of kinetic laws become
parameters named `<reaction id>_<parameter id>` (libsbml's converters). Events,
algebraic rules, `delay`, `rateOf`, fast reactions, stoichiometries that rules
change, conversion factors and compartments whose size changes with species in them
are refused with a `ValueError` naming the feature, the element and the file.
Constraints do not change a simulation and are ignored.
"""

import math
from collections.abc import Callable
from pathlib import Path

import libsbml
import sbmlmath
import sympy as sp
from sympy.core.function import AppliedUndef

from ._symbolic import OdeModel

__all__ = ["import_sbml", "model_symbol", "state_index", "parameter_index"]

_TIME_URL = "http://www.sbml.org/sbml/symbols/time"
_AVOGADRO_URL = "http://www.sbml.org/sbml/symbols/avogadro"
_AVOGADRO = sp.Float(6.02214076e23)
_CONVERTERS = {"expandFunctionDefinitions": "expand the function definitions",
               "promoteLocalParameters": "promote the local parameters"}


def import_sbml(path) -> OdeModel:
    """Read the SBML model in `path` as an `OdeModel`.

    **Arguments:**

    - `path`: an SBML file (levels 2 and 3, core only).

    **Returns:** an `OdeModel`: `states` in order (species in SBML order, then the
    compartments and parameters that rate rules change, in rule order);
    `parameters` in SBML order (compartments, parameters, constant species) with
    `defaults` the values the file gives (`nan` where it gives none); `initial` in
    `parameters` only, evaluated at time 0.

    **Raises:** `ValueError` for a file that is missing or not valid SBML, or that
    uses a feature this reader does not support (the message names the feature, the
    element id and the file).
    """
    path = Path(path)
    doc = _read(path)
    model = doc.getModel()
    t = sp.Symbol("time", real=True)
    _check_features(model, path)
    if model.getElementBySId(t.name) is not None:
        _refuse(path, "SBML ids that PEtab reserves for time", t.name)

    def parse(element, where):
        return _parse(element, where, path, t)

    rules = {r.getVariable(): r for r in model.getListOfRules()}
    rule_math = {v: parse(r, f"rule for '{v}'") for v, r in rules.items()}
    assigned = {v for v, r in rules.items() if r.isAssignment()}
    rated = [v for v, r in rules.items() if r.isRate()]
    inits = {a.getSymbol(): parse(a, f"initial assignment for '{a.getSymbol()}'")
             for a in model.getListOfInitialAssignments()}
    rates, fluxes = _reactions(model, parse)
    _check_rules(model, path, set(rules))

    species = list(model.getListOfSpecies())
    states = [s.getId() for s in species
              if not s.getConstant() and s.getId() not in assigned]
    states += [v for v in rated if v not in states]
    entities = ([(c.getId(), c.getConstant()) for c in model.getListOfCompartments()]
                + [(p.getId(), p.getConstant()) for p in model.getListOfParameters()]
                + [(s.getId(), True) for s in species if s.getConstant()])
    fixed_by_init = [i for i, _ in entities
                     if i in inits and i not in assigned and i not in states]
    params = [i for i, _ in entities
              if i not in assigned and i not in states and i not in inits]
    start = _start_values(model)

    sym = _symbol
    at_zero = {sym(v): rule_math[v].xreplace({t: 0}) for v in assigned}
    at_zero |= {sym(r): e.xreplace({t: 0}) for r, e in rates.items()}
    at_zero |= {sym(i): inits[i] for i in fixed_by_init}
    at_zero |= {sym(i): inits.get(i, start.get(i)) for i in states}
    at_zero = _resolve(at_zero, path)

    defs = {sym(v): rule_math[v] for v in assigned}
    defs |= {sym(i): at_zero[sym(i)] for i in fixed_by_init}
    defs |= {sym(r): e for r, e in rates.items()}
    defs = _resolve(defs, path)

    rhs = [rule_math[i] if i in rated else _species_rhs(model.getSpecies(i), fluxes)
           for i in states]
    values = {sym(i): start[i] for i in params}
    defaults = tuple(_number(start[i].xreplace(at_zero).xreplace(values))
                     for i in params)
    kept = {sym(v) for v in assigned} | {sym(i) for i in fixed_by_init}
    initial = tuple(at_zero[sym(i)] for i in states)
    _check_closed(initial, {sym(i) for i in params}, states, path)
    return OdeModel(t=t, states=tuple(map(sym, states)),
                    parameters=tuple(map(sym, params)), defaults=defaults,
                    rhs=tuple(sp.sympify(e).xreplace(defs) for e in rhs),
                    initial=initial,
                    assignments={s: e for s, e in defs.items() if s in kept})


def model_symbol(model: OdeModel, sbml_id: str) -> sp.Symbol:
    """The symbol of an SBML id (a species, compartment, parameter, promoted local
    parameter `<reaction>_<parameter>`, or assignment-rule variable) in `model`.

    **Raises:** `ValueError` when `model` has no state, parameter or assignment of
    that id.
    """
    symbol = _symbol(sbml_id)
    if (symbol in model.states or symbol in model.parameters
            or symbol in model.assignments or symbol == model.t):
        return symbol
    raise ValueError(f"`sbml_id`: the model has no state, parameter or assignment "
                     f"'{sbml_id}'")


def state_index(model: OdeModel, sbml_id: str) -> int:
    """The position of the state `sbml_id` in `model.states` (and in `y`).

    **Raises:** `ValueError` when `sbml_id` is not a state of `model`.
    """
    return _index(model.states, sbml_id, "state")


def parameter_index(model: OdeModel, sbml_id: str) -> int:
    """The position of the parameter `sbml_id` in `model.parameters` (and in `p`).

    **Raises:** `ValueError` when `sbml_id` is not a parameter of `model`.
    """
    return _index(model.parameters, sbml_id, "parameter")


def _index(symbols, sbml_id, kind):
    try:
        return symbols.index(_symbol(sbml_id))
    except ValueError:
        names = ", ".join(s.name for s in symbols[:8])
        more = ", ..." if len(symbols) > 8 else ""
        raise ValueError(f"`sbml_id`: '{sbml_id}' is not a {kind} of the model "
                         f"({kind}s: {names}{more})") from None


def _symbol(sbml_id: str) -> sp.Symbol:
    return sp.Symbol(sbml_id, real=True)


def _read(path: Path) -> libsbml.SBMLDocument:
    if not path.is_file():
        raise ValueError(f"`path`: no SBML file at {path}")
    doc = libsbml.readSBMLFromFile(str(path))
    for i in range(doc.getNumErrors()):
        error = doc.getError(i)
        if error.getSeverity() >= libsbml.LIBSBML_SEV_ERROR:
            raise ValueError(f"{path}: not valid SBML (line {error.getLine()}: "
                             f"{error.getMessage().strip()})")
    if doc.getModel() is None:
        raise ValueError(f"{path}: the SBML document has no model")
    for i in range(doc.getNumPlugins() if doc.getLevel() >= 3 else 0):
        name = doc.getPlugin(i).getPackageName()
        if name != "l3v2extendedmath" and doc.getPackageRequired(name):
            raise ValueError(f"{path}: the SBML package '{name}' is not supported")
    for option, what in _CONVERTERS.items():
        props = libsbml.ConversionProperties()
        props.addOption(option, True)
        if doc.convert(props) != libsbml.LIBSBML_OPERATION_SUCCESS:
            raise ValueError(f"{path}: libsbml could not {what}")
    return doc


def _refuse(path, feature: str, element_id: str = "", where: str = ""):
    at = f"in the {where}" if where else f"'{element_id}'"
    raise ValueError(f"{path}: {feature} are not supported ({at})")


def _label(element, index: int, kind: str) -> str:
    return element.getIdAttribute() or element.getMetaId() or f"{kind} {index + 1}"


def _check_features(model, path):
    """Refuse what an ODE right-hand side cannot say."""
    for i, event in enumerate(model.getListOfEvents()):
        _refuse(path, "SBML events", _label(event, i, "event"))
    for i, rule in enumerate(model.getListOfRules()):
        if rule.isAlgebraic():
            label = _label(rule, i, "rule")
            _refuse(path, "SBML algebraic rules",
                    f"{label}: 0 = {libsbml.formulaToL3String(rule.getMath())}")
    if model.isSetConversionFactor():
        _refuse(path, "SBML conversion factors", model.getConversionFactor())
    for s in model.getListOfSpecies():
        if s.isSetConversionFactor():
            _refuse(path, "SBML conversion factors", s.getId())
    for r in model.getListOfReactions():
        if r.isSetFast() and r.getFast():
            _refuse(path, "SBML fast reactions", r.getId())
        if not r.isSetKineticLaw() or not r.getKineticLaw().isSetMath():
            _refuse(path, "SBML reactions without a kinetic law", r.getId())
        for ref in [*r.getListOfReactants(), *r.getListOfProducts()]:
            if ref.isSetStoichiometryMath():
                _refuse(path, "SBML stoichiometryMath elements",
                        f"{r.getId()}: {ref.getSpecies()}")


def _check_rules(model, path, variables: set):
    """Refuse rules on stoichiometries and compartments that change with species."""
    known = {e.getId() for e in [*model.getListOfCompartments(),
                                 *model.getListOfSpecies(),
                                 *model.getListOfParameters()]}
    for v in variables - known:
        _refuse(path, "SBML rules on species references (stoichiometries)", v)
    for s in model.getListOfSpecies():
        if s.getCompartment() in variables:
            _refuse(path, "SBML non-constant compartment sizes (a rule changes the "
                    "size of a compartment with species in it)", s.getCompartment())


def _parse(element, where: str, path, t: sp.Symbol) -> sp.Expr:
    """The math of `element` in sympy: SBML time is `t`, `avogadro` a number."""
    if not element.isSetMath():
        raise ValueError(f"{path}: the {where} has no math")
    expr = sbmlmath.sbml_math_to_sympy(element, evaluate=True, ignore_units=True,
                                       symbol_kwargs={"real": True})
    for call in expr.atoms(AppliedUndef):
        url = getattr(call.func, "definition_url", None)
        feature = (f"SBML '{url.rsplit('/', 1)[-1]}' functions" if url
                   else f"calls of the undefined function '{call.func}'")
        _refuse(path, feature, where=where)
    swap = {}
    for c in expr.atoms(sbmlmath.CSymbol):
        if c.definition_url == _TIME_URL:
            swap[c] = t
        elif c.definition_url == _AVOGADRO_URL:
            swap[c] = _AVOGADRO
        else:
            _refuse(path, f"SBML symbols '{c.definition_url}'", where=where)
    return expr.xreplace(swap)


def _reactions(model, parse: Callable) -> tuple[dict, dict]:
    """`({reaction id: rate}, {species id: sum(stoichiometry * rate)})`, rates in
    amount per time (each kinetic law's math)."""
    rates, fluxes = {}, {}
    for r in model.getListOfReactions():
        rate = parse(r.getKineticLaw(), f"kinetic law of reaction '{r.getId()}'")
        rates[r.getId()] = rate
        for refs, sign in ((r.getListOfReactants(), -1), (r.getListOfProducts(), 1)):
            for ref in refs:
                n = ref.getStoichiometry()
                n = sp.Integer(1) if math.isnan(n) else sp.nsimplify(n)
                s = ref.getSpecies()
                fluxes[s] = fluxes.get(s, 0) + sign * n * rate
    return rates, fluxes


def _species_rhs(species, fluxes: dict) -> sp.Expr:
    """`d/dt` of what the species id means: its amount, or its concentration (the
    net flux over the compartment size)."""
    if species.getBoundaryCondition():
        return sp.Integer(0)
    flux = sp.sympify(fluxes.get(species.getId(), 0))
    if species.getHasOnlySubstanceUnits():
        return flux
    return flux / _symbol(species.getCompartment())


def _start_values(model) -> dict:
    """`{id: value}` as the file gives it, in what the id means in math (species:
    concentration or amount, converted through the compartment symbol)."""
    nan = sp.nan
    values = {c.getId(): sp.Float(c.getSize()) if c.isSetSize() else nan
              for c in model.getListOfCompartments()}
    values |= {p.getId(): sp.Float(p.getValue()) if p.isSetValue() else nan
               for p in model.getListOfParameters()}
    for s in model.getListOfSpecies():
        volume = _symbol(s.getCompartment())
        amounts = s.getHasOnlySubstanceUnits()
        if s.isSetInitialConcentration():
            c = sp.Float(s.getInitialConcentration())
            values[s.getId()] = c * volume if amounts else c
        elif s.isSetInitialAmount():
            a = sp.Float(s.getInitialAmount())
            values[s.getId()] = a if amounts else a / volume
        else:
            values[s.getId()] = nan
    return values


def _resolve(defs: dict, path) -> dict:
    """`defs` (symbol -> expression) with every defined symbol in the expressions
    replaced, recursively, by its definition."""
    done = {}

    def expand(symbol, chain):
        if symbol in done:
            return done[symbol]
        if symbol in chain:
            loop = " -> ".join(s.name for s in (*chain, symbol))
            raise ValueError(f"{path}: rules or initial values form a cycle: {loop}")
        expr = sp.sympify(defs[symbol])
        inner = {s: expand(s, (*chain, symbol)) for s in expr.free_symbols
                 if s in defs}
        done[symbol] = expr.xreplace(inner)
        return done[symbol]

    for symbol in defs:
        expand(symbol, ())
    return done


def _number(expr) -> float:
    expr = sp.sympify(expr)
    return math.nan if expr.has(sp.nan) or expr.free_symbols else float(expr)


def _check_closed(initial, params: set, states, path):
    for i, expr in zip(states, initial):
        extra = expr.free_symbols - params
        if extra:
            names = ", ".join(sorted(s.name for s in extra))
            raise ValueError(f"{path}: the initial value of '{i}' depends on "
                             f"{names}, which is not a parameter")
