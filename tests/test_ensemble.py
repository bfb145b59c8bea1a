"""`ensemble`: equal to a loop of `solve`, padded and sharded correctly, clear errors.

The multi-device and multi-process claims run in subprocesses, because the number of
host devices and `jax.distributed` are fixed when JAX starts.
"""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode as jo
from jaxode.data import COMPETITION_PARAMS, competition

from conftest import FOUR_DEVICES_ENV, run_in_one_process, tree_allclose

ROOT = Path(__file__).resolve().parents[1]
ARGS = {k: jnp.asarray(v) for k, v in COMPETITION_PARAMS.items()}
TS = jnp.linspace(0.0, 40.0, 9)


def _y0s(n):
    return jnp.stack([jnp.linspace(50.0, 200.0, n), jnp.linspace(80.0, 300.0, n)], -1)


def _loop(y0s, args_list=None, **kw):
    out = []
    for i, y0 in enumerate(y0s):
        a = ARGS if args_list is None else args_list[i]
        out.append(jo.solve(competition, y0, TS, a, **kw).ys)
    return jnp.stack(out)


def test_equals_loop_adaptive(dtype):
    n = 3  # padding needs several devices: see the four-device subprocess test
    y0s = _y0s(n)
    tol = 1e-10 if dtype == jnp.float64 else 1e-6
    args = {k: jnp.asarray(v, dtype) for k, v in ARGS.items()}
    sol = jo.ensemble(competition, y0s, jnp.linspace(0.0, 40.0, 9), args, rtol=tol,
                      atol=tol)
    ref = jnp.stack([jo.solve(competition, y0, jnp.linspace(0.0, 40.0, 9), args,
                              rtol=tol, atol=tol).ys for y0 in y0s])
    assert sol.ys.dtype == dtype and sol.ys.shape == (n, 9, 2)
    assert sol.ok.shape == (n,) and bool(jnp.all(sol.ok))
    assert sol.stats["num_steps"].shape == (n,)
    assert sol.ts.shape == (9,)
    err = 1e-12 if dtype == jnp.float64 else 1e-5
    np.testing.assert_allclose(sol.ys, ref, rtol=err, atol=err * 1e3)


def test_fixed_step_with_dt():
    y0s = _y0s(4)
    sol = jo.ensemble(competition, y0s, TS, ARGS, solver="rk4", dt=0.25)
    ref = _loop(y0s, solver="rk4", dt=0.25)
    np.testing.assert_allclose(sol.ys, ref, rtol=1e-12)
    assert int(sol.stats["num_steps"][0]) == 160  # 8 intervals of 5 split into 20


def test_per_member_args():
    y0s = _y0s(4)
    r1 = jnp.array([0.05, 0.1, 0.15, 0.2])
    args = {**ARGS, "r1": r1}
    spec = {k: k == "r1" for k in args}
    sol = jo.ensemble(competition, y0s, TS, args, member_args=spec, solver="rk4")
    ref = _loop(y0s, [{**ARGS, "r1": r} for r in r1], solver="rk4")
    np.testing.assert_allclose(sol.ys, ref, rtol=1e-12, atol=1e-9)
    # all args per member
    full = {k: jnp.full((4,), v) for k, v in ARGS.items()} | {"r1": r1}
    sol2 = jo.ensemble(competition, y0s, TS, full, member_args=True, solver="rk4")
    assert tree_allclose(sol.ys, sol2.ys, rtol=1e-13, atol=0)


def test_pytree_state():
    f = lambda t, y, a: {"x": -a * y["x"], "v": y["x"]}  # noqa: E731
    y0s = {"x": jnp.arange(1.0, 4.0), "v": jnp.zeros(3)}
    sol = jo.ensemble(f, y0s, TS, 0.1, solver="rk4", dt=0.1)
    exact = np.arange(1.0, 4.0)[:, None] * np.exp(-0.1 * np.asarray(TS))
    np.testing.assert_allclose(sol.ys["x"], exact, rtol=1e-9)
    np.testing.assert_allclose(sol.ys["v"], 10 * (exact[:, :1] - exact), rtol=1e-8)


