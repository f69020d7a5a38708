"""The Trainer: mini-batch training with checkpoints that resume bit for bit.

One step is functional: a gradient *method* (``chainrule.estimators``: backprop by default, or
forward mode, finite differences, forward gradients, SPSA, MeZO, evolution strategies) and an
update *scheme* (``chainrule.training.schemes``: simultaneous by default, or layer-wise, cyclic,
LocoProp, derivative-free, CMA-ES) turn the loss of ``model.apply(params, x, train=True)`` into
new parameters. Everything a step depends on is either saved in the checkpoint (parameters,
buffers, optimizer state, the position in the epoch, the epoch's running sums) or a pure function
of the seed and the step or epoch number (the order of the examples, the dropout masks, the
random key of a stochastic method). A run killed at any point and resumed from its last
checkpoint therefore replays the same arithmetic and ends with bit-identical weights.

Batch-norm running statistics move once per step, in the step's first forward pass: at θ for
backprop and forward mode, at the first perturbed point θ + c·z for the zeroth-order methods
(which never evaluate at θ itself); the running accuracy comes from the same pass.

With a ``communicator`` (``chainrule.distributed.MPICommunicator``) each process trains on its
share of every global batch and the shares' gradients are combined by one all-reduce per step
(see :mod:`chainrule.training.parallel`).

**Devices.** ``Trainer(..., device="cuda")`` trains on a GPU: the model's parameters and buffers
move there (float32 unless ``dtype`` says otherwise:
``chainrule.backend.device.default_float_dtype``), so the optimizer state is made there too. Each
data set is copied to the device once, the first time it is used (``data_on_device=True``), and the
batches are then gathered on the device; with ``data_on_device=False`` the data stay on the host and
each batch is copied as it is drawn (for data sets larger than the GPU's memory). The few values
read on the host (the loss, the count of correct predictions, the finiteness of the weights) are
explicit copies of 0-d arrays, one each per step. Random draws (the epoch's order, dropout masks,
the stochastic methods' directions) are made by NumPy on the host from the same seeds and copied
over, so a run draws the same numbers on every device. Checkpoints hold host arrays plus the device
and dtype in their metadata, and load onto the device of the run that reads them: a run checkpointed
on a GPU resumes there, or on the CPU.

**Divergence.** A step whose loss is NaN or Inf, or whose magnitude exceeds ``divergence_factor``
(default 10^6) times max(1, |first loss of the run|), raises :class:`TrainingDiverged` naming the
step and the loss, before anything from that step is kept or checkpointed: a run can blow up to a
huge but finite loss (LocoProp-M reaches 1e99) long before it overflows.

>>> import numpy as np
>>> from chainrule import data, nn, optim
>>> train = data.Dataset(np.random.default_rng(0).standard_normal((64, 2)), np.arange(64) % 2)
>>> trainer = Trainer(nn.MLP([2, 8, 2], seed=0), optim.SGD(0.1), batch_size=16, log=None)
>>> history = trainer.fit(train, epochs=2)
>>> [record["epoch"] for record in history], trainer.step
([1, 2], 8)
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from ..backend.device import Device, float_dtype, scoped_device, to_device, to_numpy
from ..data.datasets import Dataset, batches, check_batch_size, num_batches
from ..engine import arraylib
from ..engine.arraylib import xp
from ..engine.core import raw
from ..estimators import Cost, get_method
from ..nn.layers import Dropout
from ..nn.losses import get_loss
from ..nn.module import Context, flatten_names, unflatten_names
from ..transforms.pytree import ravel_pytree, tree_leaves
from .checkpoint import (
    CheckpointError,
    check_training_state,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    remove_temporaries,
    save_checkpoint,
)
from .metrics import RunningMean, correct, write_jsonl
from .parallel import LocalCommunicator, shard_bounds
from .progress import make_bar, progress_enabled
from .schemes import StepInputs, get_scheme


class ShardedGenerator:
    """This rank's rows of the random draws one process would make for the whole global batch:
    dropout masks are drawn for ``global_count`` rows and sliced to ``[start, stop)``, so two
    ranks drop exactly the units that one process would."""

    def __init__(self, generator, global_count: int, start: int, stop: int):
        self.generator = generator
        self.global_count, self.start, self.stop = int(global_count), int(start), int(stop)

    def random(self, size):
        size = tuple(size)
        whole = self.generator.random((self.global_count, *size[1:]))
        return whole[self.start : self.stop]


#: A run whose loss grows beyond this many times max(1, |first loss|) has diverged.
DIVERGENCE_FACTOR = 1e6


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or Inf, or grew beyond the divergence threshold (see
    :class:`Trainer`), or the weights became NaN or Inf; nothing is checkpointed from that point
    on."""


