"""`train`: minibatches, clipping, history, checkpoints and bit-for-bit resume."""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxode as jo
from jaxode._checkpoint import load_checkpoint, save_checkpoint
from jaxode._train import _batch_indices


class Linear(eqx.Module):
    w: jax.Array
    b: jax.Array

    def __call__(self, x):
        return x @ self.w + self.b


def _mse(model, batch):
    x, y = batch
    return jnp.mean((model(x) - y) ** 2)


@pytest.fixture
def regression():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.01 * rng.normal(size=64)
    return x, y


def _model(w=3):
    return Linear(jnp.zeros(w), jnp.zeros(()))


def test_full_batch_recovers_least_squares(regression):
    x, y = regression
    model, hist = jo.train(_model(), _mse, (x, y), optimizer=optax.adam(0.05),
                           steps=600, progress=False)
    coef, *_ = np.linalg.lstsq(np.c_[x, np.ones(64)], y, rcond=None)
    assert np.allclose(np.r_[model.w, model.b], coef, atol=1e-4)
    assert hist["loss"].shape == (600,) and hist["loss"][-1] < 1e-3 * hist["loss"][0]


def test_minibatches_cover_each_epoch_without_repeats():
    key = jax.random.PRNGKey(3)
    seen = np.concatenate([np.asarray(_batch_indices(key, s, 20, 6)) for s in range(3)])
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 18  # 2 rows dropped
    nxt = np.concatenate([np.asarray(_batch_indices(key, s, 20, 6)) for s in range(3, 6)])
    assert not np.array_equal(seen, nxt)  # a fresh permutation in the next epoch


def test_clip_norm_bounds_the_step(regression):
    x, y = regression
    model, hist = jo.train(_model(), _mse, (x, y), optimizer=optax.sgd(1.0), steps=1,
                           clip_norm=0.01, progress=False)
    step = np.sqrt(np.sum(np.asarray(model.w) ** 2) + float(model.b) ** 2)
    assert hist["grad_norm"][0] > 1.0
    assert abs(step - 0.01) < 1e-12


class _Counted:
    """A loss that counts, on the host, how many training steps evaluated it."""

    def __init__(self):
        self.calls = 0

    def _tick(self):
        self.calls += 1

    def __call__(self, model, batch):
        jax.debug.callback(self._tick)
        return _mse(model, batch)


def test_resume_is_bit_for_bit_and_runs_only_the_remaining_steps(regression, tmp_path,
                                                                capsys):
    x, y = regression
    kw = dict(optimizer=optax.adam(0.01), batch_size=16, key=jax.random.PRNGKey(7),
              clip_norm=5.0, progress=False)
    full, hist = jo.train(_model(), _mse, (x, y), steps=23, **kw)
    ckpt = tmp_path / "run.ckpt"
    # "interrupted" after 10 steps (checkpoints at 4, 8 and the end, 10) ...
    first = _Counted()
    jo.train(_model(), first, (x, y), steps=10, checkpoint=ckpt, checkpoint_every=4,
             **kw)
    assert first.calls == 10
    _, step, _ = load_checkpoint(ckpt, (eqx.filter(_model(), eqx.is_inexact_array),
                                        optax.chain(optax.clip_by_global_norm(5.0),
                                                    optax.adam(0.01)).init(
                                            eqx.filter(_model(), eqx.is_inexact_array)),
                                        jax.random.PRNGKey(7)))
    assert step == 10
    capsys.readouterr()
    # ... and resumed with the same command line: it says so, and runs 13 steps
    rest = _Counted()
    resumed, hist2 = jo.train(_model(), rest, (x, y), steps=23, checkpoint=ckpt,
                              checkpoint_every=4, **kw)
    stored, at = jo.load_trained(ckpt, _model(), optax.adam(0.01),
                                 key=jax.random.PRNGKey(7), clip_norm=5.0)
    assert at == 23 and all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(eqx.filter(stored, eqx.is_inexact_array)),
        jax.tree.leaves(eqx.filter(resumed, eqx.is_inexact_array))))
    assert rest.calls == 13
    assert "resuming from checkpoint" in (err := capsys.readouterr().err)
    assert "at step 10 of 23" in err
    assert np.array_equal(resumed.w, full.w) and np.array_equal(resumed.b, full.b)
    assert np.array_equal(hist2["loss"], hist["loss"])
    # a finished checkpoint resumes to the same model without training
    none = _Counted()
    again, _ = jo.train(_model(), none, (x, y), steps=23, checkpoint=ckpt, **kw)
    assert none.calls == 0 and np.array_equal(again.w, full.w)
    assert "already holds all 23 steps" in capsys.readouterr().err


