"""``chainrule.backend.capture``: record one call of a step function, then replay it on new inputs.

A training step of a small network spends most of its time in Python: dispatch, tracers, the
reverse interpreter. Its array work is the same sequence of NumPy calls every step. ``capture``
runs the step once on *recording arrays* (an ``ndarray`` subclass that writes down every NumPy
call made on it: ufuncs, reductions, ``matmul``, indexing that copies, ``astype``...), and keeps
that list of calls as a *tape* together with every array it produced. A replay copies the new
inputs into the recorded input buffers, in place, and runs the tape again, each call writing into
the buffer it wrote the first time (``out=``). Views (reshape, transpose, basic indexing,
broadcasting) are not on the tape at all: they alias the buffers, so they see the new values.
No tracer, no graph, no allocation of results on the replay path.

>>> import numpy as np, chainrule as cr, chainrule.numpy as cnp
>>> from chainrule.backend.capture import capture
>>> def step(w, x):
...     loss, g = cr.value_and_grad(lambda w: cnp.sum(cnp.tanh(x @ w) ** 2))(w)
...     return w - 0.1 * g, loss
>>> w, x = np.ones((3, 2)), np.arange(6.0).reshape(2, 3) / 6
>>> fast = capture(step, (w, x))
>>> new_w, loss = fast(w, x)
>>> eager_w, eager_loss = step(w, x)
>>> bool(np.allclose(new_w, eager_w)) and bool(np.allclose(loss, eager_loss))
True

What a replay assumes, and what is checked:

* **Same shapes, dtypes and static values.** The tape is specialised to the input signature (the
  pytree structure, each array's shape and dtype, the value of every non-array leaf). A call with
  another signature records a new tape (``on_new_signature="recapture"``, the default; tapes are
  kept per signature) or raises a ``ValueError`` naming the argument and both signatures
  (``"raise"``).
* **Python decisions on array values are guarded.** ``bool``, ``int``, ``float`` and ``.item()``
  of a recorded array (an ``if`` on data, a value read into Python) are written down with the
  value seen; after each replay the same expressions are checked and, where one differs, that
  call is redone eagerly (counted in ``stats["fallbacks"]``) or raises (``on_guard_failure=
  "raise"``). An exception during a replay also falls back to the eager step, so that its error
  is the one the user sees.
* **The step is a pure function of its arguments.** State must come in as arguments and go out as
  results (parameters, optimizer state, random draws): values read from closures or from a
  random generator are frozen into the tape. Arrays computed from the inputs by a path that the
  recording arrays cannot see (``np.array(x)`` or ``np.asarray(x)`` of an input followed by
  arithmetic on the plain copy) would also be frozen; so the first replay of every tape is
  checked against the eager step (``verify=True``) and a mismatch raises :class:`CaptureError`.

Results are fresh arrays (copies of the buffers), so the caller may keep them across steps.

Where it pays: a replay costs one NumPy call per array operation of the step, with no Python
dispatch on top; it wins where dispatch dominates (small layers) and ties where the arithmetic
dominates. ``benchmarks/bench_capture.py`` measures both.

**On a GPU.** When the arguments' arrays are CuPy arrays, the step is captured into a CUDA graph
instead (:mod:`chainrule.backend.cuda.graph`): static device input buffers, one eager warm-up run on
a side stream with a private memory pool, one run under stream capture with the ``matmul`` primitive
computing through chainrule's own cuBLAS binding (CuPy refuses cuBLAS during capture), then every
call copies the inputs into the static buffers and launches the graph, on the caller's current
stream. The signature rules are the same (a device array's signature also holds its device); the
first replay of each graph is checked against the eager step as above. There are no guards: a Python
decision on a device value (``.item()``, ``float()``, ``bool()``), a host array among the arguments,
or a cuBLAS call through CuPy (``cupy.dot``, ``tensordot``, ``einsum``) is a :class:`CaptureError`
at recording time, naming what happened. Written for CuPy 14 / CUDA 12, not yet run on a GPU
(``docs/gpu.md``).

``copy_outputs=False`` returns the output buffers themselves instead of copies (CPU tapes and
GPU graphs alike): no copy per call, but the next call overwrites them.

**Buffer reuse.** Once a tape is recorded, intermediates whose values are dead share memory
(``reuse_buffers=True``, the default; ``tape.reused`` counts the buffers saved), as XLA assigns
buffers: a step's temporaries then stay in cache. Only plain elementwise writes and reads take
part (see :func:`_reuse_buffers`), so the replayed arithmetic is the same, bit for bit.

**Known values.** Before that, a call whose value is already known is dropped, and its readers
read that value (``dedupe=True``, the default; ``tape.deduped`` counts the calls dropped): a call
that repeats an earlier one (the same ufunc on the same buffers, as when a rule recomputes
``sin(x)`` that the forward pass computed: nested derivatives are full of them), as XLA
eliminates common subexpressions; a reverse pass's ``ones_like`` seed, which stays as recorded;
and a product by such ones or by 1. Each gives the bits the dropped call gave, so nothing changes
but the time. Then calls
whose results nothing returned or guarded depends on are dropped (``prune=True``, the default;
``tape.pruned`` counts them): ``jvp`` and ``grad`` compute the primal value too, which a Hessian or
a Hessian-vector product does not return.
"""

