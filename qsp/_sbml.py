r"""SBML import: `load_sbml(path)` -> a `qsp.ODEModel`.

The model is read with python-libsbml (levels 2 and 3 core; function definitions are
expanded and local parameters promoted to global ones named `<reaction>_<parameter>`
by libsbml's converters) and its math is carried as sympy expressions
(`qsp._sbml_math`). The result is an instance of a class built for this model: an
`ODEModel` whose fields are the SBML values and whose `states` are SBML ids.

**Fields (parameters).** Every compartment, species and parameter with a value is a
field named by its SBML id (ids that are Python keywords or clash with `ODEModel`
attributes get a trailing `_`; `model.sbml_names` maps ids to fields). A species'
field is its initial value as written in the file (amount or concentration). Initial
assignments and assignment rules override fields as SBML says.

**States.** Species amounts $n_s$ (for every non-boundary species changed by reactions
or a rate rule, and any species, compartment or parameter that a rate rule or an event
changes). With reaction rates $v_r$ (kinetic laws, substance/time) and stoichiometries
$\nu_{sr}$, $\dot n_s = \sum_r \nu_{sr} v_r$. A species whose `hasOnlySubstanceUnits`
is false appears in math as its concentration $n_s / V_c$. A rate rule on such a
species gives $\dot n_s = V_c\,\dot{[s]} + [s]\,\dot V_c$.

**Outputs.** Every SBML symbol by id (species in the unit the model uses for them:
concentration unless `hasOnlySubstanceUnits`), plus reaction rates by reaction id.

**Events.** Time-triggered events (`time >= T`, `time > T`, `T <= time`, ... with `T`
free of states) cut the simulation: `qsp.simulate_sbml` integrates to `T`, applies the
assignments (all evaluated before any is applied, SBML's semantics without delay) and
restarts. Such a model refuses `qsp.simulate` (its `initial()` raises with a message
pointing to `qsp.simulate_sbml`), so events are never silently dropped.

**Unsupported** (an `UnsupportedSBML` error naming the element): algebraic rules, fast
reactions, delays, `rateOf`, state-triggered events, events with delays or
priorities, conversion factors, stoichiometries that are assigned, and SBML packages.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import os
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from ._model import ODEModel
from ._params import _META_KEY, param
from ._sbml_math import TIME, Compiled, UnsupportedSBML, symbol, to_sympy

_RESERVED = set(dir(ODEModel)) | {"events_applied", "sbml_names", "initial_values"}


def _field_name(sid: str) -> str:
    return sid + "_" if keyword.iskeyword(sid) or sid in _RESERVED or sid.startswith("_") else sid


@dataclasses.dataclass
class _Event:
    id: str
    when: Compiled  # event time as a function of the initial env
    strict: bool  # `time > T` (observation at T sees the value before the event)
    assignments: list  # (target id, Compiled)


@dataclasses.dataclass
class _Spec:
    """Everything static about one SBML model (built once by `load_sbml`)."""

    ids: list  # SBML ids with a field, in field order
    fields: dict  # id -> field name
    states: tuple
    kind: dict  # id -> "species" | "compartment" | "parameter"
    comp_of: dict  # species id -> compartment id
    conc: dict  # species id -> True if its symbol is a concentration
    raw_amount: dict  # species id -> True if its field holds an amount
    init_order: list  # (id, Compiled) evaluated in order at t0
    rule_order: list  # (id, Compiled) assignment rules, evaluated in order
    rates: list  # (reaction id, Compiled, [(species id, stoich)])
    rate_rules: dict  # id -> Compiled
    events: list
    outputs: tuple  # output names


def _toposort(exprs: dict, where: str) -> list:
    """(id, expr) in an order where each comes after the ids it uses."""
    out, done, busy = [], set(), set()

    def visit(k):
        if k in done:
            return
        if k in busy:
            raise UnsupportedSBML(f"{where}: {k!r} depends on itself (a cycle of rules).")
        busy.add(k)
        for s in exprs[k].free_symbols:
            if s.name in exprs:
                visit(s.name)
        busy.discard(k)
        done.add(k)
        out.append(k)

    for k in exprs:
        visit(k)
    return out


def _read(source):
    import libsbml as L

    text = str(source)
    if isinstance(source, os.PathLike) or (not text.lstrip().startswith("<") and os.path.exists(text)):
        doc = L.readSBMLFromFile(str(source))
    elif text.lstrip().startswith("<"):
        doc = L.readSBMLFromString(text)
    else:
        raise FileNotFoundError(f"SBML file {text!r} does not exist.")
    errors = [doc.getError(i) for i in range(doc.getNumErrors())]
    fatal = [e for e in errors if e.getSeverity() >= L.LIBSBML_SEV_ERROR]
    if fatal or doc.getModel() is None:
        msg = fatal[0].getMessage().strip() if fatal else "no <model> element"
        raise ValueError(f"SBML {text[:80]!r} could not be read: {msg}")
    for i in range(doc.getNumPlugins()):
        pkg = doc.getPlugin(i).getPackageName()
        # A package marked required changes the model's meaning; others (layout, ...)
        # can be ignored by SBML's own rules.
        if pkg != "l3v2extendedmath" and doc.getLevel() == 3 and doc.getPackageRequired(pkg):
            raise UnsupportedSBML(f"SBML package {pkg!r} (required by the document) is not supported.")
    for opt in ("expandFunctionDefinitions", "promoteLocalParameters"):
        props = L.ConversionProperties()
        props.addOption(opt, True)
        if doc.convert(props) != L.LIBSBML_OPERATION_SUCCESS:
            raise ValueError(f"libsbml could not apply the {opt} conversion to this model.")
    return doc.getModel()


def _spec(m) -> tuple[_Spec, dict, dict]:
    """(spec, field defaults, field descriptions) of a libsbml Model."""
    if m.isSetConversionFactor():
        raise UnsupportedSBML(f"model {m.getId()!r}: conversionFactor is not supported.")
    kind, value, const, desc = {}, {}, {}, {}
    comp_of, conc, raw_amount, boundary = {}, {}, {}, {}
    for c in m.getListOfCompartments():
        cid = c.getId()
        kind[cid], const[cid] = "compartment", c.getConstant()
        dims = c.getSpatialDimensionsAsDouble() if c.isSetSpatialDimensions() else 3.0
        value[cid] = c.getSize() if c.isSetSize() else (1.0 if dims == 0 or m.getLevel() < 3 else math.nan)
        desc[cid] = f"compartment {c.getName() or cid} (size)"
    for s in m.getListOfSpecies():
        sid = s.getId()
        if s.isSetConversionFactor():
            raise UnsupportedSBML(f"species {sid!r}: conversionFactor is not supported.")
        kind[sid], const[sid] = "species", s.getConstant()
        comp_of[sid] = s.getCompartment()
        conc[sid] = not s.getHasOnlySubstanceUnits()
        boundary[sid] = s.getBoundaryCondition()
        if s.isSetInitialAmount():
            value[sid], raw_amount[sid] = s.getInitialAmount(), True
        elif s.isSetInitialConcentration():
            value[sid], raw_amount[sid] = s.getInitialConcentration(), False
        else:
            value[sid], raw_amount[sid] = math.nan, not conc[sid]
        desc[sid] = f"species {s.getName() or sid}: initial {'amount' if raw_amount[sid] else 'concentration'}"
    for p in m.getListOfParameters():
        pid = p.getId()
        kind[pid], const[pid] = "parameter", p.getConstant()
        value[pid] = p.getValue() if p.isSetValue() else math.nan
        desc[pid] = f"parameter {p.getName() or pid}"

    # -- rules, initial assignments ------------------------------------------------------
    assign, rate_rules = {}, {}
    for i, r in enumerate(m.getListOfRules()):
        if r.isAlgebraic():
            raise UnsupportedSBML(f"algebraic rule #{i + 1} ({libsbml_formula(r)}) is not supported: "
                                  "qsp integrates ODEs, not DAEs.")
        v = r.getVariable()
        if v not in kind:
            raise UnsupportedSBML(f"rule for {v!r}: only compartments, species and parameters can be "
                                  "rule variables (assigned stoichiometries are not supported).")
        expr = to_sympy(r.getMath(), f"{'assignment' if r.isAssignment() else 'rate'} rule for {v!r}")
        (assign if r.isAssignment() else rate_rules)[v] = expr
    init = {}
    for ia in m.getListOfInitialAssignments():
        v = ia.getSymbol()
        if v not in kind:
            raise UnsupportedSBML(f"initial assignment to {v!r}: only compartments, species and parameters "
                                  "are supported (assigned stoichiometries are not).")
        init[v] = to_sympy(ia.getMath(), f"initial assignment to {v!r}")

    # -- reactions ----------------------------------------------------------------------
    changed = set(rate_rules)
    reactions = []
    for r in m.getListOfReactions():
        rid = r.getId()
        if r.isSetFast() and r.getFast():
            raise UnsupportedSBML(f"reaction {rid!r} is fast (fast='true'): fast reactions are not supported.")
        if not r.isSetKineticLaw() or not r.getKineticLaw().isSetMath():
            raise UnsupportedSBML(f"reaction {rid!r} has no kinetic law.")
        law = to_sympy(r.getKineticLaw().getMath(), f"kinetic law of reaction {rid!r}")
        terms = {}
        for sign, refs in ((-1.0, r.getListOfReactants()), (1.0, r.getListOfProducts())):
            for ref in refs:
                if ref.isSetStoichiometryMath() or (ref.isSetId() and (ref.getId() in assign or ref.getId() in init
                                                                       or ref.getId() in rate_rules)):
                    raise UnsupportedSBML(f"species reference {ref.getId() or ref.getSpecies()!r} in reaction "
                                          f"{rid!r}: assigned stoichiometry is not supported.")
                st = ref.getStoichiometry() if ref.isSetStoichiometry() else 1.0
                if not math.isfinite(st):
                    st = 1.0
                sid = ref.getSpecies()
                terms[sid] = terms.get(sid, 0.0) + sign * st
        terms = [(s, v) for s, v in terms.items() if not boundary[s] and v != 0.0]
        for s, _ in terms:
            if const[s]:
                raise UnsupportedSBML(f"species {s!r} is constant but not a boundary species, and reaction "
                                      f"{rid!r} changes it.")
            changed.add(s)
        reactions.append((rid, law, terms))

    # -- events -------------------------------------------------------------------------
    events_raw = []
    for i, e in enumerate(m.getListOfEvents()):
        eid = e.getId() or f"#{i + 1}"
        if e.isSetDelay():
            raise UnsupportedSBML(f"event {eid!r} has a delay: delayed events are not supported.")
        if e.isSetPriority():
            raise UnsupportedSBML(f"event {eid!r} has a priority: event priorities are not supported.")
        trig = to_sympy(e.getTrigger().getMath() if e.isSetTrigger() else None, f"trigger of event {eid!r}")
        asg = []
        for a in e.getListOfEventAssignments():
            v = a.getVariable()
            if v not in kind:
                raise UnsupportedSBML(f"event {eid!r} assigns {v!r}, which is not a compartment, species "
                                      "or parameter (assigned stoichiometries are not supported).")
            asg.append((v, to_sympy(a.getMath(), f"assignment to {v!r} in event {eid!r}")))
            changed.add(v)
        events_raw.append((eid, trig, asg))

    ids = list(kind)
    states = [i for i in ids if i in changed and i not in assign]
    for v in assign:
        if v in rate_rules:
            raise UnsupportedSBML(f"{v!r} has both an assignment rule and a rate rule.")
    state_set = set(states)

    # The symbol value of each species from its raw field / amount state.
    derived_init = {}
    for s in (i for i in ids if kind[i] == "species"):
        raw, c = symbol("__raw__" + s), symbol(comp_of[s])
        if conc[s] and raw_amount[s]:
            derived_init[s] = raw / c
        elif not conc[s] and not raw_amount[s]:
            derived_init[s] = raw * c
        else:
            derived_init[s] = raw
    init_exprs = {}
    for i in ids:
        if i in assign:
            init_exprs[i] = assign[i]
        elif i in init:
            init_exprs[i] = init[i]
        elif kind[i] == "species":
            init_exprs[i] = derived_init[i]
        else:
            init_exprs[i] = symbol("__raw__" + i)
    for rid, law, _ in reactions:  # a reaction id in math is its rate
        init_exprs[rid] = law
    order = _toposort(init_exprs, "initial values")
    init_order = [(i, Compiled(init_exprs[i], f"initial value of {i!r}")) for i in order]
    for i in ids:
        if kind[i] == "compartment" or kind[i] == "species" or kind[i] == "parameter":
            if math.isnan(value[i]) and i not in assign and i not in init:
                raise UnsupportedSBML(f"{kind[i]} {i!r} has no value, initial assignment or assignment rule.")

    # Values during the run: amount states -> symbol values, then assignment rules.
    run_exprs = dict(assign)
    for s in states:
        if kind[s] == "species" and conc[s]:
            run_exprs[s] = symbol("__amt__" + s) / symbol(comp_of[s])
    for rid, law, _ in reactions:
        run_exprs[rid] = law
    rule_order = [(i, Compiled(run_exprs[i], f"assignment rule for {i!r}")) for i in _toposort(run_exprs, "assignment rules")]
    rates = [(rid, Compiled(law, f"kinetic law of reaction {rid!r}"), terms) for rid, law, terms in reactions]
    rr = {}
    for v, expr in rate_rules.items():
        if kind[v] == "species" and conc[v] and comp_of[v] in assign:
            raise UnsupportedSBML(f"rate rule for concentration species {v!r} in compartment {comp_of[v]!r}, "
                                  "whose size follows an assignment rule, is not supported.")
        rr[v] = Compiled(expr, f"rate rule for {v!r}")

    # What varies during a run: states, time, and whatever rules or rates read them.
    varying = set(state_set) | {TIME.name}
    grew = True
    while grew:
        grew = False
        for k, ex in run_exprs.items():
            if k not in varying and {x.name for x in ex.free_symbols} & (varying | {"__amt__" + s for s in states}):
                varying.add(k)
                grew = True
    events = []
    for eid, trig, asg in events_raw:
        when, strict = _time_trigger(trig, eid, varying)
        events.append(_Event(eid, Compiled(sp.sympify(when), f"trigger of event {eid!r}"), strict,
                             [(v, Compiled(ex, f"assignment to {v!r} in event {eid!r}")) for v, ex in asg]))

    fields = {i: _field_name(i) for i in ids}
    spec = _Spec(ids=ids, fields=fields, states=tuple(states), kind=kind, comp_of=comp_of, conc=conc,
                 raw_amount=raw_amount, init_order=init_order, rule_order=rule_order, rates=rates,
                 rate_rules=rr, events=events, outputs=tuple(ids) + tuple(r[0] for r in rates))
    # A value fixed by a rule or initial assignment may be absent from the file: its
    # field is then 0 (unused) rather than NaN, which simulate would reject.
    return spec, {i: 0.0 if math.isnan(value[i]) else float(value[i]) for i in ids}, desc


def libsbml_formula(rule) -> str:
    import libsbml as L

    return L.formulaToL3String(rule.getMath()) if rule.isSetMath() else "no math"


def _time_trigger(trig, eid, varying):
    """(T, strict) of a trigger `time >= T` / `time > T` (either side), else an error."""
    rel = {sp.GreaterThan: (False, 1), sp.StrictGreaterThan: (True, 1),
           sp.LessThan: (False, -1), sp.StrictLessThan: (True, -1)}
    if type(trig) in rel:
        strict, sign = rel[type(trig)]
        lhs, rhs = trig.lhs, trig.rhs
        # time on the big side: `time >= T` or `T <= time`
        if sign == 1 and lhs == TIME:
            other = rhs
        elif sign == -1 and rhs == TIME:
            other = lhs
        else:
            other = None
        if other is not None and TIME not in other.free_symbols and not {s.name for s in other.free_symbols} & varying:
            return other, strict
    raise UnsupportedSBML(
        f"event {eid!r} has trigger {str(trig).replace(TIME.name, 'time')}, which is not a time trigger (time >= T with T constant): "
        "state-triggered events are not supported."
    )


# -- the model class ---------------------------------------------------------------------------


class SBMLModel(ODEModel):
    """Base of the classes `load_sbml` builds; see `qsp._sbml`."""

    _spec: ClassVar[_Spec]
    sbml_names: ClassVar[dict] = {}
    #: Whether time events are handled outside (by `simulate_sbml`).
    events_applied: bool = eqx.field(default=False, static=True)

    # -- evaluation ----------------------------------------------------------------------

    def _raw(self) -> dict:
        return {"__raw__" + i: jnp.asarray(getattr(self, f), dtype=float) for i, f in self._spec.fields.items()}

    def initial_values(self) -> dict:
        """Every SBML symbol's value at the start (initial assignments and rules applied)."""
        env = self._raw()
        env["__time__"] = jnp.asarray(0.0)
        for i, fn in self._spec.init_order:
            env[i] = jnp.asarray(fn(env), dtype=float)
        return env

    def _env(self, t, y, env0=None) -> dict:
        spec = self._spec
        env = dict(self.initial_values() if env0 is None else env0)
        env["__time__"] = t
        for k, s in enumerate(spec.states):
            if spec.kind[s] == "species" and spec.conc[s]:
                env["__amt__" + s] = y[k]
            else:
                env[s] = y[k]
        for i, fn in spec.rule_order:
            env[i] = fn(env)
        return env

    def initial(self):
        spec = self._spec
        if spec.events and not self.events_applied:
            raise UnsupportedSBML(
                f"{type(self).__name__} has time events ({', '.join(e.id for e in spec.events)}); "
                "simulate it with qsp.simulate_sbml(model, ts), which applies them."
            )
        return self._amounts(self.initial_values())

    def _amounts(self, env):
        spec = self._spec
        out = []
        for s in spec.states:
            v = env[s]
            if spec.kind[s] == "species" and spec.conc[s]:
                v = v * env[spec.comp_of[s]]
            out.append(jnp.asarray(v, dtype=float))
        return jnp.stack(out) if out else jnp.zeros(0)

    def rhs(self, t, y):
        spec = self._spec
        env = self._env(t, y)
        d = {s: 0.0 for s in spec.states}
        for rid, law, terms in spec.rates:
            v = env[rid]
            for s, st in terms:
                d[s] = d[s] + st * v
        for s, fn in spec.rate_rules.items():
            rate = fn(env)
            if spec.kind[s] == "species" and spec.conc[s]:
                c = spec.comp_of[s]
                dV = spec.rate_rules[c](env) if c in spec.rate_rules else 0.0
                rate = rate * env[c] + env[s] * dV
            d[s] = rate
        return jnp.stack([jnp.asarray(d[s], dtype=float) * jnp.ones(()) for s in spec.states]) if spec.states \
            else jnp.zeros(0)

    def outputs(self, t, y):
        env = self._env(t, y)
        return {i: env[i] for i in self._spec.outputs}


