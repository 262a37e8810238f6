"""Tests of the synthetic benchmarks: determinism, exact masks, balance, shortcut rates, colour leakage."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from vitlens.data.export import export_dataset
from vitlens.data.synthetic import (
    BENCHMARKS,
    IMAGE_SIZE,
    generate,
    generate_arrays,
    get_benchmark,
)
from vitlens.errors import DataError

NAMES = ("cells", "ultrasound", "shortcut")
N_COLOUR = 600


@pytest.fixture(scope="module")
def colour_sets() -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Per benchmark: 600 train and 600 test samples (generated once, shared by several tests)."""
    return {
        name: {split: generate_arrays(name, N_COLOUR, seed=0, split=split) for split in ("train", "test")}
        for name in NAMES
    }


def _bbox_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# ------------------------------------------------------------------------------------------ registry


def test_registry_has_the_three_benchmarks() -> None:
    assert set(BENCHMARKS) == set(NAMES)
    for name in NAMES:
        bench = get_benchmark(name)
        assert bench.name == name
        assert len(bench.classes) >= 3
        assert bench.description


def test_unknown_name_raises_data_error_naming_valid_ones() -> None:
    with pytest.raises(DataError) as err:
        get_benchmark("mnist")
    message = str(err.value)
    assert "mnist" in message
    assert all(name in message for name in NAMES)
    with pytest.raises(DataError):
        generate("nope", 2)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"split": "training"}, "split"),
        ({"index": -1}, "index"),
        ({"seed": -3}, "seed"),
        ({"index": 1.5}, "index"),
    ],
)
def test_bad_arguments_raise_data_error(kwargs: dict, word: str) -> None:
    args = {"index": 0, "seed": 0, "split": "train", **kwargs}
    with pytest.raises(DataError, match=word):
        get_benchmark("cells").sample(args["index"], args["seed"], args["split"])


# ------------------------------------------------------------------------------------------ determinism


@pytest.mark.parametrize("name", NAMES)
def test_same_key_gives_identical_sample(name: str) -> None:
    bench = get_benchmark(name)
    a, b = bench.sample(5, seed=3, split="val"), bench.sample(5, seed=3, split="val")
    assert a.image.dtype == np.uint8 and a.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert a.mask.dtype == bool and a.mask.shape == (IMAGE_SIZE, IMAGE_SIZE)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.label == b.label and a.bbox == b.bbox and a.meta == b.meta
    assert a.extra_masks.keys() == b.extra_masks.keys()
    for key in a.extra_masks:
        np.testing.assert_array_equal(a.extra_masks[key], b.extra_masks[key])


@pytest.mark.parametrize("name", NAMES)
def test_split_seed_and_index_change_the_image(name: str) -> None:
    bench = get_benchmark(name)
    images = [bench.sample(4, seed=0, split=split).image for split in ("train", "val", "test")]
    images += [bench.sample(4, seed=1, split="train").image, bench.sample(5, seed=0, split="train").image]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not np.array_equal(images[i], images[j]), (i, j)


@pytest.mark.parametrize("name", NAMES)
def test_order_independence(name: str) -> None:
    alone = generate(name, 1, seed=2, split="train", start=7)[0]
    batch = generate(name, 10, seed=2, split="train")
    np.testing.assert_array_equal(alone.image, batch[7].image)
    np.testing.assert_array_equal(alone.mask, batch[7].mask)
    assert alone.label == batch[7].label
    arrays = generate_arrays(name, 3, seed=2, split="train", start=6)
    np.testing.assert_array_equal(arrays["images"][1], batch[7].image)
    np.testing.assert_array_equal(arrays["masks"][1], batch[7].mask)
    assert arrays["labels"][1] == batch[7].label


def test_generate_arrays_layout() -> None:
    arrays = generate_arrays("shortcut", 4, seed=0, split="val")
    assert arrays["images"].shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3) and arrays["images"].dtype == np.uint8
    assert arrays["labels"].shape == (4,) and arrays["labels"].dtype == np.int64
    assert arrays["masks"].shape == (4, IMAGE_SIZE, IMAGE_SIZE) and arrays["masks"].dtype == bool
    assert arrays["mask_marker"].shape == (4, IMAGE_SIZE, IMAGE_SIZE) and arrays["mask_marker"].dtype == bool
    assert set(generate_arrays("ultrasound", 1)) == {"images", "labels", "masks", "mask_posterior"}
    assert set(generate_arrays("cells", 1)) == {"images", "labels", "masks"}


# ------------------------------------------------------------------------------------------ exact masks