from __future__ import annotations

import functools
import operator

import numpy as _np

from ..engine import arraylib
from ..engine.core import Tracer
from ..transforms.pytree import (
    leaves_like,
    leaves_match,
    structure_key,
    tree_flatten,
    tree_unflatten,
)
from .errors import CaptureError

__all__ = ["CaptureError", "CapturedStep", "capture"]


#: The recording in progress (one at a time), or ``None``.
_active = None

_ndarray = _np.ndarray


def _plain(value):
    """A base-class view of a recording array (same memory); any other value unchanged."""
    return value.view(_ndarray) if type(value) is _Recording else value


def _plain_nested(value):
    """Like :func:`_plain`, one level into tuples and lists (``concatenate``'s sequence, an index
    tuple)."""
    if type(value) is _Recording:
        return value.view(_ndarray)
    if type(value) in (tuple, list):
        return type(value)(_plain(item) for item in value)
    return value


class _Tape:
    """The recorded calls of one step, the guards on its Python decisions, and its buffers."""

    __slots__ = (
        "calls",
        "guards",
        "inputs",
        "input_index",
        "outputs",
        "out_def",
        "verified",
        "reused",
        "deduped",
        "pruned",
        "created",
        "outside",
    )

    def __init__(self):
        self.calls = []  # (function, args, kwargs or None): each writes into a fixed buffer
        self.guards = []  # (description, buffer, converter, value seen while recording)
        self.inputs = []  # one buffer per array leaf of the arguments
        self.input_index = []  # positions of those leaves among all leaves
        self.outputs = []  # per output leaf: a buffer (copied on return) or a constant
        self.out_def = None
        self.verified = False
        self.reused = 0  # intermediate buffers that share memory with dead ones
        self.deduped = 0  # calls dropped because an earlier call computed the same value
        self.pruned = 0  # calls dropped because nothing returned or guarded depends on them
        self.created = set()  # ids of the buffers the step's own calls created (no one else's)
        self.outside = []  # arrays from outside the step that the calls may write

    def add(self, function, args, kwargs):
        self.calls.append((function, args, kwargs))

    def add_new(self, buffers, function, args, kwargs):
        """Record a call that writes ``buffers``, arrays it created itself (a result, not an
        array the step was given or holds from outside): only such writes may be pruned."""
        self.created.update(id(_root(buffer)) for buffer in buffers)
        self.calls.append((function, args, kwargs))

    def replay(self):
        for function, args, kwargs in self.calls:
            if kwargs is None:
                function(*args)
            else:
                function(*args, **kwargs)
        for description, buffer, convert, seen in self.guards:
            now = convert(buffer)
            if now != seen and not (now != now and seen != seen):  # NaN == NaN for a guard
                return description, seen, now
        return None


def _root(array):
    """The array that owns ``array``'s memory (itself, or the base of a view)."""
    while isinstance(array.base, _ndarray):
        array = array.base
    return array


def _whole(array):
    """The buffer ``array`` stands for when it is all of that buffer (the recording arrays hand
    out such views of every result), else None: a real view (a slice, a reshape)."""
    root = _root(array)
    if root is array:
        return root
    if (
        array.shape == root.shape
        and array.strides == root.strides
        and array.dtype == root.dtype
        and array.__array_interface__["data"][0] == root.__array_interface__["data"][0]
    ):
        return root
    return None