def test_grad_and_jit_match_finite_differences():
    y0s = _y0s(3)

    def loss(y0s):
        return jnp.sum(jo.ensemble(competition, y0s, TS, ARGS, solver="rk4",
                                   dt=0.5).ys[:, -1])

    g = jax.jit(jax.grad(loss))(y0s)
    eps = 1e-3
    e = jnp.zeros_like(y0s).at[1, 0].set(eps)
    fd = (loss(y0s + e) - loss(y0s - e)) / (2 * eps)
    np.testing.assert_allclose(g[1, 0], fd, rtol=1e-5)


def test_no_recompile_on_new_values():
    traces = []

    def f(t, y, args):
        traces.append(1)
        return competition(t, y, args)

    y0s = _y0s(3)
    jo.ensemble(f, y0s, TS, ARGS, rtol=1e-8)
    first = len(traces)
    assert first > 0
    sol = jo.ensemble(f, y0s * 1.1, TS * 0.5, {k: v * 1.01 for k, v in ARGS.items()},
                      rtol=1e-7, atol=1e-6)
    assert len(traces) == first  # new values, same program
    assert bool(jnp.all(sol.ok))


def test_bad_input():
    y0s = _y0s(3)
    with pytest.raises(ValueError, match=r"member axes disagree.*args\['r1'\].*4"):
        jo.ensemble(competition, y0s, TS, {**ARGS, "r1": jnp.ones(4)},
                    member_args={k: k == "r1" for k in ARGS})
    with pytest.raises(ValueError, match="member axes disagree"):
        jo.ensemble(lambda t, y, a: y, {"a": jnp.ones(3), "b": jnp.ones(2)}, TS)
    with pytest.raises(ValueError, match=r"`y0s\[0\]\[0\]` is 1.0, not an array"):
        jo.ensemble(competition, [[1.0, 2.0]], TS, ARGS)
    with pytest.raises(ValueError, match="ensemble is empty"):
        jo.ensemble(competition, jnp.zeros((0, 2)), TS, ARGS)
    with pytest.raises(ValueError, match="`devices` must hold jax devices.*'cpu'"):
        jo.ensemble(competition, y0s, TS, ARGS, devices=["cpu"])
    with pytest.raises(ValueError, match="`devices` must be a list"):
        jo.ensemble(competition, y0s, TS, ARGS, devices=jax.devices()[0])
    with pytest.raises(ValueError, match="`devices` is empty"):
        jo.ensemble(competition, y0s, TS, ARGS, devices=[])
    with pytest.raises(ValueError, match="`devices` must be a list"):
        jo.ensemble(competition, y0s, TS, ARGS, devices="cpu")
    with pytest.raises(ValueError, match=r"`args\['r1'\]` is marked as per-member"):
        jo.ensemble(competition, y0s, TS, {"r1": 0.1}, member_args=True)
    with pytest.raises(ValueError, match=r"`args\['a1'\]` must have a leading member"):
        jo.ensemble(competition, y0s, TS, ARGS, member_args=True)
    with pytest.raises(ValueError, match="`y0s` holds non-finite"):
        jo.ensemble(competition, y0s.at[0, 0].set(jnp.nan), TS, ARGS)
    with pytest.raises(ValueError, match="`ts` must be strictly increasing"):
        jo.ensemble(competition, y0s, TS[::-1], ARGS)
    with pytest.raises(ValueError, match="`solver`='rk5'"):
        jo.ensemble(competition, y0s, TS, ARGS, solver="rk5")


def test_solve_fixed_dt_under_jit():
    """Core fix: a fixed-step solve with `dt` and constant `ts` works inside jit."""
    ts = np.linspace(0.0, 2.0, 5)
    f = lambda t, y, a: -y  # noqa: E731
    eager = jo.solve(f, jnp.ones(2), ts, solver="rk4", dt=0.1).ys
    jitted = jax.jit(lambda y0: jo.solve(f, y0, ts, solver="rk4", dt=0.1).ys)(
        jnp.ones(2))
    np.testing.assert_allclose(jitted, eager, rtol=1e-14)
    h = 0.1  # RK4 multiplies y by the degree-4 Taylor polynomial of exp(-h) per step
    np.testing.assert_allclose(jitted[-1], (1 - h + h**2 / 2 - h**3 / 6 + h**4 / 24)
                               ** 20, rtol=1e-13)


def _decay(t, y, k):
    return -k * y