def load_sbml(source, name: str | None = None) -> SBMLModel:
    """An `ODEModel` instance from an SBML file path (or an SBML string).

    Parameters, compartments and species are fields named by SBML id (see
    `type(model).sbml_names`), states are SBML ids; unsupported constructs raise
    `UnsupportedSBML` naming the element. Models with time events are simulated with
    `qsp.simulate_sbml`."""
    m = _read(source)
    spec, values, desc = _spec(m)
    ns = {"__annotations__": {}, "_spec": spec, "states": spec.states,
          "sbml_names": dict(spec.fields), "__module__": __name__}
    for i in spec.ids:
        f = spec.fields[i]
        ns["__annotations__"][f] = float
        ns[f] = param(values[i], description=desc[i], source=f"SBML {m.getId() or 'model'}")
    cls_name = name or "".join(ch if ch.isalnum() else "_" for ch in (m.getId() or "SBMLModel"))
    if not cls_name[:1].isalpha():
        cls_name = "SBML_" + cls_name
    cls = type(cls_name, (SBMLModel,), ns)
    return cls()


def simulate_sbml(model: SBMLModel, ts, regimen=None, *, t0: float = 0.0, **kwargs):
    """`qsp.simulate` for an SBML model, applying its time events.

    Without events this is `qsp.simulate(model, regimen, ts, t0=t0, **kwargs)`. With
    events, the horizon is cut at each event time `T` (computed from the model's values,
    so it must be concrete): integrate to `T`, apply the event's assignments, restart.
    A save time equal to `T` sees the state after the event for `time >= T` triggers and
    before it for `time > T`. Dosing regimens are not combined with events."""
    from ._simulate import simulate
    from ._solution import Solution

    spec = type(model)._spec
    if not spec.events:
        return simulate(model, regimen, ts, t0=t0, **kwargs)
    if regimen is not None:
        raise ValueError("simulate_sbml: a regimen cannot be combined with SBML events; "
                         "write the doses as SBML events instead.")
    ts = np.asarray(ts, dtype=float)
    if ts.ndim != 1:
        raise ValueError(f"simulate_sbml: ts must be 1-D for a model with events; got shape {ts.shape}.")
    env0 = model.initial_values()
    try:
        times = [(float(e.when(env0)), e) for e in spec.events]
    except jax.errors.ConcretizationTypeError:
        raise ValueError("simulate_sbml: event times must be concrete (not traced) values.") from None
    for T, e in times:
        if T <= t0:  # SBML's initialValue decides whether it fires at t0: not modelled
            raise UnsupportedSBML(f"event {e.id!r} triggers at time {T:g}, at or before the start t0={t0:g}; "
                                  "events at the start time are not supported.")
    times = sorted([(T, e) for T, e in times if T <= ts[-1]], key=lambda x: x[0])
    m = dataclasses.replace(model, events_applied=True)
    y = m.initial()
    t_cur = float(t0)
    parts_y, parts_o, status, steps = [], [], 0, 0
    done = np.zeros(len(ts), bool)
    for T, ev in times:
        sel = ~done & ((ts <= T) if ev.strict else (ts < T))
        seg_ts = np.concatenate([ts[sel], [T]])
        sol = simulate(_restart(m, y), None, seg_ts, t0=t_cur, **kwargs)
        parts_y.append(sol.states[:-1])
        parts_o.append({k: v[:-1] for k, v in sol.outputs.items()})
        status = jnp.maximum(status, sol.status)
        steps = steps + sol.num_steps
        done |= sel
        y = _apply_event(m, ev, T, sol.states[-1], env0)
        t_cur = T
    sel = ~done
    sol = simulate(_restart(m, y), None, ts[sel], t0=t_cur, **kwargs)
    parts_y.append(sol.states)
    parts_o.append(sol.outputs)
    status = jnp.maximum(status, sol.status)
    steps = steps + sol.num_steps
    outs = {k: jnp.concatenate([p[k] for p in parts_o]) for k in parts_o[0]}
    return Solution(ts=jnp.asarray(ts), states=jnp.concatenate(parts_y), outputs=outs, status=status,
                    num_steps=steps, state_names=tuple(spec.states))


