"""Train an ODE-Net on scikit-learn's 8x8 digits and report its depth (NFE).

    python examples/odenet.py            # 20 epochs, a few minutes on a laptop CPU
    python examples/odenet.py --steps 5  # a smoke run
"""

import argparse

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import jaxode as jo
import jaxode.data

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=20 * 22, help="training steps")
parser.add_argument("--channels", type=int, default=32)
ns = parser.parse_args()

x_train, y_train, x_test, y_test = jaxode.data.digits()
model = jo.nn.ODENet(ns.channels, solver="dopri5", rtol=1e-3, atol=1e-3,
                     adjoint="backsolve", count_nfe=True, key=jr.PRNGKey(0))
print(f"ODE-Net with {jo.nn.count_params(model):,} parameters")

warmup = min(22, ns.steps // 2)  # one epoch of 22 batches
schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, warmup,
                                              max(ns.steps, warmup + 1))
counter = model.ode.counter  # counts evaluations of the vector field at run time


def loss(m, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()


def show(step, model, value):
    if (step - 1) % 50 == 0 or step == ns.steps:
        # backsolve: every backward evaluation also evaluates f once more
        print(f"step {step - 1:4d}  loss {value:.3f}  NFE forward "
              f"{counter.forward - counter.backward}, backward {counter.backward}")
    counter.reset()  # the counts of one step


model, history = jo.train(model, loss, (x_train, y_train),
                          optimizer=optax.adamw(schedule), steps=ns.steps,
                          batch_size=64, key=jr.PRNGKey(1), callback=show,
                          progress=False)

pred = eqx.filter_jit(lambda m, x: jnp.argmax(m(x), -1))(model, x_test)
print(f"test error: {100 * float(np.mean(np.asarray(pred) != y_test)):.2f} %")
