"""The DAVIS 2017 measures of a segmentation against the ground truth, to the numbers of the
official code (davis2017-evaluation's ``davis2017/metrics.py`` and ``utils.py``; SA-V's
``sav_benchmark.py`` and vos-benchmark use the same per-frame definitions):

- J (region similarity): intersection over union, 1 when both masks are empty.
- F (contour accuracy): the boundary F-measure. Boundaries are one pixel wide (``seg2bmap``:
  a pixel whose value differs from its right, lower or lower-right neighbour; the image's
  last row and column compare along the edge only); a boundary pixel is matched when a
  boundary pixel of the other mask lies within a disk of radius ceil(0.008 x image diagonal)
  (``x*x + y*y <= r*r``, scikit-image's ``disk`` that the official code dilates with);
  precision = matched predicted / predicted boundary pixels, recall = matched true / true;
  1 and 0 (or 0 and 1) when only one mask has a boundary, 1 and 1 when neither has;
  F = 2PR / (P + R), 0 when P + R = 0.
- Mean, Recall (share of frames > 0.5) and Decay (mean of the first quarter of the frames
  minus mean of the last quarter, in the official code's overlapping bins) of a sequence.

``frame_scores`` scores every object of a label map at once: J from one joint histogram of
the two label maps, F from the pixels where the labels change (a few thousand) matched by a
k-d tree (scipy), instead of a dilated full-size image per object. ``jaccard``/``f_measure``
take one pair of binary masks, as the official functions do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

VOID = 255  # the void label (as sam2kit.vos.datasets.VOID)

__all__ = ["BOUND_TH", "bound_radius", "seg2bmap", "jaccard", "f_measure", "frame_scores", "FrameScores",
           "statistics", "decay_bins"]

BOUND_TH = 0.008


def _kdtree():
    try:
        from scipy.spatial import cKDTree
    except ImportError:
        raise ImportError("scoring boundaries (F) needs scipy: pip install scipy "
                          "(or pip install 'sam2kit[eval]')") from None
    return cKDTree


def bound_radius(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """The matching radius in pixels: ceil(bound_th x diagonal) (bound_th >= 1: itself)."""
    return int(bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(shape)))


def _neighbours(seg: np.ndarray):
    """The right, lower and lower-right neighbours of every pixel [H, W], the last row and
    column repeated past the edge (so that they compare along the edge only)."""
    e = np.empty_like(seg)
    e[:, :-1], e[:, -1] = seg[:, 1:], seg[:, -1]
    s = np.empty_like(seg)
    s[:-1], s[-1] = seg[1:], seg[-1]
    se = np.empty_like(seg)
    se[:-1, :-1], se[-1, :-1], se[:-1, -1], se[-1, -1] = seg[1:, 1:], seg[-1, 1:], seg[1:, -1], seg[-1, -1]
    return e, s, se


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """The one-pixel boundary map [H, W] bool of a binary mask (davis2017 ``_seg2bmap``)."""
    seg = np.asarray(mask).astype(bool)
    e, s, se = _neighbours(seg)
    return (seg ^ e) | (seg ^ s) | (seg ^ se)


def _matched(points: np.ndarray, others: np.ndarray, radius: int) -> int:
    """How many of ``points`` [N, 2] have one of ``others`` [M, 2] within ``radius``."""
    if not len(points) or not len(others):
        return 0
    d, _ = _kdtree()(others).query(points, k=1, distance_upper_bound=radius + 0.5)
    return int(np.count_nonzero(d * d <= radius * radius + 0.5))  # squared distances are integers


def _f_from_boundaries(gt_pts: np.ndarray, fg_pts: np.ndarray, radius: int) -> float:
    n_fg, n_gt = len(fg_pts), len(gt_pts)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = _matched(fg_pts, gt_pts, radius) / float(n_fg)
        recall = _matched(gt_pts, fg_pts, radius) / float(n_gt)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def jaccard(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """J of two binary masks [H, W] (``void``: pixels left out), as ``db_eval_iou``."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    keep = ~np.asarray(void, bool) if void is not None else True
    inter = np.count_nonzero(gt & pred & keep)
    union = np.count_nonzero((gt | pred) & keep)
    return 1.0 if union == 0 else inter / union


