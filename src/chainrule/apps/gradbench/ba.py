"""gradbench ``ba``: bundle adjustment (ADBench): reprojection errors of p observations of m
points by n cameras, plus one weight error per observation, and the sparse Jacobian.

The Jacobian is block-sparse: the two rows of observation i only touch camera cam(i)'s 11
parameters, point pt(i)'s 3 coordinates and weight w_i; the weight row only touches w_i. Written
in each observation's own copy of its camera and point (a gather, which the CSR column indices
undo), the Jacobian is block-diagonal over observations, so its rows compress into 3 groups
(every x error, every y error, every weight error): the gradient of each group's sum with respect
to observation i's parameters is row i of the Jacobian. chainrule.jacobian of those 3 sums gives
the compressed Jacobian (3 × 15 per observation); its cost model picks reverse mode (3 outputs
against 15p inputs), one recorded evaluation and one batched backward sweep of 3 cotangents,
observations in blocks of 262,144 to bound the recorded graph's memory.

The input is ADBench's compact form (one camera, point, weight and feature, replicated;
observation i sees camera i mod n and point i mod m); the outputs are the reference's compact
forms: the first reprojection error pair and weight error with their repeat counts, and the
first 30 + last entries of the CSR rows/cols/vals.
"""

from __future__ import annotations

import functools

import numpy as np

from ... import numpy as cnp
from ...transforms import jacobians
from .common import EvalFunction, floats

CAMERA_PARAMETERS = 11
ROW_NONZEROS = CAMERA_PARAMETERS + 3 + 1  # of a reprojection row: camera, point, weight
OBSERVATIONS_PER_PASS = 1 << 18


def _rotate(rotation, points):
    """Rodrigues' rotation of each point by its angle-axis vector (rows of both)."""
    squared_angle = cnp.sum(rotation * rotation, axis=1, keepdims=True)
    nonzero = np.asarray(cnp.stop_gradient(squared_angle)) != 0
    safe = cnp.where(nonzero, squared_angle, 1.0)
    angle = cnp.sqrt(safe)
    axis = rotation / angle
    cos, sin = cnp.cos(angle), cnp.sin(angle)
    along = cnp.sum(axis * points, axis=1, keepdims=True) * (1.0 - cos)
    rotated = points * cos + cnp.cross(axis, points) * sin + axis * along
    if nonzero.all():
        return rotated
    return cnp.where(nonzero, rotated, points + cnp.cross(rotation, points))


def observation_residuals(cam, point, weights, features):
    """Reprojection errors (p, 2) and weight errors (p,) from each observation's own camera
    (p, 11), point (p, 3) and weight (p,)."""
    rotated = _rotate(cam[:, 0:3], point - cam[:, 3:6])
    projected = rotated[:, 0:2] / rotated[:, 2:3]
    radius_squared = cnp.sum(projected * projected, axis=1, keepdims=True)
    distortion = (
        1.0 + cam[:, 9:10] * radius_squared + cam[:, 10:11] * radius_squared * radius_squared
    )
    projected = projected * distortion * cam[:, 6:7] + cam[:, 7:9]
    reprojection = weights[:, None] * (projected - features)
    return reprojection, 1.0 - weights * weights


def residuals(cameras, points, weights, features, camera_of, point_of):
    """The 2p reprojection errors (as (p, 2)) and the p weight errors of the objective."""
    cam = cnp.take(cameras, camera_of, axis=0)  # (p, 11)
    point = cnp.take(points, point_of, axis=0)  # (p, 3)
    return observation_residuals(cam, point, weights, features)


def _row_groups(cam, point, weights, features):
    """The three row groups' sums: Σ_i err_i,x, Σ_i err_i,y, Σ_i werr_i. Observation i's own
    parameters reach only its own rows, so the gradient of each sum with respect to them is
    that observation's row of the Jacobian."""
    reprojection, weight_error = observation_residuals(cam, point, weights, features)
    return cnp.stack(
        [cnp.sum(reprojection[:, 0]), cnp.sum(reprojection[:, 1]), cnp.sum(weight_error)]
    )