def test_jit_ensemble_with_numpy_ts_and_dt():
    """A NumPy `ts` closed over by an outer `jit` is a constant: `dt` plans the steps
    as it does without `jit`, for equal spans and for unequal ones (the grid is
    then part of the program). Only a traced `ts` with `dt` is refused."""
    y0s = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    ks = jnp.array([0.5, 1.0, 2.0])
    kw = dict(member_args=True, solver="rk4", dt=0.1)
    h = 0.1  # both grids take 20 RK4 steps of 0.1 (5 + 5 + 5 + 5; 3 + 7 + 10)
    taylor = 1 - ks * h + (ks * h) ** 2 / 2 - (ks * h) ** 3 / 6 + (ks * h) ** 4 / 24
    for ts in (np.linspace(0.0, 2.0, 5), np.array([0.0, 0.3, 1.0, 2.0])):
        eager = jo.ensemble(_decay, y0s, ts, ks, **kw)
        jitted = jax.jit(lambda y0s, ks, ts=ts: jo.ensemble(_decay, y0s, ts, ks, **kw)
                         )(y0s, ks)
        np.testing.assert_allclose(jitted.ys, eager.ys, rtol=1e-14)
        np.testing.assert_allclose(jitted.ts, ts, rtol=0)
        assert list(jitted.stats["num_steps"]) == [20, 20, 20]
        np.testing.assert_allclose(jitted.ys[:, -1], y0s * taylor[:, None] ** 20,
                                   rtol=1e-13)
    with pytest.raises(ValueError, match="fixed-step ensemble with `dt` needs "
                                         "concrete `ts`.*`substeps=k`"):
        jax.jit(lambda ts: jo.ensemble(_decay, y0s, ts, ks, **kw))(
            jnp.linspace(0.0, 2.0, 5))


def test_non_finite_device_inputs_keep_their_messages():
    """Device arrays are checked on the device; a bad one still gets the message
    the host check writes (argument, leaf and values), also when it is a constant
    closed over by an outer `jit`."""
    y0s = _y0s(4)
    r1 = jnp.array([0.05, 0.1, 0.15, 0.2])
    spec = {k: k == "r1" for k in ARGS}
    bad = y0s.at[1, 0].set(jnp.nan)
    cases = [
        (lambda: jo.ensemble(competition, bad, TS, ARGS),
         ("`y0s` holds non-finite values: [[ 50. , 80. ], [ nan, 153.333333], "
          "[150. , 226.666667], [200. , 300. ]].")),
        (lambda: jax.jit(lambda r: jo.ensemble(
            competition, bad, TS, {**ARGS, "r1": r}, member_args=spec))(r1),
         "`y0s` holds non-finite values: [[ 50. , 80. ], [ nan,"),
        (lambda: jo.ensemble(competition, y0s, TS, {**ARGS, "r1": r1.at[2].set(
            jnp.inf)}, member_args=spec),
         "`args['r1']` holds non-finite values: [0.05, 0.1 , inf, 0.2 ]."),
        (lambda: jo.ensemble(competition, y0s, TS, {**ARGS, "a1": np.array(np.nan)}),
         "`args['a1']` holds non-finite values: nan."),
        (lambda: jo.ensemble(lambda t, y, a: y, {"a": y0s, "b": y0s.at[3, 1].set(
            -jnp.inf)}, TS),
         ("`y0s['b']` holds non-finite values: [[ 50. , 80. ], [100. , 153.333333], "
          "[150. , 226.666667], [200. , -inf]].")),
        (lambda: jo.ensemble(competition, y0s, TS.at[3].set(jnp.nan), ARGS),
         "`ts` holds non-finite values: [ 0., 5., 10., ..., 30., 35., 40.]."),
        (lambda: jo.ensemble(competition, y0s, TS.at[4].set(1.0), ARGS),
         "`ts` must be strictly increasing; ts[3]=15.0 and ts[4]=1.0."),
        (lambda: jo.ensemble(competition, y0s, TS.reshape(3, 3), ARGS),
         "`ts` must be 1-D, got shape (3, 3)."),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value).startswith(message), (str(info.value), message)


