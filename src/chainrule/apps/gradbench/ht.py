"""gradbench ``ht``: hand tracking (ADBench): a skinned hand model posed by 26 parameters, its
residuals against observed points, and the dense Jacobian of those residuals.

The objective, batched throughout: the 26 parameters fill the pose matrix by a gather; every
bone's Euler-angle rotation is built at once; bones are chained to their parents one tree level
at a time (a hand has 5 levels, so 5 batched 4×4 products instead of 22 sequential ones); each
needed vertex is moved by the weight-blended transform of all bones (two einsums); the global
rotation, scale and translation follow. Only the vertices the correspondences refer to are
skinned.

In the ``complicated`` variant each observed point is matched to a point inside a triangle
with barycentric coordinates u (2 per point), which are parameters too. Each residual triple
depends on its own u pair only, so those 2p columns compress to 2 (one tangent moves every
u₀, one every u₁). The Jacobian is then 3p × (2 + 26) for complicated inputs and 3p × 26 for
simple ones, computed by ``chainrule.jacobian`` (the cost model picks forward mode: 26 or 28
inputs against 3p outputs) in one batched pass.
"""

from __future__ import annotations

import numpy as np

from ... import numpy as cnp
from ...transforms import jacobians
from .common import EvalFunction, floats

FINGERS = 5


def _pose_index(bone_count: int) -> np.ndarray:
    """(3, bone_count + 3) positions into [θ..., 0, 1] filling the pose matrix as the reference
    does: column 0 the global rotation, 1 the scale (ones), 2 the translation, then for each
    finger three joint columns (two angles at the first, one at the others) and a fixed one."""
    theta_size = 6 + FINGERS * 4
    zero, one = theta_size, theta_size + 1
    index = np.full((3, bone_count + 3), zero, dtype=np.intp)
    index[:, 0] = [0, 1, 2]
    index[:, 1] = one
    index[:, 2] = [3, 4, 5]
    position, column = 6, 5
    for _ in range(FINGERS):
        for joint in range(3):
            index[0, column] = position
            position += 1
            if joint == 0:
                index[1, column] = position
                position += 1
            column += 1
        column += 1
    return index


def _levels(parents: np.ndarray) -> list[np.ndarray]:
    """The bones grouped by depth in the tree (roots first); parents come before children."""
    depth = np.zeros(len(parents), dtype=np.intp)
    for bone, parent in enumerate(parents):
        depth[bone] = 0 if parent < 0 else depth[parent] + 1
    return [np.flatnonzero(depth == level) for level in range(int(depth.max()) + 1)]


def _euler_rotations(angles):
    """R = Rz·Ry·Rx per row of ``angles`` (x, z, y order, as the model stores them): (b, 3, 3)."""
    cx, cz, cy = cnp.cos(angles[:, 0]), cnp.cos(angles[:, 1]), cnp.cos(angles[:, 2])
    sx, sz, sy = cnp.sin(angles[:, 0]), cnp.sin(angles[:, 1]), cnp.sin(angles[:, 2])
    entries = [
        cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx,
        sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx,
        -sy, cy * sx, cy * cx,
    ]  # fmt: skip
    return cnp.reshape(cnp.stack(entries, axis=1), (-1, 3, 3))


def _angle_axis_rotation(angle_axis):
    norm = cnp.sqrt(cnp.sum(angle_axis * angle_axis))
    if float(cnp.stop_gradient(norm)) < 1e-4:
        return np.eye(3)
    x, y, z = angle_axis[0] / norm, angle_axis[1] / norm, angle_axis[2] / norm
    s, c = cnp.sin(norm), cnp.cos(norm)
    entries = [
        x * x + (1 - x * x) * c, x * y * (1 - c) - z * s, x * z * (1 - c) + y * s,
        x * y * (1 - c) + z * s, y * y + (1 - y * y) * c, y * z * (1 - c) - x * s,
        x * z * (1 - c) - y * s, z * y * (1 - c) + x * s, z * z + (1 - z * z) * c,
    ]  # fmt: skip
    return cnp.reshape(cnp.stack(entries), (3, 3))


