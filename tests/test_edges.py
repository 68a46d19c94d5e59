"""The edge stage (cleancut.preprocess.guided_alpha): the network's alpha placed on the photo's own
edges at the photo's resolution, and the box filter it is built on."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cleancut.metrics import edge_figures
from cleancut.preprocess import box_mean, box_scratch_size, box_sum, finish_alpha, guided_alpha, guided_coefficients


def _brute_box_mean(x: np.ndarray, r: int) -> np.ndarray:
    h, w = x.shape[:2]
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            out[i, j] = x[max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].mean(axis=(0, 1))
    return out


@pytest.mark.parametrize("shape", [(7, 9), (30, 41), (5, 3), (20, 12, 3), (1, 1)])
@pytest.mark.parametrize("radius", [1, 3, 10])
def test_box_mean_is_the_window_mean_cut_at_the_borders(shape, radius):
    x = np.random.default_rng(radius).random(shape).astype(np.float32)
    np.testing.assert_allclose(box_mean(x, radius), _brute_box_mean(x, radius), atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 20, 12), (7, 9, 30), (2, 1, 5)])
@pytest.mark.parametrize("radius", [1, 4, 5, 12])
def test_box_sum_on_planes_in_place_is_the_window_sum(shape, radius):
    """Planes CxHxW, summed in place with a scratch array reused across calls (the shifted sums up
    to radius 4, the running sums beyond)."""
    x = np.random.default_rng(radius).random(shape).astype(np.float32)
    h, w = shape[1:]
    rows = np.minimum(np.arange(h) + radius, h - 1) - np.maximum(np.arange(h) - radius, 0) + 1
    cols = np.minimum(np.arange(w) + radius, w - 1) - np.maximum(np.arange(w) - radius, 0) + 1
    expected = np.stack([_brute_box_mean(plane, radius) for plane in x]) * np.outer(rows, cols)  # mean x pixels
    scratch = np.full(box_scratch_size(shape), np.nan, np.float32)  # garbage in the scratch is overwritten
    for _ in range(2):
        y = x.copy()
        assert box_sum(y, radius, out=y, scratch=scratch) is y
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(box_sum(x, radius), expected, rtol=1e-5, atol=1e-4)


def test_guided_coefficients_reproduce_a_linear_function_of_the_colour():
    # p = 0.5 * red - 0.25 * blue + 0.1 exactly: the regression must find it (eps small)
    rgb = np.random.default_rng(0).random((24, 32, 3)).astype(np.float32)
    p = 0.5 * rgb[:, :, 0] - 0.25 * rgb[:, :, 2] + 0.1
    a, b = guided_coefficients(rgb, p, 2, 1e-6)
    np.testing.assert_allclose(np.einsum("hwc,hwc->hw", a, rgb) + b, p, atol=2e-3)
    grey = rgb[:, :, 1]
    a, b = guided_coefficients(grey, 0.3 * grey + 0.2, 2, 1e-6)
    np.testing.assert_allclose(a * grey + b, 0.3 * grey + 0.2, atol=2e-3)


def _edge_photo(width: int, height: int, edge: int, background=(70, 90, 120)) -> Image.Image:
    """Red subject left of column ``edge``, a blue-grey background right of it (about as bright as
    the red), a little noise."""
    rng = np.random.default_rng(1)
    pixels = np.empty((height, width, 3), np.float32)
    pixels[:, :edge] = (190, 60, 50)
    pixels[:, edge:] = background
    pixels += rng.normal(0, 2, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _network_alpha(shape: tuple[int, int], width: int, edge: int, outward: float, soft: float) -> np.ndarray:
    """A network's soft alpha at its own size, its 0.5 crossing ``outward`` photo pixels beyond the
    photo's edge at ``edge`` (a fringe), the transition ``soft`` photo pixels wide."""
    h, w = shape
    x = (np.arange(w) + 0.5) * width / w - 0.5  # photo column of each network column
    return np.broadcast_to(1 / (1 + np.exp((x - (edge + outward)) / soft)), (h, w)).astype(np.float32).copy()


@pytest.mark.parametrize("photo_size", [(300, 200), (1200, 800)])
def test_the_edge_stage_puts_a_shifted_edge_on_the_photo_edge(photo_size):
    width, height = photo_size
    edge = width // 2 + 1
    photo = _edge_photo(width, height, edge)
    alpha = _network_alpha((160, 240), width, edge, outward=width / 100, soft=width / 120)
    truth = np.zeros((height, width), np.uint8)
    truth[:, :edge] = 255
    before = edge_figures(finish_alpha(alpha, photo.size, 0.2), truth)
    after = edge_figures(finish_alpha(alpha, photo.size, 0.2, guide=photo), truth)
    assert before["fringe@0.5%"] > 0.9 and before["BIoU@0.5%"] < 0.1  # the network keeps a band of background
    # the step lands on the photo's edge; a faint halo is left beyond it, inside the network's own
    # tail (windows of one colour there keep the mean of the network's alpha)
    assert after["BIoU@0.5%"] > 0.95 and after["bite@0.5%"] < 0.05 and after["fringe@0.5%"] < 0.25


