"""Medical image I/O keeps the clinical meaning of pixels, and maps go back to the original image exactly.

DICOM files are built here with pydicom (file meta + Explicit VR Little Endian); every expected pixel is
computed by hand from the DICOM formulas (PS3.3 C.11.1 rescale, C.11.2.1.2 / C.11.2.1.3 windows, C.11.2.1.1
VOI LUT), not by pydicom. Geometry is checked against PIL's own resize and against smooth functions.
"""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSLossless

import vitlens
from tests.dicom_fixtures import write_dicom
from vitlens.data import (
    load_image,
    overlay_original,
    prepare,
    read_image_info,
    to_original,
    transform_boxes,
    transform_mask,
)
from vitlens.errors import InputWarning
from vitlens.models import Preprocessing


# ------------------------------------------------------------------------------------------ helpers
def gray(path) -> np.ndarray:
    rgb = np.asarray(load_image(path))
    assert rgb.ndim == 3 and rgb.shape[-1] == 3 and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[..., 0].astype(int)


def to8(y: np.ndarray) -> np.ndarray:
    """A display value in [0, 1] -> 0..255 (round half up)."""
    return np.floor(np.clip(y, 0, 1) * 255 + 0.5).astype(int)


def linear_window(x, c, w):
    """PS3.3 C.11.2.1.2.1 with y_min = 0, y_max = 1, written out case by case."""
    y = (x - (c - 0.5)) / (w - 1) + 0.5
    y = np.where(x <= c - 0.5 - (w - 1) / 2, 0.0, y)
    return np.where(x > c - 0.5 + (w - 1) / 2, 1.0, y)


def ramp12(rows=24, cols=40) -> np.ndarray:
    return (np.arange(rows * cols) * 4095 // (rows * cols - 1)).reshape(rows, cols).astype(np.uint16)


# ------------------------------------------------------------------------------------------ DICOM values
def test_rescale_then_first_of_several_linear_windows(tmp_path):
    raw = ramp12()
    path = write_dicom(
        tmp_path / "ct.dcm",
        raw,
        bits_stored=12,
        RescaleSlope=0.5,
        RescaleIntercept=-100,
        WindowCenter=[700, 40],
        WindowWidth=[900, 80],
        WindowCenterWidthExplanation=["WIDE", "NARROW"],
    )
    hu = raw * 0.5 - 100  # C.11.1: output units = m * SV + b
    expected = to8(linear_window(hu, 700, 900))
    got = gray(path)
    assert np.abs(got - expected).max() <= 1 and (got == expected).mean() > 0.97
    assert got.min() == 0 and got.max() == 255  # the window clips both ends of this ramp
    _, info = read_image_info(path)
    assert info["format"] == "DICOM" and info["photometric"] == "MONOCHROME2" and info["bits"] == 12
    assert info["rescale"] == {"slope": 0.5, "intercept": -100.0}
    assert info["window"]["kind"] == "dicom-window"
    assert (info["window"]["center"], info["window"]["width"]) == (700.0, 900.0)
    assert info["window"]["explanation"] == "WIDE" and info["inverted"] is False and info["frames"] == 1


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_voi_lut_functions(tmp_path, function):
    raw = ramp12()
    c, w = 2000.0, 1500.0
    path = write_dicom(tmp_path / "f.dcm", raw, bits_stored=12, WindowCenter=c, WindowWidth=w, VOILUTFunction=function)
    x = raw.astype(float)
    if function == "LINEAR_EXACT":  # C.11.2.1.3.2
        y = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 1.0, (x - c) / w + 0.5))
    else:  # C.11.2.1.3.1
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    got = gray(path)
    assert np.abs(got - to8(y)).max() <= 1
    assert read_image_info(path)[1]["window"]["function"] == function


