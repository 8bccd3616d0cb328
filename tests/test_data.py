"""load_data on real data: digits, MNIST-1D, npz, image folders, CSV, and bad input."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from gradwise.data import Splits, _readers, load_data
from gradwise.errors import UserError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def shared_file(relative):
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="module")
def digits_u8():
    """Digits as (1797, 8, 8) uint8 pixels 0..255 and labels."""
    x, y = load_digits(return_X_y=True)
    return np.round(x.reshape(-1, 8, 8) * 255 / 16).astype(np.uint8), y


def splits_of(d: Splits):
    return [(d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test)]


def as_u8_rows(x: torch.Tensor) -> list[bytes]:
    """Unnormalised [0, 1] samples back to their uint8 bytes, one entry per sample."""
    return [row.tobytes() for row in np.round(x.numpy() * 255).astype(np.uint8)]


# --- digits ---------------------------------------------------------------------------------

def test_digits_shapes_sizes_and_stratification():
    d = load_data("digits")
    assert d.name == "digits" and d.num_classes == 10 and d.input_shape == (1, 8, 8)
    assert sum(len(y) for _, y in splits_of(d)) == 1797
    assert (len(d.y_test), len(d.y_val)) == (359, 144)
    for x, y in splits_of(d):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 8, 8) and len(x) == len(y)
        assert set(y.tolist()) == set(range(10))
    assert d.mean.dtype == d.std.dtype == torch.float32
    # each class gives 20% of its samples to test, then 10% of the rest to val, up to rounding
    pool = torch.bincount(torch.cat([d.y_train, d.y_val]))
    assert (torch.bincount(d.y_test) - 0.2 * (pool + torch.bincount(d.y_test))).abs().max() < 1
    assert (torch.bincount(d.y_val) - 0.1 * pool).abs().max() < 1
    assert "train=1294, val=144, test=359" in repr(d)


def test_digits_normalisation_uses_the_train_split_only():
    raw, d = load_data("digits", normalize=False), load_data("digits")
    assert raw.x_train.min() == 0 and raw.x_train.max() == 1
    assert torch.equal(raw.mean, torch.zeros(1, 1, 1)) and torch.equal(raw.std, torch.ones(1, 1, 1))
    mean, std = raw.x_train.mean(), raw.x_train.std(correction=0)
    assert d.mean.shape == d.std.shape == (1, 1, 1)
    torch.testing.assert_close(d.mean.flatten(), mean.reshape(1))
    torch.testing.assert_close(d.std.flatten(), std.reshape(1))
    all_x = torch.cat([x for x, _ in splits_of(raw)])
    assert abs(all_x.mean() - mean) > 1e-4  # so the check above can tell train from all data
    for (x, _), (x_raw, _) in zip(splits_of(d), splits_of(raw), strict=True):
        torch.testing.assert_close(x, (x_raw - mean) / std)


def test_val_split_depends_on_seed_and_test_split_does_not():
    a, b, c = (load_data("digits", seed=s, normalize=False) for s in (0, 0, 1))
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.x_val, c.x_val)
    assert torch.equal(a.x_test, c.x_test)
    pool = sorted(as_u8_rows(torch.cat([a.x_train, a.x_val])))
    assert pool == sorted(as_u8_rows(torch.cat([c.x_train, c.x_val])))
    half = load_data("digits", val_fraction=0.5)
    assert len(half.y_val) == len(pool) // 2


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, "0.1"])
def test_val_fraction_must_lie_strictly_between_0_and_1(fraction):
    with pytest.raises(UserError, match=rf"val_fraction={fraction!r} is invalid.*\(0, 1\)"):
        load_data("digits", val_fraction=fraction)


def test_to_moves_every_tensor():
    d = load_data("digits").to("meta")
    tensors = [v for v in vars(d).values() if isinstance(v, torch.Tensor)]
    assert len(tensors) == 8 and all(t.is_meta for t in tensors)
    assert d.num_classes == 10 and d.input_shape == (1, 8, 8)


# --- MNIST-1D -------------------------------------------------------------------------------

def test_mnist1d_is_the_frozen_set_and_leaves_global_rngs_alone():
    _readers._mnist1d.cache_clear()
    np.random.seed(123)
    expected = np.random.get_state()[1].copy()
    d = load_data("mnist1d", normalize=False)
    assert np.array_equal(np.random.get_state()[1], expected)
    assert d.input_shape == (1, 40) and d.num_classes == 10
    assert (len(d.y_train) + len(d.y_val), len(d.y_test)) == (4000, 1000)
    assert (len(d.y_train), len(d.y_val)) == (3600, 400)
    frozen = np.load(shared_file("mnist1d/mnist1d.npz"))
    torch.testing.assert_close(d.x_test[:, 0], torch.tensor(frozen["x_test"], dtype=torch.float32))
    assert torch.equal(d.y_test, torch.from_numpy(frozen["y_test"]))
    # train and val are disjoint, order-keeping subsets of the frozen train split
    x_frozen = torch.from_numpy(frozen["x_train"])
    for x, y in [(d.x_train, d.y_train), (d.x_val, d.y_val)]:
        exact = "donot_use_mm_for_euclid_dist"
        dist, index = torch.cdist(x[:, 0].double(), x_frozen, compute_mode=exact).min(dim=1)
        assert dist.max() < 1e-4 and bool((index.diff() > 0).all())
        assert torch.equal(y, torch.from_numpy(frozen["y_train"])[index])


def test_mnist1d_normalised_per_channel():
    d = load_data("mnist1d")
    assert d.mean.shape == (1, 1)
    assert abs(d.x_train.mean()) < 1e-5 and abs(d.x_train.std(correction=0) - 1) < 1e-5


# --- npz ------------------------------------------------------------------------------------

def test_npz_full_mnist():
    path = shared_file("mnist/mnist.npz")
    d = load_data(f"npz:{path}")
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (54000, 6000, 10000)
    with np.load(path) as raw:
        x_test = torch.from_numpy(raw["x_test"][:100, None] / np.float32(255))
        y_test = torch.from_numpy(raw["y_test"]).long()
    torch.testing.assert_close(d.mean.flatten(), torch.tensor([0.1307]), atol=1e-3, rtol=0)
    torch.testing.assert_close(d.x_test[:100], (x_test - d.mean) / d.std)
    assert torch.equal(d.y_test, y_test)


def test_npz_cifar_hwc_becomes_chw():
    path = shared_file("cifar10-jpeg-subset/cifar10_jpeg_subset.npz")
    d = load_data(f"npz:{path}", normalize=False)
    assert d.input_shape == (3, 32, 32) and d.num_classes == 10
    with np.load(path) as raw:
        first = raw["x_test"][0]
    assert torch.equal(d.x_test[0], torch.from_numpy(first.transpose(2, 0, 1) / np.float32(255)))


@pytest.mark.parametrize(("layout", "shape"), [
    (lambda x: x, (1, 8, 8)),                                          # (N, H, W) uint8
    (lambda x: x[..., None], (1, 8, 8)),                               # (N, H, W, 1)
    (lambda x: np.repeat(x[..., None], 3, axis=3), (3, 8, 8)),         # (N, H, W, 3)
    (lambda x: np.repeat(x[:, None], 3, axis=1), (3, 8, 8)),           # (N, 3, H, W)
    (lambda x: x.reshape(len(x), 64) / np.float32(255), (64,)),       # (N, F) float tabular
])
def test_npz_layouts(tmp_path, digits_u8, layout, shape):
    x, y = digits_u8
    path = tmp_path / "d.npz"
    np.savez(path, x_train=layout(x[:1500]), y_train=y[:1500], x_test=layout(x[1500:]),
             y_test=y[1500:])
    d = load_data(f"npz:{path}", normalize=False)
    assert d.input_shape == shape and d.num_classes == 10
    assert (len(d.y_train) + len(d.y_val), len(d.y_test)) == (1500, 297)
    assert torch.equal(d.y_test, torch.from_numpy(y[1500:]))
    first = torch.from_numpy(x[1500] / np.float32(255))
    assert torch.equal(d.x_test[0].reshape(-1, 64)[0], first.flatten())


def test_npz_with_its_own_val_split(tmp_path, digits_u8):
    x, y = digits_u8
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x[:1200], y_train=y[:1200], x_val=x[1200:1500], y_val=y[1200:1500],
             x_test=x[1500:], y_test=y[1500:])
    d = load_data(f"npz:{path}", normalize=False, val_fraction=0.5)  # val_fraction unused
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (1200, 300, 297)
    assert torch.equal(d.y_val, torch.from_numpy(y[1200:1500]))
    assert as_u8_rows(d.x_val[:, 0]) == [row.tobytes() for row in x[1200:1500]]


# --- image folders --------------------------------------------------------------------------

def write_images(folder, x, y, suffix=".png", mode="L", names=NAMES):
    for i, (pixels, label) in enumerate(zip(x, y, strict=True)):
        (folder / names[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).convert(mode).save(folder / names[label] / f"{mode}{i}{suffix}")


def test_folder_of_class_folders(tmp_path, digits_u8):
    x, y = digits_u8
    keep = np.flatnonzero(y < 5)[:50]
    write_images(tmp_path, x[keep], y[keep])
    (tmp_path / "notes.txt").write_text("not an image")
    d = load_data(f"folder:{tmp_path}", normalize=False)
    assert d.input_shape == (1, 8, 8) and d.num_classes == 5
    assert sum(len(y) for _, y in splits_of(d)) == 50
    # labels follow the sorted class-folder names: four, one, three, two, zero
    names = sorted(NAMES[:5])
    source = {x[i].tobytes(): names.index(NAMES[y[i]]) for i in keep}
    for xs, ys in splits_of(d):
        assert [source[row] for row in as_u8_rows(xs[:, 0])] == ys.tolist()


def test_folder_with_train_and_test(tmp_path, digits_u8):
    x, y = digits_u8
    write_images(tmp_path / "train", x[:40], y[:40])
    write_images(tmp_path / "test", x[40:60], y[40:60])
    d = load_data(f"folder:{tmp_path}", normalize=False)
    assert len(d.y_train) + len(d.y_val) == 40 and len(d.y_test) == 20
    names = sorted(NAMES)
    assert d.y_test.tolist() == sorted(names.index(NAMES[k]) for k in y[40:60])


def test_folder_of_colour_images(tmp_path, digits_u8):
    x, y = digits_u8
    write_images(tmp_path, x[:20], y[:20], suffix=".jpg", mode="RGB")
    write_images(tmp_path, x[20:25], y[20:25], mode="RGBA")
    write_images(tmp_path, x[25:30], y[25:30], mode="P")
    write_images(tmp_path, x[30:35], y[30:35])  # grayscale, repeated to three channels
    d = load_data(f"folder:{tmp_path}", normalize=False)
    assert d.input_shape == (3, 8, 8) and d.mean.shape == (3, 1, 1)
    assert sum(len(y) for _, y in splits_of(d)) == 35


def test_folder_corrupt_image_is_named(tmp_path, digits_u8):
    x, y = digits_u8
    write_images(tmp_path, x[:10], y[:10])
    bad = tmp_path / NAMES[y[0]] / "broken.png"
    bad.write_bytes(np.random.default_rng(0).bytes(200))
    with pytest.raises(UserError, match=f"cannot read image {re.escape(str(bad))}"):
        load_data(f"folder:{tmp_path}")


def test_folder_images_of_different_sizes(tmp_path, digits_u8):
    x, y = digits_u8
    write_images(tmp_path, x[:10], y[:10])
    odd = tmp_path / NAMES[y[3]] / "L3.png"
    Image.fromarray(x[3]).resize((9, 8)).save(odd)
    match = f"images differ in size: .* is 8x8 but {re.escape(str(odd))} is 9x8"
    with pytest.raises(UserError, match=match):
        load_data(f"folder:{tmp_path}")


def test_folder_too_large_for_memory_is_refused_before_reading(tmp_path, digits_u8, monkeypatch):
    from gradwise.data import _readers

    x, y = digits_u8
    write_images(tmp_path, x[:20], y[:20])
    monkeypatch.setattr(_readers, "free_memory_bytes", lambda: 2 * 20 * 8 * 8 * 3 * 4 - 1)
    with pytest.raises(UserError, match=r"20 images of 8x8 need .* more than half of the"):
        load_data(f"folder:{tmp_path}")
    monkeypatch.setattr(_readers, "free_memory_bytes", lambda: 2 * 20 * 8 * 8 * 3 * 4)
    assert load_data(f"folder:{tmp_path}").num_classes > 1


# --- CSV ------------------------------------------------------------------------------------

def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


@pytest.mark.parametrize("string_labels", [False, True])
def test_csv_of_digits(tmp_path, string_labels):
    x, y = load_digits(return_X_y=True)
    labels = [NAMES[k] for k in y] if string_labels else y.tolist()
    path = tmp_path / "digits.csv"
    write_csv(path, ["Label", *(f"px{i}" for i in range(64))],
              [[label, *map(int, row)] for label, row in zip(labels, x, strict=True)])
    raw, d = load_data(f"csv:{path}", normalize=False), load_data(f"csv:{path}")
    assert d.input_shape == (64,) and d.num_classes == 10 and d.mean.shape == (64,)
    assert sum(len(y) for _, y in splits_of(d)) == 1797
    ids = {k: sorted(NAMES).index(NAMES[k]) if string_labels else k for k in range(10)}
    source = {row.tobytes(): ids[label] for row, label in zip(x, y, strict=True)}
    assert [source[row.double().numpy().tobytes()] for row in raw.x_test] == raw.y_test.tolist()
    assert d.std[0] == 1 and bool(torch.isfinite(d.x_train).all())  # px0 is always 0


def test_csv_label_column(tmp_path):
    path = tmp_path / "t.csv"
    write_csv(path, ["a", "digit", "b"], [[i, i % 2, 2 * i] for i in range(20)])
    d = load_data(f"csv:{path}", label_column="digit", normalize=False)
    assert d.input_shape == (2,) and d.num_classes == 2
    assert torch.equal(d.x_test[:, 1], 2 * d.x_test[:, 0])
    assert torch.equal(d.y_test, d.x_test[:, 0].long() % 2)
    path = tmp_path / "kinds.csv"
    write_csv(path, ["a", "b", "kind"], [[i, -i, "odd" if i % 2 else "even"] for i in range(20)])
    d = load_data(f"csv:{path}", normalize=False)  # no conventional name: the last column
    assert d.input_shape == (2,) and d.num_classes == 2
    assert torch.equal(d.y_train, d.x_train[:, 0].long() % 2)  # even -> 0, odd -> 1


# --- bad input ------------------------------------------------------------------------------

GOOD = dict(x_train=np.ones((20, 4)), y_train=np.arange(20) % 2,
            x_test=np.ones((6, 4)), y_test=np.arange(6) % 2)


def nan_test():
    x = np.ones((6, 4))
    x[0, :2] = [np.nan, np.inf]
    return x


@pytest.mark.parametrize(("change", "match"), [
    (dict(x_test=None, y_test=None), r"missing arrays x_test, y_test; found x_train, y_train"),
    (dict(x_val=np.ones((3, 4))), r"missing arrays y_val; found x_test, x_train, x_val, y_test"),
    (dict(y_train=np.arange(19) % 2), r"x_train has 20 samples but y_train has 19"),
    (dict(y_train=(np.arange(20) % 2)[:, None]), r"y_train has shape \(20, 1\); .* 1-D"),
    (dict(x_train=np.ones(20)), r"x_train has shape \(20,\); accepted: \(N, F\) tabular"),
    (dict(x_train=np.ones((20, 1, 2, 2, 1))), r"x_train has shape \(20, 1, 2, 2, 1\)"),
    (dict(x_test=np.ones((6, 5))), r"x_test samples have shape \(5,\) but x_train samples \(4,\)"),
    (dict(x_test=np.full((6, 4), "a")), r"x_test has dtype <U1; x must be numeric"),
    (dict(y_train=np.arange(20) / 2), r"y_train holds non-integer labels such as 0.5"),
    (dict(y_train=np.array(["a", "b"] * 10)), r"y_train has dtype <U1; labels must be integers"),
    (dict(y_test=np.arange(6) % 2 - 1), r"y_test holds negative labels \[-1\]"),
    (dict(y_test=np.arange(6) % 4), r"y_test holds labels \[2, 3\] that y_train lacks"),
    (dict(y_train=np.arange(20) % 2 * 3), r"y_train lacks class ids \[1, 2\] of 0..3"),
    (dict(x_test=nan_test()), r"x_test holds 2 NaN or inf values"),
    (dict(x_test=np.ones((0, 4)), y_test=np.zeros(0, int)), r"the test split is empty"),
    (dict(x_train=np.ones((4, 4)), y_train=np.arange(4) % 2), r"the val split is empty"),
])
def test_bad_npz(tmp_path, change, match):
    arrays = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match=match):
        load_data(f"npz:{tmp_path / 'bad.npz'}")


def test_bad_npz_files(tmp_path):
    np.savez(tmp_path / "objects.npz", x_train=np.array([{}], dtype=object), **{
        k: v for k, v in GOOD.items() if k != "x_train"})
    with pytest.raises(UserError, match=r"cannot read .*objects.npz"):
        load_data(f"npz:{tmp_path / 'objects.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive")
    with pytest.raises(UserError, match=r"cannot read .*junk.npz as an .npz archive"):
        load_data(f"npz:{tmp_path / 'junk.npz'}")
    np.save(tmp_path / "single.npy", np.ones(3))
    with pytest.raises(UserError, match=r"single.npy holds a single array"):
        load_data(f"npz:{tmp_path / 'single.npy'}")


@pytest.mark.parametrize(("source", "match"), [
    ("imagenet", r"unknown data source 'imagenet'; accepted: digits, mnist1d, npz:PATH, "
                 r"folder:PATH, csv:PATH"),
    ("npz:", r"unknown data source 'npz:'"),
    ("digits:x", r"unknown data source 'digits:x'"),
    ("npz:{tmp}/nothing.npz", r"npz:.*nothing.npz: .*nothing.npz does not exist"),
    ("folder:{tmp}/nothing", r"nothing does not exist"),
    ("folder:{tmp}", r"has no class sub-folders; expected PATH/<class>/<image>.png"),
    ("csv:{tmp}", r"is not a file"),
])
def test_bad_sources(tmp_path, source, match):
    with pytest.raises(UserError, match=match):
        load_data(source.format(tmp=tmp_path))


def test_label_column_applies_to_csv_only():
    with pytest.raises(UserError, match=r"label_column='y' applies only to csv:PATH sources"):
        load_data("digits", label_column="y")


def test_bad_folders(tmp_path, digits_u8):
    x, y = digits_u8
    write_images(tmp_path / "train", x[:10], y[:10])
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(UserError, match=r"class folder .*empty holds no PNG or JPEG images"):
        load_data(f"folder:{tmp_path}")
    (tmp_path / "train" / "empty").rmdir()
    write_images(tmp_path / "test", x[:2], y[:2], names=["kangaroo"] * 10)
    with pytest.raises(UserError, match=r"class folder .*kangaroo is not among the classes"):
        load_data(f"folder:{tmp_path}")


def test_sixteen_bit_images_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "a" / "deep.png")
    with pytest.raises(UserError, match=r"deep.png has mode I.*; accepted: 8-bit"):
        load_data(f"folder:{tmp_path}")


@pytest.mark.parametrize(("text", "match"), [
    ("a,b,label\n1,2,0\n3,abc,1\n", r"line 3, column 'b' holds 'abc'; features must be numbers"),
    ("a,b,label\n1,2,0\n3,1\n", r"line 3 has 2 fields but the header has 3"),
    ("a,b,label\n", r"has no data rows"),
    ("", r"has no data rows"),
    ("label\n0\n1\n", r"has no feature columns besides 'label'"),
    ("a,label\n1,0\n2,\n", r"line 3 has an empty label in column 'label'"),
    ("a,label\n1,0\n2,1.5\n", r"y holds non-integer labels such as 1.5"),
    ("a,label\n" + "1,0\n2,1\n" * 4 + "3,-1\n", r"y holds negative labels \[-1\]"),
    ("a,label\n" + "1,0\n2,2\n" * 9, r"y_train lacks class ids \[1\] of 0..2"),
    ("a,label\n" + "nan,0\n2,1\n" * 9, r"x holds 9 NaN or inf values"),
])
def test_bad_csv(tmp_path, text, match):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(UserError, match=match):
        load_data(f"csv:{tmp_path / 'bad.csv'}")


def test_bad_csv_files(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,0\n")
    with pytest.raises(UserError, match=r"no column 'z' for label_column; columns: a, b"):
        load_data(f"csv:{tmp_path / 't.csv'}", label_column="z")
    (tmp_path / "latin1.csv").write_bytes("caf\xe9,label\n1,0\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"cannot read .*latin1.csv as UTF-8 CSV"):
        load_data(f"csv:{tmp_path / 'latin1.csv'}")


@pytest.mark.parametrize("seed", [-1, 0.5, None])
def test_seed_must_be_a_natural_number(seed):
    with pytest.raises(UserError, match=rf"seed={seed!r} is invalid; seed must be an integer >= 0"):
        load_data("digits", seed=seed)
