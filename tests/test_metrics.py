"""cleancut.metrics against pysodmetrics itself (and by-hand values) on fixed inputs."""

from __future__ import annotations

import warnings

import numpy as np
import py_sod_metrics as sod
import pytest

from cleancut.metrics import SODMetrics, format_table, to_uint8


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