_RESTART: dict = {}


def _restart(model, y0):
    """`model` started from state `y0` (between events)."""
    cls = type(model)
    if cls not in _RESTART:
        class Restart(ODEModel):
            base: Any
            # per-trajectory shape (n,): a population axis would come before it
            y0: Any = eqx.field(metadata={_META_KEY: {"shape": (len(cls.states),)}})
            states = cls.states

            def initial(self):
                return self.y0

            def rhs(self, t, y):
                return self.base.rhs(t, y)

            def outputs(self, t, y):
                return self.base.outputs(t, y)

        Restart.__name__ = Restart.__qualname__ = cls.__name__
        _RESTART[cls] = Restart
    return _RESTART[cls](base=model, y0=jnp.asarray(y0, dtype=float))


def _apply_event(model, ev, T, y, env0):
    spec = model._spec
    env = model._env(jnp.asarray(T), y, env0)
    new = {v: fn(env) for v, fn in ev.assignments}  # all evaluated before any is applied
    env = dict(env)
    env.update(new)
    for i, fn in spec.rule_order:  # e.g. a compartment size that follows a rule
        if i not in new and not i.startswith("__"):
            env[i] = fn(env)
    out = []
    for k, s in enumerate(spec.states):
        if s in new or (spec.kind[s] == "species" and spec.conc[s] and spec.comp_of[s] in new):
            if spec.kind[s] == "species" and spec.conc[s]:
                # A concentration assignment sets the amount in the (possibly new) volume;
                # a volume change alone keeps the amount (SBML L3 semantics).
                v = new[s] * env[spec.comp_of[s]] if s in new else y[k]
            else:
                v = new[s]
            out.append(jnp.asarray(v, dtype=float))
        else:
            out.append(y[k])
    return jnp.stack(out)