def test_a_grey_fit_needs_a_brightness_edge():
    """The cheaper grey fit (``grey=True``) places the edge where the photo's brightness steps, and
    cannot see an edge between two colours of about one brightness, which the colour fit can."""
    alpha = _network_alpha((160, 240), 1200, 601, outward=12, soft=10)
    truth = np.zeros((800, 1200), np.uint8)
    truth[:, :601] = 255
    dark = _edge_photo(1200, 800, 601, background=(30, 40, 60))
    grey_dark = edge_figures(guided_alpha(alpha, dark, 0.2, grey=True), truth)
    assert grey_dark["BIoU@0.5%"] > 0.95 and grey_dark["fringe@0.5%"] < 0.35  # plain resize: above 0.9
    same_brightness = _edge_photo(1200, 800, 601)
    grey_blind = edge_figures(guided_alpha(alpha, same_brightness, 0.2, grey=True), truth)
    colour = edge_figures(guided_alpha(alpha, same_brightness, 0.2, grey=False), truth)
    assert colour["fringe@0.5%"] < grey_blind["fringe@0.5%"]


def test_far_from_the_edge_the_stage_changes_nothing():
    photo = _edge_photo(1200, 800, 601)
    alpha = _network_alpha((160, 240), 1200, 601, outward=12, soft=10)
    plain, guided = finish_alpha(alpha, photo.size, 0.2), finish_alpha(alpha, photo.size, 0.2, guide=photo)
    far = np.abs(np.arange(1200) - 601) > 100
    assert np.array_equal(plain[:, far], guided[:, far])
    assert (np.minimum(plain[:, far], 1 - plain[:, far]) < 1 / 512).all()  # sure there: 0 or 1 in 8 bits


def test_the_band_tiles_give_the_full_size_filter():
    """Above the working size the fit is applied tile by tile along the band; the result is the
    filter applied to every pixel (its coefficients resized by Pillow), within float rounding."""
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 255, (60, 80, 3), np.uint8)).resize((900, 700), Image.BICUBIC)
    alpha = np.asarray(Image.fromarray((rng.random((11, 15)) > 0.5).astype(np.float32) * 255)
                       .convert("L").resize((240, 176), Image.BILINEAR), np.float32) / 255
    work = (120, 88)
    small = np.asarray(photo.resize(work, Image.BOX), np.float32) / 255
    p = np.asarray(Image.fromarray(alpha, mode="F").resize(work, Image.BOX))
    a, b = guided_coefficients(small, np.clip(p, 0, 1), 3, 3e-3)
    full = np.asarray(photo, np.float32) / 255
    q = np.array(Image.fromarray(b, mode="F").resize(photo.size, Image.BILINEAR))
    for c in range(3):
        q += np.asarray(Image.fromarray(np.ascontiguousarray(a[:, :, c]), mode="F").resize(photo.size, Image.BILINEAR)) * full[:, :, c]
    plain = finish_alpha(alpha, photo.size, 1.0)
    expected = np.minimum(np.clip(q, 0, 1), plain)  # the stage only takes alpha away
    np.testing.assert_allclose(guided_alpha(alpha, photo, 1.0), expected, atol=5e-3)
    assert (guided_alpha(alpha, photo, 0.2) <= finish_alpha(alpha, photo.size, 0.2)).all()


def test_guided_edges_option_reaches_the_prediction(remover, square):
    photo = square((64, 48))
    plain = remover.predict_mask(photo)
    guided = remover.predict_mask(photo, edges="guided")
    assert guided.shape == plain.shape == (48, 64) and guided.dtype == np.float32
    out = np.asarray(remover.remove(photo, mode="mask", edges="guided"))
    assert np.array_equal(out, np.rint(guided * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="guide"):
        finish_alpha(plain, (10, 10), 1.0, guide=photo)


def test_the_guided_fit_on_the_network_input_matches_the_fit_on_the_photo():
    """The runtime hands the guided stage the network's input (the photo already shrunk) to fit
    on, so a large photo is read only along the band: the result stays the photo-fitted one."""
    rng = np.random.default_rng(3)
    big = np.zeros((600, 800, 3), np.uint8)
    big[150:450, 200:600] = (200, 120, 40)
    big = np.clip(big.astype(int) + rng.integers(-8, 9, big.shape), 0, 255).astype(np.uint8)
    photo = Image.fromarray(big)
    network = np.asarray(photo.resize((128, 96), Image.BILINEAR))  # what to_input makes
    alpha = np.asarray(Image.fromarray((big[..., 0] > 100).astype(np.float32) * 1.0, mode="F").resize((128, 96), Image.BILINEAR))
    for grey in (False, True):
        plain = guided_alpha(alpha, photo, 0.2, grey=grey)
        fast = guided_alpha(alpha, photo, 0.2, grey=grey, reduced=network)
        assert np.abs(plain - fast).mean() < 2e-3 and np.abs(plain - fast).max() < 0.15
    too_small = network[::4, ::4]  # smaller than the working size: the photo is used
    np.testing.assert_array_equal(guided_alpha(alpha, photo, 0.2, reduced=too_small), guided_alpha(alpha, photo, 0.2))