def _arrays_in(value, found):
    """Every ndarray in ``value`` (nested in tuples, lists and dicts), appended to ``found``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _ndarray):
            found.append(item)
        elif type(item) in (tuple, list):
            stack.extend(item)
        elif type(item) is dict:
            stack.extend(item.values())
    return found


def _written_by(function, args, kwargs):
    """The arrays a call of the tape writes, when its form says so (``ufunc(a, b, out)``, an
    ``out=`` keyword, a copy into a recorded buffer); None for any other form."""
    if kwargs is None:
        if isinstance(function, _np.ufunc) and function.nout == 1:
            return [args[-1]]
        return None
    if function is _copy_into:
        return [args[0]]
    out = kwargs.get("out")
    ufunc = function if isinstance(function, _np.ufunc) else getattr(function, "__self__", None)
    if out is not None and isinstance(ufunc, _np.ufunc):  # a ufunc, or its reduce, accumulate...
        return list(out) if type(out) is tuple else [out]
    return None


def _times_one(args, ones, write_at, unknown, index):
    """For ``multiply(a, b, out)`` at tape position ``index``: the operand ``x`` when the other is
    all ones (a buffer in ``ones``, or the number 1) and ``out`` has ``x``'s shape and dtype, so
    that ``out`` holds ``x``'s very bits; else None. ``x`` must be a whole buffer the tape writes
    at most once, before ``index``."""
    first, second, out = args
    for x, other in ((first, second), (second, first)):
        if isinstance(other, _ndarray):
            is_one = id(_root(other)) in ones
        else:
            is_one = type(other) in (int, float) and other == 1
        if not is_one or not isinstance(x, _ndarray) or _whole(x) is None:
            continue
        key = id(_root(x))
        written = write_at.get(key)
        stable = key not in unknown and (written is None or 0 <= written < index)
        if stable and x.shape == out.shape and x.dtype == out.dtype:
            return x
    return None


def _dedupe(tape):
    """Drop each call whose value is already known, letting its readers read that value instead;
    returns the number of calls dropped. Three kinds:

    * ``ufunc(a, b, out)`` repeating an earlier call: the same ufunc, the same output dtype and
      shape, and the same operands, where an array operand is the whole of a buffer that the tape
      writes at most once, before this call (an input, or a result already computed), and a
      number operand has the same type and value;
    * a ``ones_like`` copy (a reverse pass's seed): its buffer keeps the ones it was recorded
      with, since its value depends on no value, only on the shapes the tape is recorded for;
    * ``multiply(x, ones, out)``, ``ones`` such a seed or the number 1, where ``out`` has ``x``'s
      shape and dtype: ``x * 1`` is ``x``, bit for bit (-0.0, inf and NaN included).

    A dropped result's buffer must be one the step created, written by that call alone and read
    only as a whole argument of plain ``ufunc(a, b, out)`` calls: not an input, an output, a
    guard, a view, or an argument of a call of any other form.
    """
    calls = tape.calls
    pinned = set()  # buffers whose result may not be replaced by another buffer
    for array in _arrays_in((tape.inputs, tape.outputs, [g[1] for g in tape.guards]), []):
        pinned.add(id(_root(array)))
    unknown = set()  # buffers that a call of an unknown form may write
    write_at: dict = {}  # id(buffer) -> index of its one write (absent: never written)
    for index, (function, args, kwargs) in enumerate(calls):
        written = _written_by(function, args, kwargs)
        arrays = _arrays_in((args, kwargs), [])
        plain = kwargs is None and written is not None
        for array in arrays:
            key = id(_root(array))
            if not plain or _whole(array) is None:
                pinned.add(key)
            if written is None:
                unknown.add(key)
        for array in written or ():
            key = id(_root(array))
            write_at[key] = -1 if key in write_at else index  # -1: written more than once
    seen: dict = {}  # (ufunc, out dtype and shape, operand keys) -> the buffer holding it
    replaced: dict = {}  # id(dropped buffer) -> the buffer that holds its value
    ones = set()  # buffers of seeds whose ones_like copy was dropped (they hold their ones)
    created = tape.created
    kept = []
    for index, (function, args, kwargs) in enumerate(calls):
        if replaced and kwargs is None:
            args = tuple(
                replaced.get(id(_root(a)), a) if isinstance(a, _ndarray) else a for a in args
            )
        call = (function, args, kwargs)
        if function is _copy_into and args[1] is _np.ones_like:
            key = id(_root(args[0]))
            if key in created and write_at.get(key) == index and key not in unknown:
                ones.add(key)
                continue
        if kwargs is not None or not isinstance(function, _np.ufunc) or function.nout != 1:
            kept.append(call)
            continue
        out = args[-1]
        out_key = id(_root(out))
        if (
            function is _np.multiply
            and out_key in created
            and out_key not in pinned
            and write_at.get(out_key) == index
        ):
            same = _times_one(args, ones, write_at, unknown, index)
            if same is not None:
                replaced[out_key] = same
                continue
        operands = []
        for operand in args[:-1]:
            if isinstance(operand, _ndarray):
                key = id(_root(operand))
                written = write_at.get(key)
                if key in unknown or written == -1 or (written is not None and written >= index):
                    break
                operands.append(key)
            elif type(operand) in (int, float, bool, complex) or isinstance(operand, _np.generic):
                operands.append((type(operand), repr(operand)))  # repr: -0.0 is not 0.0
            else:
                break
        else:
            signature = (function, out.dtype, out.shape, tuple(operands))
            earlier = seen.get(signature)
            if earlier is not None and out_key not in pinned and write_at.get(out_key) == index:
                replaced[out_key] = earlier
                continue
            if earlier is None and write_at.get(out_key) == index and out_key not in unknown:
                seen[signature] = out
        kept.append(call)
    tape.calls = kept
    return len(calls) - len(kept)


def _written_outside(tape):
    """The arrays from outside the step (not created by its calls, not its input buffers) that
    the tape may write: each buffer a known form writes, every array a call of another form
    touches; each once, whole (its root)."""
    own = tape.created | {id(buffer) for buffer in tape.inputs}
    found: dict = {}
    for function, args, kwargs in tape.calls:
        written = _written_by(function, args, kwargs)
        for array in _arrays_in((args, kwargs), []) if written is None else written:
            root = _root(array)
            if id(root) not in own:
                found.setdefault(id(root), root)
    return list(found.values())


def _prune(tape):
    """Drop the calls whose results nothing returned or guarded depends on; returns how many.

    Walks the tape backwards from the outputs and the guards' buffers. A call of a known form
    (``ufunc(a, b, out)``, an ``out=`` keyword, a copy into a recorded buffer) that writes only
    buffers the step's own calls created is dropped when none of them is needed later; a kept
    call needs every array it reads, and the buffers it writes stay needed (a write may leave
    part of a buffer as it was). A write into an array from outside the step (a module's running
    statistics, changed in place) is a side effect and is kept, as is a call of any other form;
    every array a kept call touches is needed.
    """
    outside = (tape.outputs, [guard[1] for guard in tape.guards])
    needed = {id(_root(array)) for array in _arrays_in(outside, [])}
    created = tape.created
    kept = []
    for function, args, kwargs in reversed(tape.calls):
        written = _written_by(function, args, kwargs)
        if written is not None:
            keys = [id(_root(array)) for array in written]
            if all(key in created and key not in needed for key in keys):
                continue
        for array in _arrays_in((args, kwargs), []):
            needed.add(id(_root(array)))
        kept.append((function, args, kwargs))
    kept.reverse()
    dropped = len(tape.calls) - len(kept)
    tape.calls = kept
    return dropped


def _reuse_buffers(tape):
    """Let intermediate buffers whose values are dead share memory, as XLA's buffer assignment
    does: a step's temporaries (an optimizer's dozen elementwise results per parameter) then
    stay in cache instead of each owning fresh memory. Returns the number of buffers saved.

    Only what is provably safe is touched: a *candidate* is a buffer written by exactly one call
    of the plain form ``ufunc(a, b, out)`` and read only as a whole argument of such calls. Any
    buffer an input, output or guard holds, that a view of it reaches, or that another kind of
    call touches, keeps its own memory. A candidate's memory returns to a pool (by shape and
    dtype) after its last read, and a later candidate of the same shape and dtype takes it.
    """
    calls = tape.calls
    pinned = set()
    for array in _arrays_in((tape.inputs, tape.outputs, [g[1] for g in tape.guards]), []):
        pinned.add(id(_root(array)))
    writes: dict = {}  # id(buffer) -> number of writes
    last_read: dict = {}  # id(buffer) -> index of the call that reads it last
    first_write: dict = {}  # id(buffer) -> index of the call that writes it
    buffers: dict = {}  # id -> the buffer
    for index, (function, args, kwargs) in enumerate(calls):
        simple = kwargs is None and isinstance(function, _np.ufunc) and function.nout == 1
        for array in _arrays_in((args, kwargs), []):
            if not simple or _whole(array) is None:
                pinned.add(id(_root(array)))  # a call that is not plain, or a real view
        if not simple:
            continue
        out = args[-1]
        if isinstance(out, _ndarray):
            root = _root(out)
            writes[id(root)] = writes.get(id(root), 0) + 1
            first_write.setdefault(id(root), index)
            buffers[id(root)] = root
        for array in args[:-1]:
            if isinstance(array, _ndarray):
                last_read[id(_root(array))] = index
    candidates = {
        key
        for key, count in writes.items()
        if count == 1
        and key not in pinned
        and buffers[key].flags.c_contiguous
        and last_read.get(key, -1) > first_write[key]
    }
    releases: dict = {}  # call index -> candidates whose last read it is
    for key in candidates:
        releases.setdefault(last_read[key], []).append(key)
    pool: dict = {}  # (shape, dtype) -> buffers free for reuse
    assigned: dict = {}  # id(candidate) -> the buffer that holds it
    saved = 0
    for index, (function, args, kwargs) in enumerate(calls):
        if kwargs is not None or not isinstance(function, _np.ufunc):
            continue
        # Candidates appear here only as whole buffers: each stands in for its holder.
        args = tuple(assigned.get(id(_root(a)), a) if isinstance(a, _ndarray) else a for a in args)
        key = id(_root(args[-1])) if args and isinstance(args[-1], _ndarray) else None
        if key in candidates and key not in assigned:
            buffer = buffers[key]
            free = pool.get((buffer.shape, buffer.dtype))
            if free:
                buffer = free.pop()
                saved += 1
            assigned[key] = buffer
            args = (*args[:-1], buffer)
        calls[index] = (function, args, kwargs)
        for released in releases.get(index, ()):
            holder = assigned[released]
            pool.setdefault((holder.shape, holder.dtype), []).append(holder)
    return saved


def _copy_into(buffer, function, args, kwargs):
    """Replay of a call that takes no ``out=``: compute, then copy into the recorded buffer."""
    _np.copyto(buffer, function(*args, **kwargs), casting="unsafe")


def _restore_then(function, target, initial, args, kwargs):
    """Replay of ``ufunc.at`` (scatter-add into ``target``): start again from the first content."""
    _np.copyto(target, initial)
    function(*args, **kwargs)


def _shares(result, sources):
    """Whether ``result`` is a view of one of the plain arrays in ``sources`` (one level deep)."""
    for source in sources:
        if type(source) in (tuple, list):
            if _shares(result, source):
                return True
        elif isinstance(source, _ndarray) and _np.may_share_memory(result, source):
            return True
    return False


def _track(result, function, args, kwargs, sources):
    """The recording-array form of ``result``, putting the call on the tape unless ``result`` is
    a view of one of ``sources`` (a view needs no replay: it aliases the buffer)."""
    if isinstance(result, _ndarray):
        if _shares(result, sources):
            return result.view(_Recording)
        buffer = result
    elif isinstance(result, _np.generic):  # a NumPy scalar: give it a 0-d buffer
        buffer = _np.asarray(result).copy()
    else:  # shapes, Python values: nothing to replay
        return result
    _active.add_new((buffer,), _copy_into, (buffer, function, args, kwargs), {})
    return buffer.view(_Recording)


def _guarded(convert, description):
    def method(self):
        plain = self.view(_ndarray)
        value = convert(plain)
        if _active is not None:
            where = f"{description} of an array of shape {plain.shape}"
            _active.guards.append((where, plain, convert, value))
        return value

    method.__name__ = description
    return method


def _copying_method(name):
    base = getattr(_ndarray, name)

    def method(self, *args, **kwargs):
        plain = self.view(_ndarray)
        result = base(plain, *args, **kwargs)
        if _active is None:
            return result
        return _track(result, base, (plain, *args), kwargs, (plain,))

    method.__name__ = name
    return method


# Array functions that write into their first argument instead of returning a result.
_IN_PLACE_FUNCTIONS = frozenset(
    {_np.copyto, _np.put, _np.putmask, _np.place, _np.put_along_axis, _np.fill_diagonal}
)

# Ufuncs whose output may not be passed positionally (NumPy deprecates it for these).
_NO_POSITIONAL_OUT = frozenset({_np.maximum, _np.minimum})


class _Recording(_ndarray):
    """An array whose NumPy calls are written on the active tape (see the module docstring)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        args = tuple(_plain(value) for value in inputs)
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_plain(value) for value in out)
        function = getattr(ufunc, method)
        if method == "at":  # in place into args[0], whose first content the replay restores
            initial = args[0].copy()
            function(*args, **kwargs)
            if _active is not None:
                _active.add(_restore_then, (function, args[0], initial, args, kwargs), {})
            return None
        result = function(*args, **kwargs)
        if _active is None:
            return result
        if out is not None:  # the caller chose the buffers
            _active.add(function, args, kwargs)
            return out[0] if len(out) == 1 else out
        if type(result) is tuple:  # divmod, frexp, modf: several buffers
            buffers = tuple(
                part if isinstance(part, _ndarray) else _np.asarray(part).copy() for part in result
            )
            _active.add_new(buffers, function, args, {**kwargs, "out": buffers})
            return tuple(buffer.view(_Recording) for buffer in buffers)
        buffer = result if isinstance(result, _ndarray) else _np.asarray(result).copy()
        if (
            method == "__call__"
            and not kwargs
            and ufunc.nout == 1
            and ufunc not in _NO_POSITIONAL_OUT
        ):
            _active.add_new((buffer,), ufunc, (*args, buffer), None)  # ufunc(a, b, out)
        else:
            _active.add_new((buffer,), function, args, {**kwargs, "out": buffer})
        return buffer.view(_Recording)

    def __array_function__(self, func, types, args, kwargs):
        plain_args = tuple(_plain_nested(value) for value in args)
        plain_kwargs = {key: _plain_nested(value) for key, value in kwargs.items()}
        result = func(*plain_args, **plain_kwargs)
        if _active is None:
            return result
        if func in _IN_PLACE_FUNCTIONS:  # writes into its first argument: replay the write
            _active.add(func, plain_args, plain_kwargs)
            return result
        if type(result) in (tuple, list):  # broadcast_arrays, split...: views or copies each
            return type(result)(
                _track(part, _pick, (func, plain_args, plain_kwargs, index), {}, plain_args)
                for index, part in enumerate(result)
            )
        return _track(result, func, plain_args, plain_kwargs, plain_args)

    def __getitem__(self, index):
        plain = self.view(_ndarray)
        plain_index = _plain_nested(index)
        result = plain[plain_index]
        if _active is None:
            return result
        return _track(result, operator.getitem, (plain, plain_index), {}, (plain,))

    def fill(self, value):
        plain = self.view(_ndarray)
        plain.fill(_plain(value))
        if _active is not None:
            _active.add(_ndarray.fill, (plain, _plain(value)), None)

    def __setitem__(self, index, value):
        plain = self.view(_ndarray)
        plain_index, plain_value = _plain_nested(index), _plain(value)
        plain[plain_index] = plain_value
        if _active is not None:
            _active.add(operator.setitem, (plain, plain_index, plain_value), {})

    reshape = _copying_method("reshape")
    astype = _copying_method("astype")
    copy = _copying_method("copy")
    flatten = _copying_method("flatten")
    ravel = _copying_method("ravel")
    __bool__ = _guarded(bool, "bool()")
    __int__ = _guarded(int, "int()")
    __index__ = _guarded(operator.index, "index()")
    __float__ = _guarded(float, "float()")
    item = _guarded(lambda plain: plain.item(), "item()")
    tolist = _guarded(lambda plain: plain.tolist(), "tolist()")