def test_resume_message_names_the_step(regression, tmp_path, capsys):
    x, y = regression
    kw = dict(optimizer=optax.sgd(0.01), progress=False, checkpoint=tmp_path / "c")
    jo.train(_model(), _mse, (x, y), steps=3, **kw)
    capsys.readouterr()
    jo.train(_model(), _mse, (x, y), steps=5, **kw)
    assert "resuming from checkpoint" in (err := capsys.readouterr().err)
    assert "at step 3 of 5" in err


@pytest.mark.parametrize("change", [
    dict(optimizer=optax.adam(0.02)),                     # another learning rate
    dict(optimizer=optax.sgd(0.01)),                      # another optimiser
    dict(optimizer=optax.adam(optax.linear_schedule(0.01, 0.0, 10))),
    dict(batch_size=8),
    dict(clip_norm=1.0),
])
def test_checkpoint_with_other_settings_is_refused(regression, tmp_path, change):
    x, y = regression
    ckpt = tmp_path / "c.ckpt"
    kw = dict(optimizer=optax.adam(0.01), batch_size=16, key=jax.random.PRNGKey(0),
              progress=False, checkpoint=ckpt)
    jo.train(_model(), _mse, (x, y), steps=4, **kw)
    before = ckpt.read_bytes()
    # a state of another shape (sgd has none) is caught by the structure check
    with pytest.raises(ValueError, match="different (training settings|model or "
                                         "optimiser state)"):
        jo.train(_model(), _mse, (x, y), steps=8, **{**kw, **change})
    assert ckpt.read_bytes() == before
    jo.train(_model(), _mse, (x, y), steps=8, **kw)  # the same settings resume


def test_checkpoint_beyond_steps_is_refused(regression, tmp_path):
    x, y = regression
    kw = dict(optimizer=optax.sgd(0.01), progress=False, checkpoint=tmp_path / "c")
    jo.train(_model(), _mse, (x, y), steps=6, **kw)
    with pytest.raises(ValueError, match=r"at step 6, beyond `steps`=4.*steps >= 6"):
        jo.train(_model(), _mse, (x, y), steps=4, **kw)