def test_device_inputs_are_neither_copied_nor_moved(monkeypatch):
    """With `y0s`, `args` and `ts` on the device, `ensemble` checks them there and
    leaves them where they are: under `jax.transfer_guard("disallow")` an implicit
    transfer (a host copy put back on the device) raises, and the host checks
    are handed no device array (on a CPU, reading one is not a guarded transfer)."""
    from jaxode import _ensemble

    handed = []

    def spy(real):
        def check(arg, value, *rest, **kw):
            handed.extend(jax.tree_util.tree_leaves(value))
            return real(arg, value, *rest, **kw)
        return check

    for name in ("check_finite", "check_times"):
        monkeypatch.setattr(_ensemble, name, spy(getattr(_ensemble, name)))
    y0s, ks, ts = _y0s(4) / 100, jnp.array([0.5, 1.0, 1.5, 2.0]), TS / 40
    for kw in (dict(), dict(solver="rk4", substeps=4)):
        ref = jo.ensemble(_decay, y0s, ts, ks, member_args=True, **kw)  # compiles
        with jax.transfer_guard("disallow"):
            sol = jo.ensemble(_decay, y0s, ts, ks, member_args=True, **kw)
        np.testing.assert_array_equal(sol.ys, ref.ys)
        # exp(-k): adaptive at rtol 1e-6 is off by 6e-7, RK4 with h = 1/32 by 3e-7
        np.testing.assert_allclose(sol.ys[:, -1], y0s * jnp.exp(-ks)[:, None],
                                   rtol=2e-6)
    assert not [x for x in handed if isinstance(x, jax.Array)], handed


# ------------------------------------------------------------------- subprocesses


FOUR_DEVICES = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import jaxode as jo
from jaxode.data import COMPETITION_PARAMS, competition
assert len(jax.devices()) == 4, jax.devices()
args = {k: jnp.asarray(v) for k, v in COMPETITION_PARAMS.items()}
ts = jnp.linspace(0.0, 40.0, 9)
one = [jax.devices()[0]]
adaptive, fixed = dict(rtol=1e-10, atol=1e-10), dict(solver="rk4", dt=0.5)
for n, kw in [(1, fixed), (3, fixed), (5, fixed), (8, fixed), (5, adaptive)]:
        y0s = jnp.stack([jnp.linspace(50., 200., n), jnp.linspace(80., 300., n)], -1)
        r1 = jnp.linspace(0.05, 0.2, n)
        a = {**args, "r1": r1}
        spec = {k: k == "r1" for k in a}
        sh = jo.ensemble(competition, y0s, ts, a, member_args=spec, **kw)
        ref = jo.ensemble(competition, y0s, ts, a, member_args=spec, devices=one, **kw)
        assert sh.ys.shape == (n, 9, 2), sh.ys.shape
        got, want = np.asarray(sh.ys), np.asarray(ref.ys)
        err = float(np.max(np.abs(got - want)))
        assert err <= 1e-12 * float(np.max(np.abs(want))), (n, kw, err)
        assert np.array_equal(sh.stats["num_steps"], ref.stats["num_steps"])
        assert len(sh.ys.sharding.device_set) == 4
        shards = sorted((s.index[0].start or 0, s.data.shape[0], s.device.id)
                        for s in sh.ys.addressable_shards)
        if n == 8:  # divisible: stays split, 2 members per device
            assert [s[1] for s in shards] == [2, 2, 2, 2], shards
            assert len({s[2] for s in shards}) == 4, shards
        else:  # padding dropped: gathered
            assert all(s[1] == n for s in shards), shards
        print("ok", n, kw.get("solver", "tsit5"), err, shards)

# inputs already split (members) or replicated (the rest) over the mesh are checked
# there and stay there: no implicit transfer, and no move between devices
P, mesh = jax.sharding.PartitionSpec, jo.member_mesh()
split, whole = (jax.sharding.NamedSharding(mesh, p) for p in (P("members"), P()))
y0s = jnp.stack([jnp.linspace(50., 200., 8), jnp.linspace(80., 300., 8)], -1)
a = {**args, "r1": jnp.linspace(0.05, 0.2, 8)}
spec = {k: k == "r1" for k in a}
placed = (jax.device_put(y0s, split), jax.device_put(ts, whole),
          {k: jax.device_put(v, split if spec[k] else whole) for k, v in a.items()})
kw = dict(member_args=spec, solver="rk4", substeps=10)
ref = jo.ensemble(competition, y0s, ts, a, devices=one, **kw)
jo.ensemble(competition, *placed, **kw)  # compiles
with jax.transfer_guard("disallow"), \
        jax.transfer_guard_device_to_device("disallow_explicit"):
    sh = jo.ensemble(competition, *placed, **kw)