def _pick(func, args, kwargs, index):
    return func(*args, **kwargs)[index]


arraylib.keep_array_type(_Recording)


# ------------------------------------------------------------------------------------------------
# Signatures and the captured step
# ------------------------------------------------------------------------------------------------


def _is_array_leaf(leaf) -> bool:
    return isinstance(leaf, (_ndarray, _np.generic))


def _signature(leaves, treedef):
    parts = []
    for leaf in leaves:
        if type(leaf) is _ndarray:  # the common case first
            parts.append((leaf.shape, leaf.dtype))
            continue
        if isinstance(leaf, Tracer):
            raise CaptureError(
                f"capture: argument leaf of type {type(leaf).__name__} is a tracer; a captured "
                "step "
                "takes plain arrays (pass tensor.data, and differentiate inside the step)"
            )
        if _is_array_leaf(leaf):
            parts.append((leaf.shape, leaf.dtype))
        elif arraylib.is_array(leaf):  # a device (CuPy) array: recorded as a CUDA graph
            parts.append(("device", arraylib.device_of(leaf), tuple(leaf.shape), leaf.dtype))
        else:
            try:
                hash(leaf)
            except TypeError:
                raise CaptureError(
                    f"capture: argument leaf {leaf!r} is neither an array nor a hashable constant"
                ) from None
            parts.append(("static", type(leaf), leaf))
    return structure_key(treedef), tuple(parts)