@pytest.mark.parametrize("name", NAMES)
def test_removing_the_evidence_changes_only_masked_pixels(name: str) -> None:
    bench = get_benchmark(name)
    checked = 0
    for index in range(30):
        full = bench.sample(index, seed=1, split="test")
        counterfactual = bench.sample(index, seed=1, split="test", evidence=False)
        changed = (full.image != counterfactual.image).any(axis=-1)
        allowed = full.mask | full.extra_masks.get("posterior", np.zeros_like(full.mask))
        assert not (changed & ~allowed).any(), f"{name}[{index}]: pixels outside the masks changed"
        np.testing.assert_array_equal(full.mask, counterfactual.mask)
        if full.mask.any():
            checked += 1
            fraction = changed[full.mask].mean()
            assert fraction >= 0.8, f"{name}[{index}]: only {fraction:.2f} of mask pixels show the evidence"
        for key, extra in full.extra_masks.items():
            if key != "posterior":  # e.g. the shortcut marker stays when the object is removed
                np.testing.assert_array_equal(full.image[extra], counterfactual.image[extra])
    assert checked >= 15


def test_ultrasound_posterior_region_is_below_the_lesion() -> None:
    bench = get_benchmark("ultrasound")
    seen = 0
    for index in range(40):
        s = bench.sample(index)
        post = s.extra_masks["posterior"]
        if s.label == 0:
            continue
        seen += 1
        assert post.any() and not (post & s.mask).any()
        lesion_rows = np.nonzero(s.mask)[0]
        post_rows, post_cols = np.nonzero(post)
        assert post_rows.min() > lesion_rows.min()
        x0, _, x1, _ = s.bbox
        assert post_cols.min() >= x0 and post_cols.max() < x1
    assert seen >= 10


@pytest.mark.parametrize("name", NAMES)
def test_bbox_is_the_bounding_box_of_the_mask(name: str) -> None:
    for s in generate(name, 40, seed=4, split="val"):
        assert s.bbox == _bbox_of(s.mask)
        assert (s.bbox is None) == (not s.mask.any())


def test_ultrasound_mask_empty_exactly_for_normal() -> None:
    bench = get_benchmark("ultrasound")
    labels = []
    for s in generate("ultrasound", 60, seed=0, split="train"):
        labels.append(s.label)
        is_normal = bench.classes[s.label] == "normal"
        assert is_normal == (s.bbox is None) == (not s.mask.any())
        if is_normal:
            assert not s.extra_masks["posterior"].any()
        else:
            assert 150 <= s.mask.sum() <= 3000, s.mask.sum()
    assert set(labels) == {0, 1, 2}


@pytest.mark.parametrize(("name", "low", "high"), [("cells", 300, 1200), ("shortcut", 300, 1150)])
def test_mask_areas_are_sensible(name: str, low: int, high: int) -> None:
    for s in generate(name, 40, seed=0, split="train"):
        assert low <= s.mask.sum() <= high, (s.label, s.mask.sum())
        x0, y0, x1, y1 = s.bbox
        assert 0 <= x0 < x1 <= IMAGE_SIZE and 0 <= y0 < y1 <= IMAGE_SIZE


def test_cells_white_cell_lies_fully_inside_the_image() -> None:
    for s in generate("cells", 40, seed=0, split="train"):
        x0, y0, x1, y1 = s.bbox
        assert x0 > 0 and y0 > 0 and x1 < IMAGE_SIZE and y1 < IMAGE_SIZE


# ------------------------------------------------------------------------------------------ labels


@pytest.mark.parametrize("name", NAMES)
def test_classes_are_balanced(name: str, colour_sets: dict) -> None:
    labels = colour_sets[name]["train"]["labels"]
    k = get_benchmark(name).n_classes
    fractions = np.bincount(labels, minlength=k) / labels.size
    assert fractions.size == k
    assert np.all(fractions >= 0.6 / k) and np.all(fractions <= 1.4 / k), fractions


def _marker_corner(mask: np.ndarray) -> int:
    ys, xs = np.nonzero(mask)
    return 2 * int(ys.mean() > IMAGE_SIZE / 2) + int(xs.mean() > IMAGE_SIZE / 2)


def test_shortcut_marker_is_drawn_in_the_corner_of_its_class() -> None:
    for s in generate("shortcut", 40, seed=0, split="test"):
        marker = s.extra_masks["marker"]
        assert marker.sum() == 36
        x0, y0, x1, y1 = _bbox_of(marker)
        assert (x1 - x0, y1 - y0) == (6, 6)
        assert x0 in (4, IMAGE_SIZE - 10) and y0 in (4, IMAGE_SIZE - 10)  # 4 px from the two nearest edges
        assert _marker_corner(marker) == s.meta["marker_class"]
        assert s.image[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].min() > 200  # white centre
        assert not (marker & s.mask).any()
        assert s.meta["marker_consistent"] == (s.meta["marker_class"] == s.label)


