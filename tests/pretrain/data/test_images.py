"""Images as files hold them: 16-bit, palette, CMYK and transparent images; too small ones; wrong DATA.ROOT."""
import numpy as np
import pytest
from PIL import Image

from pretrain.data.images import DataError, list_images, readable_images, to_rgb


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as img:
        rgb = np.asarray(to_rgb(img)).astype(float)
    expected = ramp / 257.0
    assert rgb.shape == (64, 64, 3) and np.abs(rgb[..., 0] - expected).max() <= 0.5 + 1e-9
    assert (rgb == 255).mean() < 0.01  # Pillow's convert("RGB") makes 99.6% of it white


def test_palette_cmyk_and_transparency(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 40, 3)).astype(np.uint8)
    palette = Image.fromarray(rgb).quantize(16)
    palette.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as img:
        assert img.mode == "P" and np.array_equal(np.asarray(to_rgb(img)), np.asarray(palette.convert("RGB")))
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    with Image.open(tmp_path / "c.jpg") as img:
        assert img.mode == "CMYK" and np.abs(np.asarray(to_rgb(img)).astype(int) - rgb).mean() < 2
    rgba = np.dstack([rgb, np.where(np.arange(40) < 20, 0, 255).astype(np.uint8)[None, :].repeat(40, 0)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as img:
        out = np.asarray(to_rgb(img))
    assert (out[:, :20] == 255).all()  # fully transparent: the white background, not the hidden colours
    assert np.array_equal(out[:, 20:], rgb[:, 20:])  # opaque: unchanged


def test_images_too_small_to_crop_are_skipped_with_a_warning(tmp_path, caplog):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    Image.new("RGB", (200, 20)).save(tmp_path / "strip.png")
    Image.new("RGB", (64, 48)).save(tmp_path / "ok.png")
    with caplog.at_level("WARNING"):
        kept = readable_images(list_images(str(tmp_path)))
    assert [p.split("/")[-1] for p in kept] == ["ok.png"]
    assert "dot.png: it is too small (1 x 1" in caplog.text and "strip.png: it is too small (200 x 20" in caplog.text


def test_data_root_mistakes_are_named(tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "one.jpg")
    with pytest.raises(DataError, match="one.jpg' is a single image; give the folder"):
        list_images(str(tmp_path / "one.jpg"))
    (tmp_path / "archive.bin").write_bytes(bytes(range(256)))
    with pytest.raises(DataError, match="archive.bin' is neither a folder of images nor a text file"):
        list_images(str(tmp_path / "archive.bin"))