def test_monochrome1_is_inverted_after_the_window(tmp_path):
    raw = ramp12()
    kw = dict(bits_stored=12, WindowCenter=1500, WindowWidth=2000)
    m2 = gray(write_dicom(tmp_path / "m2.dcm", raw, "MONOCHROME2", **kw))
    m1 = gray(write_dicom(tmp_path / "m1.dcm", raw, "MONOCHROME1", **kw))
    expected = 255 - to8(linear_window(raw.astype(float), 1500, 2000))  # C.7.6.3.1.2: minimum is white
    assert np.abs(m1 - expected).max() <= 1
    assert (m1 == 255 - m2).all()
    assert m1[0, 0] == 255 and m1[-1, -1] == 0  # the lowest stored value is displayed white
    assert read_image_info(tmp_path / "m1.dcm")[1]["inverted"] is True
    # without a window: the percentile window, then the inversion
    p = gray(write_dicom(tmp_path / "m1p.dcm", raw, "MONOCHROME1", bits_stored=12))
    lo, hi = np.percentile(raw.astype(float), [0.5, 99.5])
    assert np.abs(p - (255 - to8((raw - lo) / (hi - lo)))).max() <= 1


def test_voi_lut_sequence_is_preferred_to_the_window(tmp_path):
    raw = (np.arange(20 * 30) % 700).reshape(20, 30).astype(np.uint16) + 50  # 50 .. 749
    first, n = 100, 512
    lut = (np.sqrt(np.arange(n) / (n - 1)) * 4095).astype(int)  # a 12-bit gamma LUT, entries of 16 bits
    item = Dataset()
    item.add_new(0x00283002, "US", [n, first, 16])  # LUT Descriptor: entries, first mapped value, bits
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data
    path = write_dicom(
        tmp_path / "lut.dcm", raw, bits_stored=12, VOILUTSequence=[item], WindowCenter=400, WindowWidth=100
    )
    idx = np.clip(raw.astype(int) - first, 0, n - 1)  # below first -> entry 0; past the end -> last entry
    expected = to8(lut[idx] / 65535.0)  # C.11.2.1.1: output range 0 .. 2**16 - 1
    got = gray(path)
    assert np.abs(got - expected).max() <= 1
    info = read_image_info(path)[1]["window"]
    assert info["kind"] == "voi-lut" and info["entries"] == n and info["first_mapped"] == first and info["bits"] == 16


def test_no_voi_uses_the_percentile_window_of_the_rescaled_values(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 4096, (30, 30)).astype(np.uint16)
    path = write_dicom(tmp_path / "p.dcm", raw, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1024)
    v = raw * 2.0 - 1024
    lo, hi = np.percentile(v, [0.5, 99.5])
    assert np.abs(gray(path) - to8((v - lo) / (hi - lo))).max() <= 1
    window = read_image_info(path)[1]["window"]
    assert window["kind"] == "percentile" and window["low"] == pytest.approx(lo) and window["high"] == pytest.approx(hi)


def test_signed_pixels_with_rescale(tmp_path):
    raw = np.arange(-600, 600, 2, dtype=np.int16).reshape(20, 30)
    path = write_dicom(
        tmp_path / "s.dcm", raw, signed=True, RescaleSlope=1, RescaleIntercept=-24, WindowCenter=-40, WindowWidth=400
    )
    assert np.abs(gray(path) - to8(linear_window(raw - 24.0, -40, 400))).max() <= 1
    assert read_image_info(path)[1]["signed"] is True