def _leaf_checks(signature):
    """Per leaf, what a repeated call must match: (shape, dtype) of a NumPy array, or
    (None, constant); None if the signature has a leaf of another kind (a device array)."""
    checks = []
    for part in signature[1]:
        if part[0] == "static":
            checks.append((None, part[2]))
        elif part[0] == "device":
            return None
        else:
            checks.append(part)
    return checks


def _leaf_paths(args):
    """Readable paths of the leaves of ``args`` in flattening order (``args[1]['w']``), for
    errors."""
    paths = []
    stack = [("args", args)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            keys = sorted(node) if all(isinstance(k, str) for k in node) else list(node)
            stack.extend((f"{path}[{key!r}]", node[key]) for key in reversed(keys))
        elif isinstance(node, (list, tuple)):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(node))))
        elif node is not None:
            paths.append(path)
    return paths


def _on_device(signature) -> bool:
    """Whether a signature has a device array: such a step is recorded as a CUDA graph."""
    return any(part[0] == "device" for part in signature[1])


def _describe(part):
    if part[0] == "static":
        return f"constant {part[2]!r}"
    if part[0] == "device":
        _, device, shape, dtype = part
        return f"shape {shape} dtype {dtype.name} on {device}"
    shape, dtype = part
    return f"shape {shape} dtype {dtype.name}"


