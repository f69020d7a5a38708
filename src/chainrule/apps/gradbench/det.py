"""gradbench ``det``: the determinant by expansion by minors, and its gradient by reverse mode.

The recursive expansion along the first row evaluates the same minors many times over (ℓ! products
in all). Here every minor is evaluated once, bottom-up: the minors on the last k rows are indexed
by the set of k columns they keep, and a minor on k + 1 rows is the alternating sum, over its
columns j, of A[row, j] times the minor on k rows without column j. That is the same expansion,
term for term, in ℓ·2^(ℓ−1) multiplications, each level one gather-multiply-sum over all its
minors. The index tables depend only on ℓ and are built once per size.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from ... import numpy as cnp
from .common import floats, primal_and_gradient


@functools.cache
def _expansion_tables(ell: int):
    """For each level k = 1..ℓ−1 (minors on the last k + 1 rows): ``(columns, sub_minors, signs)``,
    each of shape (number of minors on k + 1 rows, k + 1): the column expanded along, the position
    of the k-row minor without that column in the previous level, and the sign (−1)^position."""
    levels = []
    previous = {subset: i for i, subset in enumerate(itertools.combinations(range(ell), 1))}
    for size in range(2, ell + 1):
        subsets = list(itertools.combinations(range(ell), size))
        columns = np.array(subsets, dtype=np.intp)
        sub_minors = np.array(
            [[previous[subset[:p] + subset[p + 1 :]] for p in range(size)] for subset in subsets],
            dtype=np.intp,
        )
        signs = np.where(np.arange(size) % 2 == 0, 1.0, -1.0)
        levels.append((columns, sub_minors, signs))
        previous = {subset: i for i, subset in enumerate(subsets)}
    return levels


def determinant(matrix_flat, ell: int):
    matrix = cnp.reshape(matrix_flat, (ell, ell))
    minors = matrix[ell - 1]  # 1×1 minors on the last row, one per column
    for level, (columns, sub_minors, signs) in enumerate(_expansion_tables(ell)):
        row = matrix[ell - 2 - level]
        terms = cnp.take(row, columns) * cnp.take(minors, sub_minors) * signs
        minors = cnp.sum(terms, axis=1)
    return minors[0]


def _prepare(raw):
    ell = int(raw["ell"])
    matrix = floats(raw["A"])
    if matrix.shape != (ell * ell,):
        raise ValueError(f"det: A has {matrix.size} entries, expected ell*ell = {ell * ell}")
    _expansion_tables(ell)  # index tables: part of setting up for this size, not of each run
    return matrix, ell


FUNCTIONS = primal_and_gradient(_prepare, determinant)