def test_shortcut_marker_rate_per_split() -> None:
    bench = get_benchmark("shortcut")
    train = [bench.sample(i, seed=0, split="train").meta["marker_consistent"] for i in range(1000)]
    assert 0.90 <= np.mean(train) <= 0.99, np.mean(train)
    test = [bench.sample(i, seed=0, split="test").meta["marker_consistent"] for i in range(400)]
    assert 0.25 - 0.08 <= np.mean(test) <= 0.25 + 0.08, np.mean(test)


# ------------------------------------------------------------------------------------------ colour leakage


def _softmax_regression(x: np.ndarray, y: np.ndarray, k: int, steps: int = 1500, lr: float = 0.5) -> np.ndarray:
    """Multinomial logistic regression by full-batch gradient descent; x must include a bias column."""
    w = np.zeros((x.shape[1], k))
    onehot = np.eye(k)[y]
    for _ in range(steps):
        z = x @ w
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        w -= lr * x.T @ (p - onehot) / len(x)
    return w


def test_softmax_regression_learns_a_colour_signal_when_there_is_one() -> None:
    """Guards the test below against a regression that cannot learn anything."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 800)
    x = rng.normal(size=(800, 3)) + np.eye(4, 3)[y] * 2.0  # class means one standard deviation apart x2
    x = np.concatenate([x, np.ones((800, 1))], axis=1)
    w = _softmax_regression(x[:400], y[:400], 4)
    assert (np.argmax(x[400:] @ w, axis=1) == y[400:]).mean() > 0.6


@pytest.mark.parametrize("name", NAMES)
def test_mean_colour_does_not_reveal_the_class(name: str, colour_sets: dict) -> None:
    k = get_benchmark(name).n_classes
    train, test = colour_sets[name]["train"], colour_sets[name]["test"]
    feats = {
        s: d["images"].reshape(N_COLOUR, -1, 3).astype(np.float64).mean(axis=1)
        for s, d in (("train", train), ("test", test))
    }
    mu, sd = feats["train"].mean(axis=0), feats["train"].std(axis=0) + 1e-6

    def design(f: np.ndarray) -> np.ndarray:
        return np.concatenate([(f - mu) / sd, np.ones((len(f), 1))], axis=1)

    w = _softmax_regression(design(feats["train"]), train["labels"], k)
    accuracy = float((np.argmax(design(feats["test"]) @ w, axis=1) == test["labels"]).mean())
    print(f"{name}: mean-colour logistic regression test accuracy {accuracy:.3f} (chance {1 / k:.3f})")
    assert accuracy <= 1 / k + 0.12


# ------------------------------------------------------------------------------------------ export


@pytest.mark.parametrize(("name", "extra"), [("shortcut", "marker"), ("ultrasound", "posterior"), ("cells", None)])
def test_export_writes_images_masks_and_manifest(tmp_path, name: str, extra: str | None) -> None:
    n = 5
    manifest = export_dataset(name, n, tmp_path / "out", seed=0, split="test")
    assert manifest == tmp_path / "out" / "manifest.csv" and manifest.is_file()
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n
    expected = generate(name, n, seed=0, split="test")
    classes = get_benchmark(name).classes
    for row, sample in zip(rows, expected, strict=True):
        assert row["path"] == f"images/{name}_test_{expected.index(sample):05d}.png"
        assert int(row["label"]) == sample.label and row["class_name"] == classes[sample.label]
        image = np.asarray(Image.open(manifest.parent / row["path"]))
        np.testing.assert_array_equal(image, sample.image)
        mask_png = np.asarray(Image.open(manifest.parent / row["mask_path"]))
        assert mask_png.dtype == np.uint8 and set(np.unique(mask_png)) <= {0, 255}
        np.testing.assert_array_equal(mask_png == 255, sample.mask)
        box = tuple(int(row[c]) for c in ("x0", "y0", "x1", "y1")) if row["x0"] else None
        assert box == sample.bbox
        if extra is not None:
            extra_png = np.asarray(Image.open(manifest.parent / row[f"{extra}_mask_path"]))
            np.testing.assert_array_equal(extra_png == 255, sample.extra_masks[extra])
            assert row[f"{extra}_mask_path"].startswith(f"masks_{extra}/")
    if name == "shortcut":
        assert {"marker_class", "marker_consistent"} <= set(rows[0])


def test_export_rejects_bad_arguments(tmp_path) -> None:
    with pytest.raises(DataError):
        export_dataset("nope", 2, tmp_path)
    with pytest.raises(DataError):
        export_dataset("cells", 0, tmp_path)
