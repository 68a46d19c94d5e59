"""cleancut.metrics against pysodmetrics itself (and by-hand values) on fixed inputs."""

from __future__ import annotations

import warnings

import numpy as np
import py_sod_metrics as sod
import pytest

from cleancut.metrics import (EDGE_METRIC_NAMES, HIGHER_IS_BETTER, EdgeMetrics, SODMetrics, band_width,
                              boundary_iou, edge_figures, format_table, inner_band, to_uint8)


def _fixed_pairs():
    rng = np.random.default_rng(42)
    pairs = []
    for h, w in [(30, 40), (25, 25), (50, 20)]:
        gt = np.zeros((h, w), np.uint8)
        gt[h // 4: 3 * h // 4, w // 5: 4 * w // 5] = 255
        pred = np.clip(gt / 255 * 0.7 + rng.random((h, w)) * 0.4, 0, 1)
        pairs.append((pred, gt))
    return pairs


def test_matches_pysodmetrics_reference_classes():
    ours = SODMetrics()
    mae, sm, em, wfm = sod.MAE(), sod.Smeasure(), sod.Emeasure(), sod.WeightedFmeasure()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm = sod.Fmeasure()  # the classic class, as the field's papers used it
    for pred, gt in _fixed_pairs():
        ours.add(pred, gt)
        p8 = to_uint8(pred)
        for m in (mae, sm, em, wfm, fm):
            m.step(pred=p8, gt=gt)
    r = ours.results()
    assert r["MAE"] == pytest.approx(mae.get_results()["mae"], abs=1e-12)
    assert r["Sm"] == pytest.approx(sm.get_results()["sm"], abs=1e-12)
    assert r["wF"] == pytest.approx(wfm.get_results()["wfm"], abs=1e-12)
    assert r["maxE"] == pytest.approx(em.get_results()["em"]["curve"].max(), abs=1e-12)
    assert r["adpE"] == pytest.approx(em.get_results()["em"]["adp"], abs=1e-12)
    assert r["maxF"] == pytest.approx(fm.get_results()["fm"]["curve"].max(), abs=1e-9)
    assert r["meanF"] == pytest.approx(fm.get_results()["fm"]["curve"].mean(), abs=1e-9)
    assert r["adpF"] == pytest.approx(fm.get_results()["fm"]["adp"], abs=1e-9)


def test_perfect_and_by_hand_values():
    gt = np.zeros((10, 10), np.uint8)
    gt[2:6, 2:6] = 255  # 16 foreground pixels
    m = SODMetrics()
    m.add(gt.astype(np.float32) / 255, gt)
    r = m.results()
    assert r["MAE"] == 0 and r["IoU"] == 1 and r["PixAcc"] == 1 and r["maxF"] == pytest.approx(1.0)
    # prediction covering the square plus 8 extra pixels: IoU = 16 / 24, accuracy = 92 / 100
    pred = np.zeros((10, 10), np.float32)
    pred[2:6, 2:8] = 1
    m = SODMetrics()
    m.add(pred, gt)
    r = m.results()
    assert r["IoU"] == pytest.approx(16 / 24)
    assert r["PixAcc"] == pytest.approx(0.92)
    assert r["MAE"] == pytest.approx(8 / 100)


def test_ground_truth_is_thresholded_at_128_and_shapes_must_match():
    gt = np.full((4, 4), 128, np.uint8)  # exactly 128 is background under the protocol
    m = SODMetrics()
    m.add(np.zeros((4, 4)), gt)
    assert m.results()["MAE"] == 0
    with pytest.raises(ValueError, match="ground-truth resolution"):
        m.add(np.zeros((3, 4)), gt)


def test_table_lists_every_metric():
    table = format_table({"val": {"MAE": 0.1, "maxF": 0.9}}, ["MAE", "maxF"])
    assert "| val | 0.1000 | 0.9000 |" in table


# ---------------------------------------------------------------- edge figures (known answers)

def _square_mask(size: int = 200, lo: int = 80, hi: int = 120) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[lo:hi, lo:hi] = 255
    return m


def test_band_width_is_a_share_of_the_diagonal():
    assert band_width((200, 200), 0.02) == 6  # 0.02 * 282.8 = 5.66
    assert band_width((200, 200), 0.005) == 1  # 1.41
    assert band_width((300, 400), 0.005) == 2  # 0.005 * 500 = 2.5 -> round half to even
    assert band_width((10, 10), 0.005) == 1  # never below one pixel


def test_inner_band_of_a_square_is_a_ring_and_the_frame_is_no_edge():
    band = inner_band(_square_mask() > 0, 6)
    assert band.sum() == 40 ** 2 - 28 ** 2  # a ring 6 pixels thick inside the 40-pixel square
    half = np.zeros((60, 60), bool)
    half[30:] = True  # an object cut by the bottom of the photo
    band = inner_band(half, 3)
    assert band[30:33].all() and not band[33:].any()
    assert not inner_band(np.ones((5, 5), bool), 2).any() and not inner_band(np.zeros((5, 5), bool), 2).any()


def test_perfect_prediction():
    gt = _square_mask()
    f = edge_figures(gt / 255.0, gt)
    assert f["BIoU@2%"] == 1 and f["BIoU@0.5%"] == 1
    assert f["fringe@2%"] == 0 and f["bite@2%"] == 0 and f["fringe@0.5%"] == 0 and f["bite@0.5%"] == 0


def test_grown_square_known_boundary_iou_fringe_and_bite():
    gt = _square_mask()  # d = 6 at 2 %, 1 at 0.5 %
    grown = _square_mask(lo=77, hi=123) / 255.0  # 3 pixels more on every side
    f = edge_figures(grown, gt)
    # bands of 6: the ground truth's ring (1600 - 784 = 816 px), the prediction's (2116 - 1156 = 960 px);
    # they share the ground truth's outer 3 rows (1600 - 1156 = 444 px): 444 / (816 + 960 - 444) = 1/3
    assert f["BIoU@2%"] == pytest.approx(444 / 1332)
    assert f["BIoU@0.5%"] == 0  # one-pixel rings 3 pixels apart
    # every background pixel within 1 (and, for the straight sides, within 3) of the object is kept
    assert f["fringe@0.5%"] == 1
    # the background band of 6: 4 sides of 40 x 6 and 4 rounded corners of 22 pixels (1 <= dx, dy,
    # dx² + dy² <= 36); the grown square keeps 4 sides of 40 x 3 and 4 corners of 3 x 3 of it
    assert f["fringe@2%"] == pytest.approx((4 * 40 * 3 + 4 * 9) / (4 * 40 * 6 + 4 * 22))
    assert f["bite@2%"] == 0 and f["bite@0.5%"] == 0
    shrunk = edge_figures(_square_mask(lo=82, hi=118) / 255.0, gt)  # 2 pixels less on every side
    assert shrunk["fringe@2%"] == 0 and shrunk["bite@0.5%"] == 1
    assert shrunk["bite@2%"] == pytest.approx((1600 - 36 ** 2) / 816)  # the 2 lost rows of the 6-pixel ring


def test_soft_alpha_is_scored_as_it_is_and_binarised_at_half():
    gt = _square_mask()
    alpha = np.where(gt > 0, 0.8, 0.25).astype(np.float32)  # a veil of 0.25 over the background
    f = edge_figures(alpha, gt)
    assert f["BIoU@2%"] == 1 and f["BIoU@0.5%"] == 1  # 0.8 and 0.25 binarise to the ground truth
    assert f["fringe@2%"] == pytest.approx(0.25) and f["fringe@0.5%"] == pytest.approx(0.25)
    assert f["bite@2%"] == pytest.approx(0.2) and f["bite@0.5%"] == pytest.approx(0.2)
    assert boundary_iou(np.where(gt > 0, 0.49, 0.0), gt) == 0  # below 0.5: nothing predicted


def test_empty_masks_and_figures_without_a_band():
    empty = np.zeros((50, 50), np.uint8)
    f = edge_figures(np.zeros((50, 50)), empty)
    assert f["BIoU@2%"] == 1 and np.isnan(f["fringe@2%"]) and np.isnan(f["bite@2%"])
    f = edge_figures(np.zeros((200, 200)), _square_mask())
    assert f["BIoU@2%"] == 0 and f["bite@2%"] == 1 and f["fringe@2%"] == 0
    m = EdgeMetrics()
    m.add(np.zeros((50, 50)), empty)  # no object: no fringe or bite to average
    m.add(np.full((200, 200), 0.5), _square_mask())
    r = m.results()
    assert r["BIoU@2%"] == 0.5  # 1, then 0: a full mask has no contour, so no band (the frame is no edge)
    assert r["fringe@2%"] == pytest.approx(0.5) and r["bite@2%"] == pytest.approx(0.5)


def test_sod_metrics_report_the_edge_figures():
    gt = _square_mask()
    m = SODMetrics()
    m.add(_square_mask(lo=77, hi=123) / 255.0, gt)
    r = m.results()
    assert set(EDGE_METRIC_NAMES) <= set(r) and r["BIoU@2%"] == pytest.approx(1 / 3)
    assert not HIGHER_IS_BETTER["fringe@2%"] and not HIGHER_IS_BETTER["bite@0.5%"] and HIGHER_IS_BETTER["BIoU@2%"]
    m = SODMetrics(edges=False)
    m.add(gt / 255.0, gt)
    assert not set(EDGE_METRIC_NAMES) & set(m.results())