class CapturedStep:
    """A step function with its recorded tapes (one per input signature); call it like the step.

    ``stats`` counts ``captures`` (tapes or CUDA graphs recorded), ``replays`` and ``fallbacks``
    (calls redone eagerly because a guard or an error said the tape did not apply; CPU only).
    """

    def __init__(
        self,
        step_fn,
        *,
        on_new_signature="recapture",
        on_guard_failure="eager",
        verify=True,
        rtol=1e-5,
        atol=1e-6,
        copy_outputs=True,
        reuse_buffers=True,
        dedupe=True,
        prune=True,
    ):
        if on_new_signature not in ("recapture", "raise"):
            raise ValueError(
                "capture: on_new_signature must be 'recapture' or 'raise', got "
                f"{on_new_signature!r}"
            )
        if on_guard_failure not in ("eager", "raise"):
            raise ValueError(
                f"capture: on_guard_failure must be 'eager' or 'raise', got {on_guard_failure!r}"
            )
        functools.update_wrapper(self, step_fn)
        self.step_fn = step_fn
        self.on_new_signature = on_new_signature
        self.on_guard_failure = on_guard_failure
        self.verify = verify
        self.rtol, self.atol = rtol, atol
        self.copy_outputs = bool(copy_outputs)
        self.reuse_buffers = bool(reuse_buffers)
        self.dedupe = bool(dedupe)
        self.prune = bool(prune)
        self.tapes = {}  # signature -> _Tape (CPU) or chainrule.backend.cuda.graph.GraphStep (GPU)
        # The tape of the last call, with its argument structure and leaf checks: a training
        # loop calls with one signature, which is then matched without flattening afresh.
        self._last = None
        self.stats = {"captures": 0, "replays": 0, "fallbacks": 0}

    # -- recording ---------------------------------------------------------------------------------
    def record(self, *args):
        """Record a tape for the signature of ``args`` (replacing any) and return the step's
        result on ``args``, computed eagerly while recording."""
        leaves, treedef = tree_flatten(args)
        signature = _signature(leaves, treedef)
        if _on_device(signature):
            tape, result = self._record_graph(leaves, treedef)
        else:
            tape, result = self._record(leaves, treedef)
        self.tapes[signature] = tape
        self._last = None  # it may have held the tape this one replaces
        self.stats["captures"] += 1
        return result

    def _record(self, leaves, treedef):
        global _active
        if _active is not None:
            raise CaptureError(
                "capture: a captured step was called while another one is being recorded"
            )
        tape = _Tape()
        watched = []
        for position, leaf in enumerate(leaves):
            if _is_array_leaf(leaf):
                buffer = _np.array(leaf)  # a fresh buffer the replays refresh in place
                tape.inputs.append(buffer)
                tape.input_index.append(position)
                watched.append(buffer.view(_Recording))
            else:
                watched.append(leaf)
        _active = tape
        try:
            result = self.step_fn(*tree_unflatten(treedef, watched))
        finally:
            _active = None
        out_leaves, tape.out_def = tree_flatten(result)
        for leaf in out_leaves:
            if isinstance(leaf, Tracer):
                raise CaptureError(
                    f"capture: the step returned a {type(leaf).__name__}; return plain arrays "
                    "(e.g. from chainrule.value_and_grad, or tensor.data)"
                )
            tape.outputs.append(_plain(leaf))
        result = tree_unflatten(tape.out_def, [_fresh(leaf) for leaf in tape.outputs])
        tape.deduped = _dedupe(tape) if self.dedupe else 0
        tape.pruned = _prune(tape) if self.prune else 0
        tape.outside = _written_outside(tape)
        tape.created = set()  # needed by the passes only (the ids would go stale)
        tape.reused = _reuse_buffers(tape) if self.reuse_buffers else 0
        return tape, result

    def _record_graph(self, leaves, treedef):
        """The GPU branch: capture the step into a CUDA graph (see
        :mod:`chainrule.backend.cuda.graph`)."""
        if _active is not None:
            raise CaptureError(
                "capture: a captured step was called while another one is being recorded"
            )
        from .cuda import graph as cuda_graph  # noqa: PLC0415  (CUDA only; imports nothing heavy)

        return cuda_graph.record_graph(
            self.step_fn, leaves, treedef, copy_outputs=self.copy_outputs
        )

    # -- calling
    # -------------------------------------------------------------------------------------
    def __call__(self, *args):
        last = self._last
        leaves = None
        if last is not None:
            leaves = leaves_like(args, last[0])
            if leaves is not None and not leaves_match(leaves, last[1]):
                leaves = None
        if leaves is not None:
            tape = last[2]
        else:
            leaves, treedef = tree_flatten(args)
            signature = _signature(leaves, treedef)
            tape = self.tapes.get(signature)
            if tape is None:
                if self.tapes and self.on_new_signature == "raise":
                    raise ValueError(self._mismatch(args, treedef, signature))
                return self.record(*args)
            if type(tape) is not _Tape:
                return self._replay_graph(tape, args, leaves)
            checks = _leaf_checks(signature)
            self._last = None if checks is None else (treedef, checks, tape)
        for buffer, position in zip(tape.inputs, tape.input_index, strict=True):
            _np.copyto(buffer, leaves[position])
        try:
            failed = tape.replay()
        except Exception as error:  # the eager step reports the error in its own words
            failed = ("the replay", type(error).__name__, str(error))
        if failed is not None:
            if self.on_guard_failure == "raise":
                what, seen, now = failed
                raise CaptureError(
                    f"capture: {what} gave {now!r} on this call but {seen!r} when the step was "
                    "recorded; the step takes a data-dependent Python branch, which a tape cannot "
                    "replay"
                )
            self.stats["fallbacks"] += 1
            return self.step_fn(*args)
        self.stats["replays"] += 1
        if self.copy_outputs:
            result = tree_unflatten(tape.out_def, [_fresh(leaf) for leaf in tape.outputs])
        else:
            result = tree_unflatten(tape.out_def, list(tape.outputs))
        if self.verify and not tape.verified:
            # The check runs the step once more: what it writes into arrays from outside the
            # step (running statistics) is put back as the replay left it.
            outside = [(array, array.copy()) for array in tape.outside]
            try:
                self._check_against_eager(args, result)
            finally:
                for array, replayed in outside:
                    _np.copyto(array, replayed)
            tape.verified = True
        return result

    def _replay_graph(self, graph_step, args, leaves):
        result = graph_step.replay(leaves)
        self.stats["replays"] += 1
        if self.verify and not graph_step.verified:
            self._check_against_eager(args, result)
            graph_step.verified = True
        return result

    def _check_against_eager(self, args, result):
        expected_leaves, expected_def = tree_flatten(self.step_fn(*args))
        got_leaves, got_def = tree_flatten(result)
        if expected_def != got_def:
            raise CaptureError(
                f"capture: the replay returned {got_def} but the eager step {expected_def}"
            )
        for index, (got, expected) in enumerate(zip(got_leaves, expected_leaves, strict=True)):
            got, expected = _on_host(got), _on_host(_plain(expected))
            if not _is_array_leaf(got) and not _is_array_leaf(expected):
                same = got == expected
            else:
                got_array, expected_array = _np.asarray(got), _np.asarray(expected)
                same = got_array.shape == expected_array.shape and bool(
                    _np.allclose(
                        got_array, expected_array, rtol=self.rtol, atol=self.atol, equal_nan=True
                    )
                )
            if not same:
                detail = ""
                if (
                    _is_array_leaf(got)
                    and _is_array_leaf(expected)
                    and _np.shape(got) == _np.shape(expected)
                ):
                    difference = _np.asarray(got, dtype=float) - _np.asarray(expected, dtype=float)
                    gap = _np.max(_np.abs(difference), initial=0)
                    detail = f" (largest difference {gap:.3g})"
                raise CaptureError(
                    f"capture: output leaf {index} of the replayed step differs from the eager step"
                    f"{detail}; the step reads a value the tape cannot see change (a closure, a "
                    "random "
                    "generator, or a plain copy of an input made with np.array/np.asarray). Pass "
                    "it "
                    "as an argument, or run this step eagerly"
                )

    def _mismatch(self, args, treedef, signature):
        recorded_structure, recorded_parts = next(iter(self.tapes))
        if recorded_structure != signature[0]:
            return (
                f"capture: the arguments have structure {treedef} (keys and kinds) unlike the "
                "arguments the step was recorded with (on_new_signature='raise')"
            )
        paths = _leaf_paths(args)
        for path, now, then in zip(paths, signature[1], recorded_parts, strict=True):
            if now != then:
                return (
                    f"capture: {path} has {_describe(now)} but the step was recorded with "
                    f"{_describe(then)} (on_new_signature='raise'; use 'recapture' to record a "
                    "tape "
                    "for each signature)"
                )
        return "capture: the arguments differ from the recorded ones"  # pragma: no cover