def vertex_positions(theta, model):
    """Posed positions (v, 3) of the model's needed vertices."""
    padded = cnp.concatenate([theta, np.array([0.0, 1.0])])
    pose = cnp.take(padded, model["pose_index"])  # (3, bones + 3)
    rotations = _euler_rotations(cnp.transpose(pose[:, 3:]))  # (bones, 3, 3)
    base = model["base_relatives"]
    relatives = cnp.concatenate([cnp.matmul(base[:, :, :3], rotations), base[:, :, 3:]], axis=2)
    chained = []
    position_in_chained = np.empty(len(model["parents"]), dtype=np.intp)
    count = 0
    for level, bones in enumerate(model["levels"]):
        own = cnp.take(relatives, bones, axis=0)
        if level == 0:
            absolute = own
        else:
            so_far = cnp.concatenate(chained, axis=0)
            parent_absolute = cnp.take(so_far, position_in_chained[model["parents"][bones]], axis=0)
            absolute = cnp.matmul(parent_absolute, own)
        chained.append(absolute)
        position_in_chained[bones] = np.arange(count, count + len(bones))
        count += len(bones)
    absolutes = cnp.take(cnp.concatenate(chained, axis=0), position_in_chained, axis=0)
    transforms = cnp.matmul(absolutes, model["inverse_base_absolutes"])[:, :3, :]  # (bones, 3, 4)
    blended = cnp.einsum("vb,bij->vij", model["weights"], transforms)  # (v, 3, 4)
    positions = cnp.einsum("vij,vj->vi", blended, model["base_positions"])  # (v, 3)
    if model["is_mirrored"]:
        positions = positions * np.array([-1.0, 1.0, 1.0])
    rotation = _angle_axis_rotation(pose[:, 0]) * pose[:, 1][None, :]
    return cnp.matmul(positions, cnp.transpose(rotation)) + pose[:, 2][None, :]


def residuals(theta, us, data):
    """Observed points minus model points, (p, 3); model points are vertices (simple) or
    barycentric combinations of triangle corners (complicated, ``us`` not None)."""
    positions = vertex_positions(theta, data["model"])
    if us is None:
        return data["points"] - cnp.take(positions, data["targets"], axis=0)
    targets = data["targets"]
    first, second, third = (cnp.take(positions, targets[:, corner], axis=0) for corner in range(3))
    # u₀·first + u₁·second + (1 − u₀ − u₁)·third, with fewer whole-array operations
    hand = us[:, 0:1] * (first - third) + us[:, 1:2] * (second - third) + third
    return data["points"] - hand


def _residuals_along_columns(parameters, theta_size, us, data):
    """The residuals as a function of the Jacobian's columns: [shift of every u₀, shift of
    every u₁, θ...] for complicated inputs, θ for simple ones."""
    if us is None:
        return residuals(parameters, None, data)
    return residuals(parameters[2:], us + parameters[None, 0:2], data)


_jacobian_along_columns = jacobians.jacobian(_residuals_along_columns, argnums=0)


def dense_jacobian(theta, us, data):
    columns = theta if us is None else np.concatenate([np.zeros(2), theta])
    jacobian = _jacobian_along_columns(columns, theta.shape[0], us, data)  # (p, 3, columns)
    return np.reshape(np.asarray(jacobian), (-1, columns.shape[0]))


def _prepare(raw):
    model_raw = raw["data"]["model"]
    correspondences = np.asarray(raw["data"]["correspondences"], dtype=np.intp)
    us = raw.get("us")
    if us is not None and len(us) == 0:
        us = None
    if us is None:
        used = correspondences
    else:
        used = np.asarray(model_raw["triangles"], dtype=np.intp)[correspondences]  # (p, 3)
    needed, targets = np.unique(used, return_inverse=True)
    parents = np.asarray(model_raw["parents"], dtype=np.intp)
    model = {
        "parents": parents,
        "levels": _levels(parents),
        "pose_index": _pose_index(len(parents)),
        "base_relatives": floats(model_raw["base_relatives"]),
        "inverse_base_absolutes": floats(model_raw["inverse_base_absolutes"]),
        "base_positions": floats(model_raw["base_positions"])[needed],
        "weights": floats(model_raw["weights"])[needed],
        "is_mirrored": bool(model_raw["is_mirrored"]),
    }
    data = {
        "model": model,
        "points": floats(raw["data"]["points"]),
        "targets": targets.reshape(used.shape),
    }
    return floats(raw["theta"]), (None if us is None else floats(us)), data


def _rows(matrix):
    return np.asarray(matrix, dtype=np.float64).tolist()


FUNCTIONS = {
    "objective": EvalFunction(_prepare, lambda args: np.ravel(np.asarray(residuals(*args))), _rows),
    "jacobian": EvalFunction(_prepare, lambda args: dense_jacobian(*args), _rows),
}