assert np.array_equal(np.asarray(sh.ys), np.asarray(ref.ys))
assert [s.data.shape[0] for s in sh.ys.addressable_shards] == [2, 2, 2, 2]
print("ok placed inputs stay")
"""


FOUR_DEVICES_FIT_TRAIN = """
import jax, jax.numpy as jnp, numpy as np, equinox as eqx, optax
jax.config.update("jax_enable_x64", True)
import jaxode as jo
from jaxode.data import COMPETITION_PARAMS, competition
assert len(jax.devices()) == 4, jax.devices()
one = [jax.devices()[0]]

# fit(multistart=5): the starts split over 4 devices (padded to 8) = one device
ts = np.linspace(0.0, 40.0, 9)
truth = {k: jnp.asarray(v) for k, v in COMPETITION_PARAMS.items()}
rk4 = dict(solver="rk4", dt=0.5)  # fixed steps: a short compile
ys = np.asarray(jo.solve(competition, jnp.array([100.0, 150.0]), ts, truth, **rk4).ys)
guess = {k: v * 1.3 for k, v in COMPETITION_PARAMS.items()}
kw = dict(ts=ts, ys=ys, y0=np.array([100.0, 150.0]), positive=True, steps=30,
          polish=5, multistart=5, key=jax.random.key(0), progress=False, **rk4)
sharded = jo.fit(competition, guess, **kw)
single = jo.fit(competition, guess, devices=one, **kw)
assert sharded.starts_losses.shape == (5,), sharded.starts_losses
np.testing.assert_allclose(sharded.starts_losses, single.starts_losses, rtol=1e-9)
for k in guess:
    np.testing.assert_allclose(sharded.params[k], single.params[k], rtol=1e-9)
print("ok fit", sharded.starts_losses)

# train(devices=...): every minibatch split by rows over the 4 devices
key = jax.random.key(1)
x = jax.random.normal(key, (64, 3))
y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.1
model = eqx.nn.Linear(3, 1, key=jax.random.key(2))
shardings = []

def loss(m, batch):
    jax.debug.inspect_array_sharding(batch[0], callback=shardings.append)
    return jnp.mean((jax.vmap(m)(batch[0])[:, 0] - batch[1]) ** 2)

run = lambda **kw: jo.train(model, loss, (x, y), optimizer=optax.adam(5e-2), steps=40,
                            batch_size=16, key=key, progress=False, **kw)
m4, h4 = run()  # devices=None: every device of this process, as in fit and ensemble
assert shardings[0].shard_shape((16, 3)) == (4, 3), shardings
m1, h1 = run(devices=one)
assert shardings[-1].shard_shape((16, 3)) == (16, 3), shardings
np.testing.assert_allclose(h4["loss"], h1["loss"], rtol=1e-10)
np.testing.assert_allclose(m4.weight, m1.weight, rtol=1e-10)
assert h4["loss"][-1] < 0.5 * h4["loss"][0]
try:
    jo.train(model, loss, (x, y), optimizer=optax.adam(1e-2), steps=1, batch_size=10,
             key=key, progress=False, devices=jax.devices())
    raise AssertionError("no error for a batch that does not divide")
except ValueError as e:
    assert "batch_size`=10" in str(e) and "4 devices" in str(e), e
m10, _ = jo.train(model, loss, (x, y), optimizer=optax.adam(1e-2), steps=1,
                 batch_size=10, key=key, progress=False, devices=one)