_compressed_jacobian = jacobians.jacobian(_row_groups, argnums=(0, 1, 2))


def sparse_jacobian(cameras, points, weights, features, camera_of, point_of):
    """The Jacobian in CSR form ``(rows, cols, vals)``: 2p reprojection rows of 15 nonzeros each,
    then p weight rows of one nonzero each; columns are cameras, then points, then weights."""
    n, m, p = cameras.shape[0], points.shape[0], weights.shape[0]
    reprojection = np.empty((p, 2, ROW_NONZEROS))
    weight_error = np.empty((p, ROW_NONZEROS))
    for start in range(0, p, OBSERVATIONS_PER_PASS):  # bounds the recorded graph's memory
        block = slice(start, min(start + OBSERVATIONS_PER_PASS, p))
        # each observation's own copy of its camera's and its point's parameters
        cam, point = cameras[camera_of[block]], points[point_of[block]]
        by_camera, by_point, by_weight = _compressed_jacobian(
            cam, point, weights[block], features[block]
        )
        rows = np.concatenate(
            [by_camera, by_point, by_weight[:, :, None]], axis=2
        )  # (3 groups, b, 15)
        reprojection[block] = np.moveaxis(rows[0:2], 0, 1)
        weight_error[block] = rows[2]
    observation = np.arange(p)
    columns = np.concatenate(
        [
            CAMERA_PARAMETERS * camera_of[:, None] + np.arange(CAMERA_PARAMETERS)[None, :],
            CAMERA_PARAMETERS * n + 3 * point_of[:, None] + np.arange(3)[None, :],
            (CAMERA_PARAMETERS * n + 3 * m + observation)[:, None],
        ],
        axis=1,
    )  # (p, 15), in the order of the groups
    cols = np.concatenate(
        [
            np.repeat(columns[:, None, :], 2, axis=1).ravel(),
            CAMERA_PARAMETERS * n + 3 * m + observation,
        ]
    )
    vals = np.concatenate(
        [np.asarray(reprojection).ravel(), np.asarray(weight_error)[:, ROW_NONZEROS - 1]]
    )
    rows = np.concatenate(
        [ROW_NONZEROS * np.arange(2 * p + 1), ROW_NONZEROS * 2 * p + 1 + np.arange(p)]
    )
    return rows, cols, vals


@functools.lru_cache(maxsize=8)
def _observations(n: int, m: int, p: int):
    observation = np.arange(p)
    return observation % n, observation % m


def _prepare(raw):
    n, m, p = int(raw["n"]), int(raw["m"]), int(raw["p"])
    cameras = np.tile(floats(raw["cam"]).reshape(1, CAMERA_PARAMETERS), (n, 1))
    points = np.tile(floats(raw["x"]).reshape(1, 3), (m, 1))
    weights = np.full(p, float(raw["w"]))
    features = np.tile(floats(raw["feat"]).reshape(1, 2), (p, 1))
    camera_of, point_of = _observations(n, m, p)
    return cameras, points, weights, features, camera_of, point_of


def _objective_json(result):
    reprojection, weight_error = (np.asarray(part) for part in result)
    return {
        "reproj_error": {
            "elements": reprojection[0].tolist(),
            "repeated": int(reprojection.shape[0]),
        },
        "w_err": {"element": float(weight_error[0]), "repeated": int(weight_error.shape[0])},
    }


def _jacobian_json(csr):
    rows, cols, vals = csr
    shown = 2 * ROW_NONZEROS  # the first observation's two rows, as the reference reports them
    return {
        "rows": [int(v) for v in np.concatenate([rows[:shown], rows[-1:]])],
        "cols": [int(v) for v in np.concatenate([cols[:shown], cols[-1:]])],
        "vals": [float(v) for v in np.concatenate([vals[:shown], vals[-1:]])],
    }


FUNCTIONS = {
    "objective": EvalFunction(_prepare, lambda args: residuals(*args), _objective_json),
    "jacobian": EvalFunction(_prepare, lambda args: sparse_jacobian(*args), _jacobian_json),
}
