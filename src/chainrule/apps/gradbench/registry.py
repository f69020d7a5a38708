"""Which gradbench modules chainrule implements: module name → {function name → EvalFunction}."""

from __future__ import annotations

from . import ba, det, gmm, hello, ht, kmeans, llsq, lse, lstm, ode, particle, saddle

MODULES = {
    "hello": hello.FUNCTIONS,
    "llsq": llsq.FUNCTIONS,
    "lse": lse.FUNCTIONS,
    "det": det.FUNCTIONS,
    "ode": ode.FUNCTIONS,
    "gmm": gmm.FUNCTIONS,
    "kmeans": kmeans.FUNCTIONS,
    "saddle": saddle.FUNCTIONS,
    "particle": particle.FUNCTIONS,
    "lstm": lstm.FUNCTIONS,
    "ba": ba.FUNCTIONS,
    "ht": ht.FUNCTIONS,
}