def _on_host(leaf):
    """A device array's values as a NumPy array (for comparisons); anything else unchanged."""
    if not isinstance(leaf, _ndarray) and arraylib.is_array(leaf):
        return arraylib.to_numpy(leaf)
    return leaf


def _fresh(leaf):
    """What a replay hands back for an output leaf: a copy of a buffer, or the constant itself."""
    if isinstance(leaf, _ndarray):
        return leaf.copy()
    return leaf


def capture(step_fn=None, example_args=None, **options):
    """A :class:`CapturedStep` of ``step_fn`` (see the module docstring).

    ``capture(step_fn, example_args)`` records a tape now, for the signature of the tuple
    ``example_args``; ``@capture`` (or ``capture(step_fn)``) records at the first call. Arguments
    holding CuPy arrays are captured into a CUDA graph instead of a tape (see the module
    docstring). Options: ``on_new_signature`` ("recapture" or "raise"), ``on_guard_failure``
    ("eager" or "raise"; CPU tapes), ``verify`` (check the first replay of each tape or graph
    against the eager step), ``rtol``/``atol``, ``copy_outputs`` (return copies of the output
    buffers, the default, or the buffers themselves, which the next call overwrites),
    ``reuse_buffers`` (let dead intermediates share memory, the default), ``dedupe`` (drop calls
    that repeat an earlier one, the default), ``prune`` (drop calls whose results nothing returned
    depends on, the default).
    """
    if step_fn is None:
        return lambda fn: capture(fn, example_args, **options)
    captured = CapturedStep(step_fn, **options)
    if example_args is not None:
        if not isinstance(example_args, tuple):
            raise TypeError(
                "capture: example_args must be the tuple of positional arguments, got "
                f"{type(example_args).__name__}"
            )
        captured.record(*example_args)
    return captured