def f_measure(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None,
              bound_th: float = BOUND_TH) -> float:
    """F of two binary masks [H, W] (``void``: pixels taken out of both first), as the
    official ``f_measure``."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    if void is not None:
        gt, pred = gt & ~np.asarray(void, bool), pred & ~np.asarray(void, bool)
    radius = bound_radius(pred.shape, bound_th)
    return _f_from_boundaries(np.argwhere(seg2bmap(gt)), np.argwhere(seg2bmap(pred)), radius)


class _Changes:
    """The pixels of a label map [H, W] whose boundary status can be set for some object: where
    a pixel differs from a neighbour (right, lower, lower-right; the last row and column
    compare along the edge). A pixel is on object k's boundary exactly when it is one of these
    and k is its own or a neighbour's label."""

    def __init__(self, labels: np.ndarray):
        h, w = labels.shape
        changed = np.zeros((h, w), bool)
        changed[:, :-1] |= labels[:, :-1] != labels[:, 1:]
        changed[:-1] |= labels[:-1] != labels[1:]
        changed[:-1, :-1] |= labels[:-1, :-1] != labels[1:, 1:]
        ys, xs = np.divmod(np.flatnonzero(changed), w)  # (np.nonzero is ~10x slower on 2-D)
        ye, xe = np.minimum(ys + 1, h - 1), np.minimum(xs + 1, w - 1)  # neighbours, edge repeated
        self.points = np.stack([ys, xs], axis=1)
        self.labels = (labels[ys, xs], labels[ys, xe], labels[ye, xs], labels[ye, xe])

    def boundary(self, k: int) -> np.ndarray:
        """Object k's boundary pixels [N, 2] (row, column)."""
        own, e, s, se = self.labels
        return self.points[(own == k) | (e == k) | (s == k) | (se == k)]


@dataclass
class FrameScores:
    """One frame's scores: J and F [len(ids)] of the objects ``ids``, and the labels present
    in each map (0 and 255 included where present)."""

    ids: np.ndarray
    j: np.ndarray
    f: np.ndarray
    gt_labels: np.ndarray
    pred_labels: np.ndarray


def _content_box(gt: np.ndarray, pred: np.ndarray) -> tuple[slice, slice] | None:
    """The smallest window holding every non-zero pixel of both maps and one zero row and
    column around them where the image goes on (None: both maps are all zero). Boundaries
    inside it are those of the whole image, and distances do not depend on the window."""
    nonzero = gt | pred
    rows, cols = np.flatnonzero(nonzero.any(axis=1)), np.flatnonzero(nonzero.any(axis=0))
    if not len(rows):
        return None
    h, w = gt.shape
    return (slice(max(rows[0] - 1, 0), min(rows[-1] + 2, h)), slice(max(cols[0] - 1, 0), min(cols[-1] + 2, w)))


def frame_scores(gt: np.ndarray, pred: np.ndarray, obj_ids=None, void_mask: np.ndarray | None = None,
                 bound_th: float = BOUND_TH) -> FrameScores:
    """J and F of the objects of one frame's label maps [H, W] uint8 (object k where the value
    is k). obj_ids: the objects to score (default: every label in either map but 0 and 255).
    void_mask: pixels left out of both measures (as the official functions' ``void_pixels``);
    None scores every pixel, as DAVIS's semi-supervised evaluation does."""
    if void_mask is not None:
        pred = np.where(void_mask, 0, pred).astype(np.uint8)
        gt = np.where(void_mask, 0, gt).astype(np.uint8)
    radius = bound_radius(gt.shape, bound_th)
    box = _content_box(gt, pred)  # outside it both maps are 0: no object, no boundary
    if box is not None:
        gt, pred = gt[box], pred[box]
    joint = np.bincount(((gt.astype(np.uint16) << 8) | pred).ravel(), minlength=65536).reshape(256, 256)
    n_gt, n_pred = joint.sum(axis=1), joint.sum(axis=0)
    gt_labels, pred_labels = np.flatnonzero(n_gt), np.flatnonzero(n_pred)
    if obj_ids is None:
        ids = np.union1d(gt_labels, pred_labels)
        ids = ids[(ids != 0) & (ids != VOID)]
    else:
        ids = np.asarray(list(obj_ids), dtype=np.int64)
    inter = joint[ids, ids]
    union = n_gt[ids] + n_pred[ids] - inter
    j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    if box is None:
        f = np.ones(len(ids))  # no boundary in either map
    else:
        gt_changes, pred_changes = _Changes(gt), _Changes(pred)
        f = np.array([_f_from_boundaries(gt_changes.boundary(k), pred_changes.boundary(k), radius) for k in ids])
    return FrameScores(ids, j, f, gt_labels, pred_labels)


def decay_bins(n: int) -> list[tuple[int, int]]:
    """The official Decay's four overlapping bins of ``n`` frames as (start, stop) slices:
    edges round(linspace(1, n, 5)) - 1, bin i = [edge i, edge i+1]. The official code casts
    the edges to uint8, so from 257 frames on they wrap around; these are the integers."""
    edges = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
    return [(int(edges[i]), int(edges[i + 1]) + 1) for i in range(4)]


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    """(Mean, Recall, Decay) of one object's per-frame J or F values, NaNs left out."""
    v = np.asarray(values, dtype=np.float64)
    if not len(v) or np.isnan(v).all():
        return math.nan, math.nan, math.nan
    mean = float(np.nanmean(v))
    recall = float(np.mean(v > 0.5))  # as the official nanmean(v > 0.5): a NaN frame counts as a miss
    bins = [v[a:b][~np.isnan(v[a:b])] for a, b in decay_bins(len(v))]
    decay = float(bins[0].mean() - bins[3].mean()) if len(bins[0]) and len(bins[3]) else math.nan
    return mean, recall, decay