def test_checkpoint_wrong_model_shape_or_key(regression, tmp_path):
    x, y = regression
    ckpt = tmp_path / "c.ckpt"
    kw = dict(optimizer=optax.adam(0.01), steps=3, progress=False, checkpoint=ckpt)
    jo.train(_model(), _mse, (x, y), **kw)
    before = ckpt.read_bytes()
    with pytest.raises(ValueError, match=r"different model.*\.w.*float64\[3\].*\[4\]"):
        jo.train(_model(4), _mse, (np.c_[x, x[:, :1]], y), **kw)
    with pytest.raises(ValueError, match="different `key`"):
        jo.train(_model(), _mse, (x, y), key=jax.random.PRNGKey(1), **kw)
    assert ckpt.read_bytes() == before


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_checkpoint_is_reported_and_kept(damage, tmp_path):
    ckpt = tmp_path / "c.ckpt"
    tree = {"a": jnp.arange(5.0), "k": jax.random.key(0)}
    save_checkpoint(ckpt, tree, step=4)
    raw = ckpt.read_bytes()
    bad = {"truncate": raw[: len(raw) // 2],
           "flip": raw[:-10] + bytes([raw[-10] ^ 1]) + raw[-9:],
           "garbage": b"not a checkpoint"}[damage]
    ckpt.write_bytes(bad)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_checkpoint(ckpt, tree)
    assert ckpt.read_bytes() == bad
    # an intact file round-trips, typed keys included
    save_checkpoint(ckpt, tree, step=4)
    back, step, _ = load_checkpoint(ckpt, tree)
    assert step == 4 and np.array_equal(back["a"], tree["a"])
    assert np.array_equal(jax.random.key_data(back["k"]), jax.random.key_data(tree["k"]))


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = tmp_path / "c.ckpt"
    save_checkpoint(ckpt, {"a": jnp.ones(3)}, step=1)
    before = ckpt.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(ckpt, {"a": jnp.zeros(3)}, step=2)
    assert ckpt.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.ckpt"]  # no temporary file left behind


def test_bad_arguments_and_nan_loss(regression):
    x, y = regression
    kw = dict(optimizer=optax.sgd(0.1), progress=False)
    with pytest.raises(ValueError, match="steps"):
        jo.train(_model(), _mse, (x, y), steps=0, **kw)
    with pytest.raises(ValueError, match="batch_size.*100.*64"):
        jo.train(_model(), _mse, (x, y), steps=2, batch_size=100, key=jax.random.key(0),
                 **kw)
    with pytest.raises(ValueError, match="`key` is required"):
        jo.train(_model(), _mse, (x, y), steps=2, batch_size=8, **kw)
    with pytest.raises(ValueError, match="leading"):
        jo.train(_model(), _mse, (x, y[:10]), steps=2, **kw)
    with pytest.raises(ValueError, match=r"`data` is empty.*0 samples"):
        jo.train(_model(), _mse, (x[:0], y[:0]), steps=2, **kw)
    with pytest.raises(ValueError, match="`devices` must hold jax devices"):
        jo.train(_model(), _mse, (x, y), steps=2, devices=["cpu:0"], **kw)
    with pytest.raises(ValueError, match="clip_norm"):
        jo.train(_model(), _mse, (x, y), steps=2, clip_norm=-1.0, **kw)
    with pytest.raises(FloatingPointError, match="step 0"):
        jo.train(_model(), lambda m, b: jnp.log(-1.0 - jnp.sum(m.w ** 2)), (x, y),
                 steps=2, **kw)


def test_history_is_a_train_history_read_by_field_or_by_name(regression):
    x, y = regression
    _, hist = jo.train(_model(), _mse, (x, y), optimizer=optax.sgd(0.01), steps=4,
                       progress=False)
    assert isinstance(hist, jo.TrainHistory) and isinstance(hist, eqx.Module)
    assert hist["loss"] is hist.loss and hist["grad_norm"] is hist.grad_norm
    assert hist.loss.shape == hist.grad_norm.shape == (4,)
    with pytest.raises(KeyError, match="'loss' and 'grad_norm', not 'nfe'"):
        hist["nfe"]
    assert repr(hist) == "TrainHistory(loss=f64[4](numpy), grad_norm=f64[4](numpy))"
    assert str(hist).startswith("TrainHistory over 4 steps: loss ")


def _noisy_loss(model, batch, key):
    """No data: the loss is a fresh uniform draw per step, so `history.loss` shows
    the keys `train` gave the loss."""
    return jax.random.uniform(key) + 0.0 * jnp.sum(model.w)


def test_loss_key_gives_each_step_its_own_key_and_resume_draws_the_same(tmp_path):
    kw = dict(optimizer=optax.sgd(0.01), key=jax.random.PRNGKey(5), loss_key=True,
              progress=False)
    _, hist = jo.train(_model(), _noisy_loss, None, steps=12, **kw)
    assert len(set(hist.loss)) == 12  # a new key every step
    _, again = jo.train(_model(), _noisy_loss, None, steps=12, **kw)
    assert np.array_equal(again.loss, hist.loss)  # from `key` and the step alone
    _, other = jo.train(_model(), _noisy_loss, None, steps=12,
                        **{**kw, "key": jax.random.PRNGKey(6)})
    assert not np.intersect1d(other.loss, hist.loss).size
    ckpt = tmp_path / "c.ckpt"
    jo.train(_model(), _noisy_loss, None, steps=5, checkpoint=ckpt, **kw)
    _, resumed = jo.train(_model(), _noisy_loss, None, steps=12, checkpoint=ckpt, **kw)
    assert np.array_equal(resumed.loss, hist.loss)
    with pytest.raises(ValueError, match="`key` is required when `loss_key=True`"):
        jo.train(_model(), _noisy_loss, None, steps=2, optimizer=optax.sgd(0.01),
                 loss_key=True, progress=False)


def test_callback_sees_every_step_its_model_and_loss(regression, tmp_path):
    x, y = regression
    seen = []
    kw = dict(optimizer=optax.adam(0.05), progress=False, checkpoint=tmp_path / "c",
              callback=lambda step, model, loss: seen.append((step, model, loss)))
    model, hist = jo.train(_model(), _mse, (x, y), steps=6, **kw)
    assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5, 6]
    assert [loss for _, _, loss in seen] == list(hist.loss)
    assert np.array_equal(seen[-1][1].w, model.w)
    assert not np.array_equal(seen[0][1].w, model.w)  # the model after each step
    seen.clear()
    jo.train(_model(), _mse, (x, y), steps=8, **kw)  # resumed: the new steps only
    assert [s for s, _, _ in seen] == [7, 8]


def test_a_second_run_with_the_same_loss_and_optimizer_does_not_recompile(regression):
    x, y = regression
    traces = []

    def loss(model, batch):
        traces.append(1)  # runs while tracing only
        return _mse(model, batch)

    kw = dict(optimizer=optax.adam(0.05), steps=3, batch_size=16, progress=False)
    a, _ = jo.train(_model(), loss, (x, y), key=jax.random.PRNGKey(0), **kw)
    b, _ = jo.train(_model(), loss, (x + 1, y), key=jax.random.PRNGKey(1), **kw)
    assert len(traces) == 1 and not np.array_equal(a.w, b.w)