def test_multi_frame_gives_the_first_frame_and_a_warning(tmp_path):
    frames = np.stack([ramp12(), ramp12()[::-1], np.zeros((24, 40), np.uint16)])
    path = write_dicom(tmp_path / "cine.dcm", frames, frames=3, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    with pytest.warns(InputWarning, match=r"cine\.dcm has 3 frames"):
        img, info = read_image_info(path)
    assert info["frames"] == 3
    expected = to8(linear_window(frames[0].astype(float), 2048, 4096))
    assert np.abs(np.asarray(img)[..., 0].astype(int) - expected).max() <= 1


def test_rgb_and_ybr_dicom(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    path = write_dicom(tmp_path / "rgb.dcm", rgb, "RGB")
    img, info = read_image_info(path)
    assert np.array_equal(np.asarray(img), rgb) and info["window"] is None
    # YBR_FULL by the ITU T.871 equations (PS3.3 C.7.6.3.1.2), decoded back to RGB
    f = rgb.astype(float)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    ybr = np.stack(
        [
            0.299 * r + 0.587 * g + 0.114 * b,
            -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
            0.5 * r - 0.418688 * g - 0.081312 * b + 128,
        ],
        axis=-1,
    )
    ybr = np.clip(np.round(ybr), 0, 255).astype(np.uint8)
    back = np.asarray(load_image(write_dicom(tmp_path / "ybr.dcm", ybr, "YBR_FULL"))).astype(int)
    assert np.abs(back - rgb).max() <= 2


def test_dicom_found_by_magic_or_suffix(tmp_path):
    raw = ramp12()
    ref = gray(write_dicom(tmp_path / "a.dcm", raw, bits_stored=12, WindowCenter=1000, WindowWidth=1000))
    (tmp_path / "IM0001").write_bytes((tmp_path / "a.dcm").read_bytes())  # no suffix: the DICM magic
    assert (gray(tmp_path / "IM0001") == ref).all()
    ds = pydicom.dcmread(tmp_path / "a.dcm")  # a raw data set, no preamble or file meta: the suffix
    del ds.file_meta
    ds.preamble = None
    pydicom.dcmwrite(tmp_path / "raw.DCM", ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert (tmp_path / "raw.DCM").read_bytes()[128:132] != b"DICM"
    assert (gray(tmp_path / "raw.DCM") == ref).all()


def test_dicom_errors_name_the_file(tmp_path):
    if pydicom.pixels.get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder plugin is installed here")
    from pydicom.encaps import encapsulate

    raw = ramp12()
    write_dicom(
        tmp_path / "ls.dcm",
        raw,
        transfer_syntax=JPEGLSLossless,
        pixel_data=encapsulate([b"\xff\xd8\xff\xf7" + b"\0" * 60]),
    )
    with pytest.raises(vitlens.InputError, match=r"ls\.dcm.*JPEG-LS.*not installed.*pylibjpeg"):
        load_image(tmp_path / "ls.dcm")

    good = write_dicom(tmp_path / "good.dcm", raw).read_bytes()
    ds = pydicom.dcmread(tmp_path / "good.dcm")
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(vitlens.InputError, match=r"nopix\.dcm.*no pixel data"):
        load_image(tmp_path / "nopix.dcm")

    (tmp_path / "cut.dcm").write_bytes(good[: len(good) - 300])  # truncated inside the pixel data
    with pytest.raises(vitlens.InputError, match=r"cut\.dcm.*less than expected"):
        load_image(tmp_path / "cut.dcm")
    (tmp_path / "head.dcm").write_bytes(good[:200])  # truncated inside the header
    with pytest.raises(vitlens.InputError, match=r"head\.dcm"):
        load_image(tmp_path / "head.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom file " * 20)
    with pytest.raises(vitlens.InputError, match=r"junk\.dcm"):
        load_image(tmp_path / "junk.dcm")

    # 10000 x 10000 declared, 8 bytes of pixel data: refused from the header, never decoded
    write_dicom(tmp_path / "huge.dcm", np.zeros((2, 2), np.uint16), Rows=10000, Columns=10000)
    with pytest.raises(vitlens.InputError, match=r"huge\.dcm: 10000x10000 exceeds the 40 MP limit"):
        load_image(tmp_path / "huge.dcm")


# ------------------------------------------------------------------------------------------ PIL formats
@pytest.mark.parametrize("kind", ["png16", "tiff16", "tiff_float"])
def test_deep_grayscale_percentile_window(tmp_path, kind):
    rng = np.random.default_rng(2)
    a = rng.gamma(2.0, 300.0, (50, 70))
    if kind == "tiff_float":
        a = a.astype(np.float32) - 200.0  # negative values too
        path = tmp_path / "f.tif"
    else:
        a = np.clip(a, 0, 65535).astype(np.uint16)
        path = tmp_path / ("x.png" if kind == "png16" else "x.tif")
    Image.fromarray(a).save(path)
    img, info = read_image_info(path)
    lo, hi = np.percentile(a.astype(float), [0.5, 99.5])
    assert np.abs(np.asarray(img)[..., 0].astype(int) - to8((a - lo) / (hi - lo))).max() <= 1
    assert info["mode"].startswith(("I", "F")) and info["bits"] in (16, 32)
    assert info["window"]["kind"] == "percentile"
    assert info["window"]["low"] == pytest.approx(lo, rel=1e-6)
    assert info["window"]["high"] == pytest.approx(hi, rel=1e-6)


def test_multi_page_tiff_first_page_with_a_warning(tmp_path):
    pages = [Image.fromarray(np.full((10, 12), v, np.uint8)) for v in (30, 200, 90)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.warns(InputWarning, match=r"stack\.tif has 3 frames"):
        img, info = read_image_info(tmp_path / "stack.tif")
    assert info["frames"] == 3 and (np.asarray(img) == 30).all()
    pages[0].save(tmp_path / "one.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a single-page file gives no warning
        assert read_image_info(tmp_path / "one.tif")[1]["frames"] == 1


def test_exif_orientation_and_grayscale_to_three_channels(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)  # left half red, right half blue
    a[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: left (red) becomes the top
    Image.fromarray(a).save(tmp_path / "r.jpg", exif=exif, quality=95)
    img, info = read_image_info(tmp_path / "r.jpg")
    out = np.asarray(img).astype(int)
    assert img.size == (20, 40) and info["orientation"] == 6
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60 and out[35, 10, 2] > 200 and out[35, 10, 0] < 60
    g = np.arange(96, dtype=np.uint8).reshape(8, 12)
    Image.fromarray(g).save(tmp_path / "g.tif")
    assert (np.asarray(load_image(tmp_path / "g.tif")) == g[..., None]).all()


# ------------------------------------------------------------------------------------------ geometry
SIZES = [(200, 100), (97, 131), (64, 64), (300, 57), (50, 40), (33, 250)]
INPUTS = [((56, 56), 0.875), ((56, 56), 1.0), ((48, 64), 0.875), ((40, 24), 1.0)]
CASES = [(size, inp, pct) for size in SIZES for inp, pct in INPUTS]


def prep_for(size, input_size, crop_pct, interpolation="bilinear", image=None):
    img = image if image is not None else Image.new("RGB", size)
    pre = Preprocessing(
        input_size=input_size, mean=(0, 0, 0), std=(1, 1, 1), crop_pct=crop_pct, interpolation=interpolation
    )
    return prepare(img, pre)


def blobs(size, seed=0) -> np.ndarray:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), bool)
    for _ in range(3):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.1, 0.4) * min(w, h)
        m |= (xx - cx) ** 2 + ((yy - cy) * 1.3) ** 2 < r**2
    return m


@pytest.mark.parametrize("size,input_size,crop_pct", CASES)
def test_transform_mask_is_the_image_transform(size, input_size, crop_pct):
    mask = blobs(size)
    prep = prep_for(size, input_size, crop_pct, image=Image.fromarray(mask.astype(np.uint8) * 255).convert("RGB"))
    got = transform_mask(mask, prep)
    assert got.shape == tuple(input_size) and got.dtype == bool
    # exactly PIL's nearest resize + crop of the mask image
    pil = Image.fromarray(mask.astype(np.uint8) * 255).resize(prep.resized_size, Image.Resampling.NEAREST)
    assert np.array_equal(got, np.asarray(pil.crop(prep.crop_box)) > 127)
    # and the thresholded (bilinear) image of the mask disagrees only on the boundary of the mask
    thresh = prep.display[..., 0] > 127
    pad = np.pad(got, 1, mode="edge")
    window = np.stack([pad[dy : dy + got.shape[0], dx : dx + got.shape[1]] for dy in range(3) for dx in range(3)])
    boundary = window.any(0) & ~window.all(0)
    assert not (thresh != got)[~boundary].any()


@pytest.mark.parametrize("size,input_size,crop_pct", CASES)
def test_transform_boxes_equals_transform_mask_of_the_box(size, input_size, crop_pct):
    w0, h0 = size
    prep = prep_for(size, input_size, crop_pct)
    rng = np.random.default_rng(sum(size))
    xs, ys = np.sort(rng.integers(0, w0 + 1, (12, 2)), 1), np.sort(rng.integers(0, h0 + 1, (12, 2)), 1)
    boxes = np.c_[xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]].astype(float)
    boxes = np.r_[boxes, [[0, 0, w0, h0], [0, 0, 1, 1], [w0 - 1, h0 - 1, w0, h0], [3.3, 2.6, 17.8, 9.2]]]
    got = transform_boxes(boxes, prep)
    assert got.dtype == np.int64 and got.shape == (len(boxes), 4)
    yy, xx = np.mgrid[0:h0, 0:w0] + 0.5  # a pixel belongs to a box when its centre does
    for box, out in zip(boxes, got, strict=True):
        m = (xx >= box[0]) & (xx < box[2]) & (yy >= box[1]) & (yy < box[3])
        expected = transform_mask(m, prep)
        drawn = np.zeros(input_size, bool)
        if (out == -1).all():
            assert not expected.any()
        else:
            assert (out[:2] >= 0).all() and out[2] <= input_size[1] and out[3] <= input_size[0]
            drawn[out[1] : out[3], out[0] : out[2]] = True
            assert np.array_equal(drawn, expected), (box, out)
    assert tuple(got[len(boxes) - 4]) == (0, 0, input_size[1], input_size[0])  # the whole image: the whole crop


def smooth(x, y, w0, h0):
    """A smooth function of continuous original coordinates (pixel i covers [i, i + 1))."""
    return np.sin(2.2 * x / w0 + 0.3) * np.cos(1.7 * y / h0) + 0.5 * x / w0


def smooth_curvature(w0, h0):
    """An upper bound of |f_xx| + |f_yy| + 2|f_xy| over the image."""
    return (2.2 / w0) ** 2 + (1.7 / h0) ** 2 + 2 * 2.2 * 1.7 / (w0 * h0)


@pytest.mark.parametrize("size,input_size,crop_pct", CASES)
@pytest.mark.parametrize("grid", ["pixels", "patches"])
def test_to_original_inverts_resize_and_crop(size, input_size, crop_pct, grid):
    w0, h0 = size
    prep = prep_for(size, input_size, crop_pct)
    (rw, rh), (left, top, right, bottom) = prep.resized_size, prep.crop_box
    th, tw = input_size
    h, w = (th, tw) if grid == "pixels" else (th // 8, tw // 8)
    # the map: f sampled at the original position of the centre of every map cell (crop -> resized -> original)
    cx = (left + (np.arange(w) + 0.5) * tw / w) * w0 / rw
    cy = (top + (np.arange(h) + 0.5) * th / h) * h0 / rh
    m = smooth(cx[None, :], cy[:, None], w0, h0)
    out = to_original(torch.from_numpy(m).float(), prep)
    assert out.shape == (h0, w0) and out.dtype == np.float32
    # inside the crop: f at every original pixel centre; outside: NaN
    x, y = np.arange(w0) + 0.5, np.arange(h0) + 0.5
    in_x = (x >= left * w0 / rw) & (x < right * w0 / rw)
    in_y = (y >= top * h0 / rh) & (y < bottom * h0 / rh)
    inside = in_y[:, None] & in_x[None, :]
    assert np.array_equal(np.isfinite(out), inside)
    assert inside.mean() == pytest.approx(tw * th / (rw * rh), abs=0.06)  # the crop's share of the image
    truth = smooth(x[None, :], y[:, None], w0, h0)
    err = np.abs(out - truth)
    sx, sy = cx[1] - cx[0] if w > 1 else 1.0, cy[1] - cy[0] if h > 1 else 1.0
    # interior (between cell centres): bilinear error <= h^2/8 * curvature; the half cell at the crop's edge is
    # clamped (constant): first-order error <= |f'| * half a cell
    between = ((x >= cx[0]) & (x <= cx[-1]))[None, :] & ((y >= cy[0]) & (y <= cy[-1]))[:, None] & inside
    assert err[between].max() <= max(sx, sy) ** 2 / 8 * smooth_curvature(w0, h0) * 2 + 1e-5
    grad = 2.7 / w0 + 1.7 / h0
    assert err[inside].max() <= grad * max(sx, sy) / 2 + 1e-5
    # a batch gives the same maps, and fill is honoured
    batch = to_original(np.stack([m, 2 * m]), prep, fill=-1.0)
    assert batch.shape == (2, h0, w0) and (batch[:, ~inside] == -1).all()
    np.testing.assert_allclose(batch[1][inside], 2 * out[inside], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "size,input_size,crop_pct", [((200, 100), (56, 56), 0.875), ((40, 30), (64, 64), 1.0), ((97, 131), (48, 64), 0.875)]
)
def test_to_original_agrees_with_pils_resize(size, input_size, crop_pct):
    """The pixel-centre convention is PIL's: resizing an image of f with PIL and mapping the crop back gives f."""
    w0, h0 = size
    yy, xx = np.mgrid[0:h0, 0:w0] + 0.5
    f = 127.5 + 120 * np.sin(2 * np.pi * xx / (w0 / 1.5)) * np.cos(2 * np.pi * yy / (h0 / 1.2))
    img = Image.fromarray(np.round(f).astype(np.uint8)).convert("RGB")
    prep = prep_for(size, input_size, crop_pct, image=img)
    back = to_original(prep.display[..., 0].astype(float), prep)
    inside = np.isfinite(back)
    # away from the crop's edge a half-pixel shift of the convention would cost |f'| * scale / 2 > 3 grey levels
    core = np.zeros_like(inside)
    (rw, rh), (left, top, right, bottom) = prep.resized_size, prep.crop_box
    sx, sy = w0 / rw, h0 / rh
    rows = slice(int(np.ceil((top + 2) * sy)), int((bottom - 2) * sy))
    core[rows, int(np.ceil((left + 2) * sx)) : int((right - 2) * sx)] = True
    err = np.abs(back - f)[core & inside]
    assert np.median(err) < 1.5 and err.max() < 5 * max(1.0, sx * sy)
    shifted = to_original(np.roll(prep.display[..., 0].astype(float), 1, axis=1), prep)
    assert np.median(np.abs(shifted - f)[core & inside]) > 2 * np.median(err)


def test_overlay_original_and_errors(tmp_path):
    size = (150, 90)
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 255, (90, 150, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "o.png")
    prep = prep_for(size, (56, 56), 0.875, image=Image.fromarray(arr))
    m = torch.rand(7, 7)
    out = overlay_original(tmp_path / "o.png", m, prep, alpha=0.4)
    assert out.shape == (90, 150, 3) and out.dtype == np.uint8
    heat = to_original((m - m.min()) / (m.max() - m.min()), prep)
    inside = np.isfinite(heat)
    assert np.array_equal(out[~inside], arr[~inside]) and (~inside).any()
    from vitlens.viz import overlay

    assert np.array_equal(out[inside], overlay(arr, np.nan_to_num(heat), 0.4)[inside])
    assert np.array_equal(overlay_original(Image.fromarray(arr), m[None], prep, alpha=0.4), out)
    with pytest.raises(vitlens.InputError, match="150x90"):
        overlay_original(arr[:50], m, prep)
    with pytest.raises(vitlens.InputError, match=r"\(90, 150\)"):
        transform_mask(np.zeros((150, 90), bool), prep)
    with pytest.raises(vitlens.InputError, match=r"\[n, 4\]"):
        transform_boxes(np.zeros((2, 3)), prep)
    assert transform_boxes(np.zeros((0, 4)), prep).shape == (0, 4)


# ------------------------------------------------------------------------------------------ CLI
def test_explain_original_writes_overlays_at_the_original_resolution(tmp_path):
    from vitlens.explain_files import explain_files

    raw = ramp12(70, 90)
    write_dicom(tmp_path / "scan.dcm", raw, "MONOCHROME1", bits_stored=12, WindowCenter=1800, WindowWidth=2400)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 120, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    model = vitlens.load_model("timm:test_vit", seed=0)
    out = tmp_path / "out"
    records = explain_files(
        [tmp_path / "scan.dcm", tmp_path / "p.png"], "", ["rollout"], out, model=model, original=True
    )
    assert records[0]["input"]["window"] == {
        "kind": "dicom-window",
        "center": 1800.0,
        "width": 2400.0,
        "function": "LINEAR",
        "explanation": None,
    }
    assert records[0]["input"]["inverted"] is True
    for name, size in (("scan", (90, 70)), ("p", (120, 50))):
        assert Image.open(out / name / "rollout_original.png").size == size
        assert Image.open(out / name / "rollout.png").size == (160, 160)
    raw_map = np.load(out / "scan" / "rollout.npy")
    img = load_image(tmp_path / "scan.dcm")
    expected = overlay_original(img, raw_map, prepare(img, model.preprocessing))
    assert np.array_equal(np.asarray(Image.open(out / "scan" / "rollout_original.png")), expected)
