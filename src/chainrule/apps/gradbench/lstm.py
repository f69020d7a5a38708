"""gradbench ``lstm``: ADBench's character-level LSTM loss over a text and its gradient with
respect to all parameters (main then extra, row-major, as one flat vector) by reverse mode.

The recurrence is sequential in time, but layer i at time t only needs layer i − 1 at time t and
layer i at time t − 1, so all layers advance together along the anti-diagonals (a wavefront):
c + l − 2 steps on (l, b) arrays instead of (c − 1)·l steps on b-vectors. Layers that have not
started yet, or have finished, keep their state (a mask, needed only in the first and last
l − 1 steps). The output layer and the loss are applied to all time steps at once at the end.
"""

from __future__ import annotations

import numpy as np

from ... import numpy as cnp
from ... import transforms
from .common import EvalFunction, floats, to_list


def loss(main_params, extra_params, state, sequence):
    layers = main_params.shape[0] // 2
    b = sequence.shape[1]
    steps = sequence.shape[0] - 1
    weights = main_params[0::2]  # (l, 4b): forget, ingate, outgate, change
    biases = main_params[1::2]
    in_weight, out_weight, out_bias = extra_params[0], extra_params[1], extra_params[2]
    hidden = state[0::2]  # (l, b)
    cell = state[1::2]
    scaled_inputs = sequence[:steps] * in_weight  # (steps, b), layer 0's input at each time
    tops = []
    for wave in range(steps + layers - 1):
        first = max(0, wave - steps + 1)  # lowest layer still running
        last = min(layers - 1, wave)  # highest layer already started
        below = hidden[:-1]
        if wave < steps:
            layer_inputs = cnp.concatenate([scaled_inputs[wave][None, :], below], axis=0)
        else:
            layer_inputs = cnp.concatenate([cnp.zeros_like(scaled_inputs[:1]), below], axis=0)
        pre = (
            cnp.concatenate([layer_inputs, hidden, layer_inputs, hidden], axis=1) * weights + biases
        )
        gates = cnp.sigmoid(pre[:, : 3 * b])
        change = cnp.tanh(pre[:, 3 * b :])
        new_cell = cell * gates[:, :b] + gates[:, b : 2 * b] * change
        new_hidden = gates[:, 2 * b : 3 * b] * cnp.tanh(new_cell)
        if first == 0 and last == layers - 1:
            cell, hidden = new_cell, new_hidden
        else:
            running = np.zeros((layers, 1), dtype=bool)
            running[first : last + 1] = True
            cell = cnp.where(running, new_cell, cell)
            hidden = cnp.where(running, new_hidden, hidden)
        if wave >= layers - 1:
            tops.append(hidden[layers - 1])
    predictions = cnp.stack(tops) * out_weight + out_bias  # (steps, b)
    normaliser = cnp.log(cnp.sum(cnp.exp(predictions), axis=1, keepdims=True) + 2.0)
    total = cnp.sum(sequence[1:] * (predictions - normaliser))
    return -total / (steps * b)


_gradient = transforms.grad(loss, argnums=(0, 1))


def flat_gradient(main_params, extra_params, state, sequence):
    main, extra = _gradient(main_params, extra_params, state, sequence)
    return np.concatenate([np.ravel(main), np.ravel(extra)])


def _prepare(raw):
    return (
        floats(raw["main_params"]),
        floats(raw["extra_params"]),
        floats(raw["state"]),
        floats(raw["sequence"]),
    )


FUNCTIONS = {
    "objective": EvalFunction(_prepare, lambda args: loss(*args), float),
    "jacobian": EvalFunction(_prepare, lambda args: flat_gradient(*args), to_list),
}
