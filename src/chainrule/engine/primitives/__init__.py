"""The primitive table's entries, one family per module: ``elementwise``, ``shapes``,
``reductions`` (with the fused softmax cross-entropy), ``linalg`` and ``decompositions``
(Cholesky, QR, eigh, SVD, slogdet, pinv).

Each entry is one :func:`~chainrule.engine.table.defprim` call holding everything known about
the primitive (see :mod:`chainrule.engine.table`). Importing this package fills
:data:`TABLE` and checks that every entry is complete.
"""

from ..table import TABLE, Primitive, check_table, defprim, public
from . import decompositions  # noqa: F401 - fills the table with its entries
from .elementwise import ABS, ADD, DIV, MUL, NEG, SUB
from .linalg import MATMUL
from .reductions import SUM
from .shapes import BROADCAST_TO

check_table()

__all__ = [
    "ABS",
    "ADD",
    "BROADCAST_TO",
    "DIV",
    "MATMUL",
    "MUL",
    "NEG",
    "SUB",
    "SUM",
    "TABLE",
    "Primitive",
    "check_table",
    "defprim",
    "public",
]
