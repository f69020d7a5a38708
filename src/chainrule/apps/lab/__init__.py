"""The lab: five questions about backpropagation, each answered by a measured experiment.

=================  =====================================================================
``cost``           why backprop instead of nudging each weight, or the whole Jacobian?
``chain-order``    why multiply from the output back?
``fanout``         why can't the derivatives be computed during the forward pass?
``schemes``        why update all layers simultaneously?
``derivative-free``  why not gradient-free optimisation?
=================  =====================================================================

Each experiment module has ``NAME``, ``QUESTION`` and ``run(quick=False, seed=0)`` returning an
:class:`~chainrule.apps.lab.common.ExperimentResult`; :func:`run_experiments` runs several and
:func:`~chainrule.apps.lab.report.write_report` turns them into one self-contained HTML report with
the pictures and the raw figures as JSON. ``chainrule lab NAME --out DIR`` is the command.
"""

from __future__ import annotations

import importlib

#: Experiment name -> module (imported when run, so one experiment's needs never block another).
EXPERIMENTS = {
    "cost": "chainrule.apps.lab.cost",
    "chain-order": "chainrule.apps.lab.chain_order",
    "fanout": "chainrule.apps.lab.fanout",
    "schemes": "chainrule.apps.lab.schemes",
    "derivative-free": "chainrule.apps.lab.derivative_free",
}


def experiment_module(name: str):
    """The module of experiment ``name`` (see :data:`EXPERIMENTS`)."""
    if name not in EXPERIMENTS:
        raise ValueError(
            f"unknown lab experiment {name!r}; choose from {', '.join(EXPERIMENTS)} or 'all'"
        )
    return importlib.import_module(EXPERIMENTS[name])


def run_experiment(name: str, quick: bool = False, seed: int = 0):
    """Run one experiment and return its :class:`~chainrule.apps.lab.common.ExperimentResult`."""
    return experiment_module(name).run(quick=quick, seed=seed)


__all__ = ["EXPERIMENTS", "experiment_module", "run_experiment"]