print("ok train", h4["loss"][[0, -1]])
"""


def test_four_host_devices_ensemble_fit_train_and_example(tmp_path):
    # one process (starting Python and JAX takes seconds): the ensemble checks, fit's
    # multistart and train's data parallelism against one device, then
    # examples/ensemble.py as a user runs it (64-bit mode off)
    checks, results = run_in_one_process(
        [("ensemble", ROOT / "examples" / "ensemble.py",
          ["--members", "8", "--out", "."])],
        env={**os.environ, **FOUR_DEVICES_ENV}, cwd=tmp_path, timeout=180,
        preamble=textwrap.dedent(FOUR_DEVICES + FOUR_DEVICES_FIT_TRAIN))
    assert checks.count("ok ") == 8, checks
    example_out, code = results["ensemble"]
    assert code == "0", example_out[-3000:]
    assert ("8 members on 4 device(s): ys (8, 101, 2), members per device "
            "[2, 2, 2, 2]") in example_out, example_out
    assert "all ok: True" in example_out
    assert (tmp_path / "ensemble_example.png").stat().st_size > 5000


TWO_PROCESSES = """
import sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                           initialization_timeout=60)
from jax.experimental import multihost_utils
import jaxode as jo
from jaxode.data import COMPETITION_PARAMS, competition
assert jax.process_count() == 2 and len(jax.devices()) == 2
args = {k: jnp.asarray(v) for k, v in COMPETITION_PARAMS.items()}
ts = jnp.linspace(0.0, 40.0, 9)
results = {}
# adaptive: the members' shared while-loop stops by a reduction across processes
for n, kw in [(6, dict(rtol=1e-10, atol=1e-10)), (5, dict(solver="rk4", dt=0.5))]:
    y0s = np.stack([np.linspace(50., 200., n), np.linspace(80., 300., n)], -1)
    # devices=None is this process's devices; jax.devices() spans both processes
    sol = jo.ensemble(competition, y0s, ts, args, devices=jax.devices(), **kw)
    mine = [(s.index[0].start or 0, s.data.shape[0]) for s in sol.ys.addressable_shards]
    if n == 6:  # each process holds and computes only its own half
        assert mine == [(3 * pid, 3)], mine
    results[f"ys{n}"] = np.asarray(multihost_utils.process_allgather(sol.ys, tiled=True))
    results[f"steps{n}"] = np.asarray(
        multihost_utils.process_allgather(sol.stats["num_steps"], tiled=True))
np.savez(f"{out}/proc{pid}.npz", **results)
print("done", pid, mine)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(TWO_PROCESSES))
    port = str(_free_port())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, str(script), str(i), port,
                               str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=240))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the two-process run did not finish in 240 s")
    for p, (so, se) in zip(procs, outs):
        if p.returncode != 0 and "collectives" in se.lower() and (
                "not implemented" in se.lower() or "unsupported" in se.lower()):
            pytest.skip("this jaxlib cannot run CPU collectives: "
                        + se.strip().splitlines()[-1])
        assert p.returncode == 0, se[-3000:]
    for n, kw in [(6, dict(rtol=1e-10, atol=1e-10)), (5, dict(solver="rk4", dt=0.5))]:
        y0s = _y0s(n)
        ref = jo.ensemble(competition, y0s, TS, ARGS, **kw)
        for pid in range(2):
            got = np.load(tmp_path / f"proc{pid}.npz")
            np.testing.assert_allclose(got[f"ys{n}"], ref.ys, rtol=1e-12, atol=1e-10)
            np.testing.assert_array_equal(got[f"steps{n}"], ref.stats["num_steps"])


def test_devices_mean_the_same_everywhere():
    # one module builds the mesh and pads the batch for ensemble, fit and train
    from jaxode import _sharding

    assert _sharding.resolve_devices(None) == jax.local_devices()
    mesh = jo.member_mesh()
    assert mesh.axis_names == ("members",) and mesh.size == len(jax.local_devices())
    one = [jax.devices()[0]]
    assert _sharding.resolve_devices(one) == one
    for bad, words in [(jax.devices()[0], "single device"), ([], "empty"),
                       ("cpu", "list of jax devices"), ([1], "holds 1"),
                       (one * 2, "twice")]:
        with pytest.raises(ValueError, match=words):
            _sharding.resolve_devices(bad)
    # padding repeats the last entry, on the host and in JAX alike
    host = np.arange(6.0).reshape(3, 2)
    assert np.array_equal(_sharding.pad(host, 5)[3:], [[4.0, 5.0], [4.0, 5.0]])
    assert isinstance(_sharding.pad(host, 5), np.ndarray)
    padded = jax.jit(lambda x: _sharding.pad(x, 4))(jnp.asarray(host))
    assert np.array_equal(np.asarray(padded)[3], [4.0, 5.0])
    assert _sharding.pad(host, 3) is host
    four = type("Mesh", (), {"size": 4})()
    assert [_sharding.padded_size(n, four) for n in (1, 4, 5, 8)] == [4, 4, 8, 8]