def _run_device(device, model) -> Device:
    """The device a Trainer runs on: ``device`` when given, else the innermost
    ``with chainrule.backend.device.device(...)`` block, else where the model's parameters are."""
    if device is not None:
        return Device(device)
    scoped = scoped_device()
    if scoped is not None:
        return scoped
    found = {arraylib.device_of(raw(leaf)) for leaf in tree_leaves(model.parameters())}
    if len(found) > 1:
        raise ValueError(
            f"Trainer: the model's parameters are on several devices {sorted(found)}; pass device="
        )
    return Device(found.pop() if found else "cpu")


def _all_finite(leaves) -> bool:
    """Whether every leaf is finite. On a GPU the per-leaf answers are stacked there and read with
    one host copy (one synchronisation per step, not one per leaf)."""
    flags = [xp.all(xp.isfinite(leaf)) for leaf in leaves]
    if not flags or arraylib.device_of(flags[0]) == "cpu":
        return all(flags)
    return bool(xp.all(xp.stack(flags)))


class Trainer:
    """Train ``model`` with ``optimizer`` (a functional ``chainrule.optim`` optimizer).

    ``loss`` defaults to softmax cross-entropy for classification and mean squared error for
    regression. With ``run_dir`` the trainer writes ``checkpoints/`` (at every epoch's end and
    every ``checkpoint_every`` steps, keeping the newest ``keep_checkpoints``) and
    ``metrics.jsonl``; ``fit(..., resume=True)`` continues from the newest checkpoint there.
    ``log`` receives one line per epoch (``None`` for silence); ``progress`` draws a bar (``None``:
    only on a terminal). ``method`` and ``scheme`` are names (or instances) from
    ``chainrule.estimators`` and ``chainrule.training.schemes``; ``total_cost`` sums every step's
    :class:`~chainrule.estimators.Cost`, and ``measure_next = True`` makes the next step also
    measure its FLOPs and peak memory.

    ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``; default: the innermost ``with
    chainrule.backend.device.device(...)`` block, else where the model's parameters are) is where
    training runs; the model is moved there. ``dtype`` is the floating dtype of parameters and
    data (default: float32 on a GPU, the model's own on the CPU). ``data_on_device`` and
    ``divergence_factor`` (``None``: only NaN and Inf count) are described in the module's text.
    """

    def __init__(
        self,
        model,
        optimizer,
        loss=None,
        *,
        task: str = "classification",
        batch_size: int = 32,
        seed: int = 0,
        run_dir=None,
        checkpoint_every: int = 0,
        keep_checkpoints: int = 3,
        progress=None,
        log=print,
        config: dict | None = None,
        eval_batch_size: int = 2048,
        method="backprop",
        scheme="simultaneous",
        communicator=None,
        device=None,
        dtype=None,
        data_on_device: bool = True,
        divergence_factor: float | None = DIVERGENCE_FACTOR,
    ):
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        self.model = model
        self.optimizer = optimizer
        self.task = task
        self.loss = get_loss(loss or ("cross_entropy" if task == "classification" else "mse"))
        self.batch_size = check_batch_size(batch_size)
        self.eval_batch_size = check_batch_size(eval_batch_size)
        self.seed = int(seed)
        if int(checkpoint_every) < 0:
            raise ValueError(f"checkpoint_every must be >= 0 steps, got {checkpoint_every}")
        self.checkpoint_every = int(checkpoint_every)
        self.keep_checkpoints = max(1, int(keep_checkpoints))
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self.log = log
        self.config = dict(config or {})
        self.method = get_method(method)
        self.scheme = get_scheme(scheme)
        self.scheme.check_method(self.method)
        if self.run_dir is not None and not self.scheme.checkpointable:
            raise CheckpointError(
                f"the {self.scheme.name} scheme's state cannot be checkpointed; "
                "train it without a run directory"
            )
        if divergence_factor is not None and not (
            isinstance(divergence_factor, (int, float)) and divergence_factor > 1
        ):
            raise ValueError(
                f"divergence_factor must be a number above 1 (or None), got {divergence_factor!r}"
            )
        self.divergence_factor = None if divergence_factor is None else float(divergence_factor)
        self.first_loss = None  # the run's first loss: the divergence threshold's reference
        self.communicator = communicator if communicator is not None else LocalCommunicator()
        self.device = _run_device(device, model)
        # None: the parameters keep their dtype and the data are not cast (the CPU's default).
        self.dtype = (
            None if dtype is None and self.device.kind == "cpu" else float_dtype(dtype, self.device)
        )
        self.data_on_device = bool(data_on_device)
        self._placed_data: dict = {}  # id(dataset) -> (dataset, its copy on the device)
        if self.communicator.size > 1:  # every rank starts from rank 0's parameters (host copies)
            theta, unravel = ravel_pytree(to_numpy(model.parameters()))
            model.load_parameters(unravel(self.communicator.broadcast(theta)))
        model.to(self.device.name, self.dtype)
        self.params = model.parameters()
        with self.device:
            self.opt_state = self.scheme.init(model, optimizer, self.params)
        self._opt_template = self.opt_state
        self._has_dropout = any(isinstance(m, Dropout) for m in model.modules())
        self.epoch = 0  # epochs completed
        self.batch = 0  # batches done in the current epoch
        self.step = 0  # optimizer updates so far
        self.elapsed = 0.0  # training seconds, summed over resumed sessions
        self.history: list[dict] = []
        self.total_cost = Cost()
        self.last_cost = Cost()
        self.measure_next = False
        self._shard = None  # (global batch size, start, stop) of this rank's share in this step
        self._reset_accumulators()

    # -- one step ----------------------------------------------------------------------------------
    def _context(self) -> Context:
        """The forward pass's context for the current step: training mode, dropout masks drawn
        from a generator that is a function of (seed, step), so every loss evaluation of one step
        (finite differences make 2P of them) sees the same masks, and a resumed run the same."""
        rng = None
        if self._has_dropout:
            rng = xp.random.Generator(
                xp.random.PCG64(xp.random.SeedSequence([self.seed, 1, self.step]))
            )
            if self._shard is not None:
                rng = ShardedGenerator(rng, *self._shard)
        update = self._buffers_pending
        self._buffers_pending = False  # batch-norm statistics move once per step, at the first pass
        return Context(train=True, rng=rng, update_buffers=update)

    def _objective(self, params, batch):
        features, labels = batch
        outputs = self.model.apply(params, features, ctx=self._context())
        if self._outputs is None:
            # the step's first pass: its plain outputs give the running accuracy (plain, so the
            # step's graph is not kept alive through them)
            self._outputs = raw(outputs)
        return self.loss(outputs, labels)

    def _reset_accumulators(self, loss_total=0.0, count=0, hits=0):
        self._loss_sum = RunningMean(loss_total, count)
        self._hits = None if hits is None else int(hits)

    def _step_key(self) -> int:
        """The random key of this step's gradient method: a function of (seed, step) only."""
        return int(xp.random.SeedSequence([self.seed, 2, self.step]).generate_state(1)[0])

    def _step_inputs(self, features, labels) -> StepInputs:
        comm = self.communicator
        global_count = len(labels)
        self._shard = None
        if comm.size > 1:
            start, stop = shard_bounds(global_count, comm.rank, comm.size)
            features, labels = features[start:stop], labels[start:stop]
            self._shard = (global_count, start, stop)
        inputs = StepInputs(
            objective=self._objective,
            batch=(features, labels),
            key=self._step_key(),
            step=self.step,
            measure=self.measure_next,
            distributed=comm.size > 1,
            context=self._context,
        )
        if comm.size > 1:
            share = len(labels) / global_count
            inputs.reduce = lambda loss, grads: self._reduce_gradient(loss, grads, share, labels)
            inputs.reduce_seeded = lambda loss, seeded: self._reduce_seeded(
                loss, seeded, share, labels
            )
            inputs.reduce_values = lambda values: comm.allreduce_sum(
                xp.asarray(values, dtype=xp.float64) * share
            )
        return inputs

    def _local_hits(self, labels) -> float:
        """This rank's correct predictions in the step's first pass (0 when there are none)."""
        outputs = None if self._outputs is None else raw(self._outputs)
        if (
            self.task != "classification"
            or outputs is None
            or tuple(outputs.shape[:1]) != (len(labels),)
        ):
            return 0.0
        return float(correct(outputs, labels))

    def _reduce_gradient(self, loss, grads, share, labels):
        """Global loss and gradient from every rank's, in one all-reduce that the communicator
        packs (``chainrule.distributed.packing``); the summed correct predictions are kept for the
        step's accuracy."""
        loss, grads, self._reduced_hits = self.communicator.allreduce_gradient(
            loss, grads, share, self._local_hits(labels)
        )
        return loss, grads

    def _reduce_seeded(self, loss, seeded, share, labels):
        """The same for a seeded estimate: only its coefficients (and the loss and hits) are
        summed, every rank having drawn the same directions from the same key."""
        loss, seeded, self._reduced_hits = self.communicator.allreduce_seeded(
            loss, seeded, share, self._local_hits(labels)
        )
        return loss, seeded

    def _placed_batch(self, features, labels):
        """A batch on the trainer's device, cast to its dtype (a no-op for a batch already
        there)."""
        if self.device.kind == "cpu" and self.dtype is None:
            return features, labels
        batch = (arraylib.asarray(raw(features)), arraylib.asarray(raw(labels)))
        features, labels = to_device(batch, self.device.name)
        if features.dtype != self.dtype:
            features = features.astype(self.dtype)
        if self.task == "regression" and labels.dtype != self.dtype:
            labels = labels.astype(self.dtype)
        return features, labels

    def place(self, dataset: Dataset) -> Dataset:
        """``dataset`` on the trainer's device and dtype: copied once, then remembered (later calls
        with the same data set return the same copy); the data set itself when nothing changes."""
        if self.device.kind == "cpu" and self.dtype is None:
            return dataset
        cached = self._placed_data.get(id(dataset))
        if cached is not None and cached[0] is dataset:
            return cached[1]
        placed = dataset.to(self.device.name, self.dtype)
        self._placed_data[id(dataset)] = (dataset, placed)
        return placed

    def _check_loss(self, loss: float) -> None:
        """Raise :class:`TrainingDiverged` for a NaN or Inf loss, or one beyond the threshold."""
        if math.isfinite(loss):
            if self.first_loss is None:
                self.first_loss = loss
            if self.divergence_factor is None:
                return
            limit = self.divergence_factor * max(1.0, abs(self.first_loss))
            if abs(loss) <= limit:
                return
            reason = (
                f"the loss {loss:.6g} exceeds {self.divergence_factor:g} x max(1, |first loss "
                f"{self.first_loss:.6g}|) = {limit:.6g}"
            )
        else:
            reason = f"the loss is {loss}"
            if self.device.kind != "cpu":
                reason += " (on a GPU an out-of-range label also gives a NaN loss)"
        raise TrainingDiverged(
            f"training diverged at step {self.step + 1} (epoch {self.epoch + 1}): {reason}; "
            "lower the learning rate"
        )

    def train_step(self, features, labels) -> float:
        """One update on one (global) batch; returns the batch's loss (before the update). The
        batch may be on the host or on the trainer's device (it is moved there)."""
        with self.device:
            return self._train_step(*self._placed_batch(features, labels))

    def _train_step(self, features, labels) -> float:
        inputs = self._step_inputs(features, labels)
        self._reduced_hits = None
        self._buffers_pending = True
        self._outputs = None
        # Overflow is reported once, as TrainingDiverged, not as a stream of NumPy warnings.
        with xp.errstate(over="ignore", invalid="ignore", divide="ignore"):
            params, opt_state, loss, cost = self.scheme.step(
                self, self.params, self.opt_state, inputs
            )
            loss = float(loss)
            self._check_loss(loss)
        self.measure_next = False
        self.last_cost = cost
        self.total_cost = self.total_cost + cost
        if not _all_finite(tree_leaves(params)):
            raise TrainingDiverged(
                f"training diverged at step {self.step + 1} (epoch {self.epoch + 1}): the weights "
                "became NaN or Inf; lower the learning rate"
            )
        self.params, self.opt_state = params, opt_state
        self.step += 1
        self.batch += 1
        self._loss_sum.add(loss, len(labels))
        if self.task == "classification":
            outputs, self._outputs = self._outputs, None
            local_labels = inputs.batch[1]
            if outputs is not None and tuple(outputs.shape[:1]) == (len(local_labels),):
                hits = correct(outputs, local_labels)
                if self.communicator.size > 1 and self._reduced_hits is not None:
                    hits = self._reduced_hits  # summed in the step's gradient all-reduce
                elif self.communicator.size > 1:  # the scheme reduced no gradient this step
                    hits = int(
                        round(float(self.communicator.allreduce_sum(xp.asarray([float(hits)]))[0]))
                    )
                self._hits += hits
            else:
                self._hits = None  # this method's passes do not yield plain outputs
        return loss

    # -- the loop ----------------------------------------------------------------------------------
    def fit(
        self,
        train: Dataset,
        epochs: int,
        val: Dataset | None = None,
        *,
        resume=False,
        max_steps=None,
    ) -> list[dict]:
        """Train until ``epochs`` epochs are complete (or ``max_steps`` updates, then checkpoint
        and return); ``resume=True`` first restores the newest checkpoint of ``run_dir``."""
        if isinstance(epochs, bool) or int(epochs) != epochs or int(epochs) <= 0:
            raise ValueError(f"epochs must be a positive integer, got {epochs}")
        epochs = int(epochs)
        if resume:
            if self.run_dir is None:
                raise ValueError("resume=True needs a run_dir")
            self.restore()
        elif (
            self.step == 0
            and self.run_dir is not None
            and latest_checkpoint(self.checkpoint_dir) is not None
        ):
            raise CheckpointError(
                f"{str(self.run_dir)!r} already holds checkpoints; continue them with resume=True "
                "or train into another run_dir"
            )
        steps_per_epoch = num_batches(len(train), self.batch_size)
        show_bar = progress_enabled(self.progress)
        started = time.perf_counter()
        with self.device:
            source = self.place(train) if self.data_on_device else train
            return self._fit(source, epochs, val, max_steps, steps_per_epoch, show_bar, started)

    def _fit(self, train, epochs, val, max_steps, steps_per_epoch, show_bar, started) -> list[dict]:
        try:
            while self.epoch < epochs:
                bar = make_bar(
                    show_bar, steps_per_epoch, self.batch, f"epoch {self.epoch + 1}/{epochs}"
                )
                try:
                    for features, labels in batches(
                        train, self.batch_size, self.seed, self.epoch, start=self.batch
                    ):
                        loss = self.train_step(features, labels)
                        if self.task == "classification" and self._hits is not None:
                            bar.update(
                                1,
                                loss=f"{loss:.4f}",
                                acc=f"{100 * self._hits / self._loss_sum.count:.2f}%",
                            )
                        else:
                            bar.update(1, loss=f"{loss:.4f}")
                        stop = max_steps is not None and self.step >= max_steps
                        if self.batch < steps_per_epoch and (
                            stop
                            or (self.checkpoint_every and self.step % self.checkpoint_every == 0)
                        ):
                            self.elapsed += time.perf_counter() - started
                            started = time.perf_counter()
                            self.save()
                        if stop and self.batch < steps_per_epoch:
                            self.model.load_parameters(self.params)
                            return self.history
                finally:
                    bar.close()
                self._end_epoch(val, epochs, started)
                started = time.perf_counter()
                if max_steps is not None and self.step >= max_steps:
                    break
        finally:
            self.model.load_parameters(self.params)
        return self.history

    def _end_epoch(self, val, epochs, started):
        self.model.load_parameters(self.params)
        record = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "lr": self.scheme.lr(self.optimizer, self.opt_state),
            "train_loss": self._loss_sum.value,
            "train_accuracy": self._hits / self._loss_sum.count
            if self.task == "classification" and self._hits is not None
            else None,
        }
        if val is not None:
            result = self.evaluate(val)
            record["val_loss"] = result["loss"]
            record["val_accuracy"] = result["accuracy"]
        self.elapsed += time.perf_counter() - started
        record["time"] = round(self.elapsed, 3)
        self.history.append(record)
        self.epoch += 1
        self.batch = 0
        self._reset_accumulators()
        self.save()
        if self.log is not None:
            self.log(format_epoch(record, epochs, self.task))

    # -- evaluation --------------------------------------------------------------------------------
    def evaluate(self, dataset: Dataset, params=None) -> dict:
        """Mean loss (and accuracy) of the model in evaluation mode over ``dataset`` (on the
        trainer's device: see :meth:`place`); ``params`` (default: the trainer's) are moved
        there."""
        params = self.params if params is None else to_device(params, self.device.name, self.dtype)
        total = RunningMean()
        hits = 0
        with self.device:
            data = self.place(dataset) if self.data_on_device else dataset
            for start in range(0, len(data), self.eval_batch_size):
                features, labels = self._placed_batch(
                    data.features[start : start + self.eval_batch_size],
                    data.labels[start : start + self.eval_batch_size],
                )
                outputs = self.model.apply(params, features, train=False)
                total.add(float(self.loss(outputs, labels)), len(labels))
                if self.task == "classification":
                    hits += correct(outputs, labels)
        return {
            "examples": len(dataset),
            "loss": total.value,
            "accuracy": hits / len(dataset) if self.task == "classification" else None,
        }

    # -- checkpoints -------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoints"

    def state_arrays(self) -> dict:
        arrays = {f"params.{k}": v for k, v in flatten_names(self.params).items()}
        arrays.update(
            {f"buffers.{k}": v for k, v in flatten_names(self.model.named_buffers()).items()}
        )
        arrays.update({f"opt.{k}": v for k, v in flatten_names(self.opt_state).items()})
        return arrays

    @property
    def compute_dtype(self) -> str | None:
        """The name of the parameters' floating dtype (``"float32"``...)."""
        leaves = tree_leaves(self.params)
        return str(raw(leaves[0]).dtype) if leaves else None

    def state_meta(self) -> dict:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "elapsed": self.elapsed,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "task": self.task,
            "device": self.device.name,
            "dtype": self.compute_dtype,
            "first_loss": self.first_loss,
            "method": self.method.config(),
            "scheme": self.scheme.config(),
            "cost": {k: v for k, v in self.total_cost.as_dict().items() if k != "passes"},
            "accumulators": {
                "loss_total": self._loss_sum.total,
                "count": self._loss_sum.count,
                "hits": self._hits,
            },
            "history": self.history,
            "optimizer": self.optimizer.config(),
            "model": {
                "class": type(self.model).__name__,
                "parameters": self.model.num_parameters(),
            },
            "config": self.config,
        }

    def save(self) -> Path | None:
        """Checkpoint the complete training state (no-op without ``run_dir``, and on every rank
        but rank 0 of a data-parallel job: the ranks hold the same state)."""
        if self.run_dir is None or not self.communicator.is_root:
            return None
        if not self.scheme.checkpointable:
            raise CheckpointError(
                f"the {self.scheme.name} scheme's state cannot be checkpointed; "
                "train it without a run directory"
            )
        path = save_checkpoint(
            self.checkpoint_dir, self.step, self.state_arrays(), self.state_meta()
        )
        write_jsonl(self.run_dir / "metrics.jsonl", self.history)
        prune_checkpoints(self.checkpoint_dir, self.keep_checkpoints)
        return path

    def restore(self, path=None) -> Path | None:
        """Load the checkpoint ``path`` (default: the newest in ``run_dir``); returns its path,
        or ``None`` when the run has no checkpoint yet (training then starts from step 0)."""
        if path is None:
            if self.communicator.is_root:  # only rank 0 writes, so only rank 0 cleans up
                remove_temporaries(self.checkpoint_dir)
            path = latest_checkpoint(self.checkpoint_dir)
            if path is None:
                return None
        # Every array's name, shape and dtype is checked against this model before any is read.
        expected = {
            name: (tuple(raw(value).shape), raw(value).dtype.newbyteorder("<").str)
            for name, value in self.state_arrays().items()
        }
        arrays, meta = load_checkpoint(path, expected)
        check_training_state(meta, path)
        for key, mine in (
            ("batch_size", self.batch_size),
            ("seed", self.seed),
            ("task", self.task),
        ):
            if meta.get(key) != mine:
                raise CheckpointError(
                    f"checkpoint {str(path)!r} was made with {key} {meta.get(key)!r}, not {mine!r}"
                )
        for key, mine in (("method", self.method.config()), ("scheme", self.scheme.config())):
            theirs = meta.get(
                key, {"name": "backprop"} if key == "method" else {"name": "simultaneous"}
            )
            if theirs != mine:
                raise CheckpointError(
                    f"checkpoint {str(path)!r} was made with {key} {theirs}, not {mine}"
                )
        if meta.get("optimizer") != self.optimizer.config():
            raise CheckpointError(
                f"checkpoint {str(path)!r} was made with optimizer {meta.get('optimizer')}, "
                f"not {self.optimizer.config()}"
            )
        model_state = {k: v for k, v in arrays.items() if k.startswith(("params.", "buffers."))}
        # The checkpoint's host arrays land on this run's device and dtype, whichever device saved
        # them: where the model's Tensors and the optimizer state's template leaves are.
        try:
            self.model.load_state_dict(model_state)
        except ValueError as error:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is from a different architecture: {error}"
            ) from None
        opt_arrays = {k[len("opt.") :]: v for k, v in arrays.items() if k.startswith("opt.")}
        params = self.model.parameters()
        try:
            opt_state = unflatten_names(self._opt_template, opt_arrays, "optimizer state")
        except ValueError as error:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has optimizer state that does not fit: {error}"
            ) from None
        try:
            cost = Cost(**meta.get("cost", {}))
            accumulators = meta["accumulators"]
            epoch, batch, step = int(meta["epoch"]), int(meta["batch"]), int(meta["step"])
            history = list(meta["history"])
            elapsed = float(meta.get("elapsed", 0.0))
            first_loss = meta.get("first_loss")
            first_loss = None if first_loss is None else float(first_loss)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"checkpoint {str(path)!r} lacks training state ({error})"
            ) from None
        self.params = params
        self.opt_state = opt_state
        self.epoch, self.batch, self.step = epoch, batch, step
        self.history = history
        self.elapsed = elapsed
        self.first_loss = first_loss
        self.total_cost = cost
        self._reset_accumulators(
            accumulators["loss_total"], accumulators["count"], accumulators["hits"]
        )
        return Path(path)


def format_epoch(record: dict, epochs: int, task: str) -> str:
    width = len(str(epochs))
    parts = [f"epoch {record['epoch']:>{width}}/{epochs}", f"loss {record['train_loss']:.4f}"]
    if task == "classification" and record.get("train_accuracy") is not None:
        parts.append(f"acc {100 * record['train_accuracy']:6.2f}%")
    if record.get("val_loss") is not None:
        parts.append(f"val_loss {record['val_loss']:.4f}")
        if task == "classification":
            parts.append(f"val_acc {100 * record['val_accuracy']:6.2f}%")
    parts.append(f"lr {record['lr']:.4g}")
    parts.append(f"{record['time']:.1f}s")
    return "  ".join(parts)
