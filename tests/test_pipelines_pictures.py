"""Picture keyframes: reading and fitting pictures, every bad input refused, inversion round trips."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines import pictures
from pipelines.__main__ import main
from pipelines.engine import Morpher
from pipelines.keys import ImageKey, PromptKey, keys_for
from pipelines.metrics import psnr
from pipelines.pictures import PictureError, read_picture
from pipelines.request import MorphRequest


def drawn(path: Path, size=(96, 64), mode="RGB", colour=(220, 30, 30), background=(128, 128, 128)) -> Path:
    """A red disc on grey, saved in `mode`."""
    image = Image.new("RGB", size, background)
    ImageDraw.Draw(image).ellipse((size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4), fill=colour)
    image.convert(mode).save(path)
    return path


# ---- reading and fitting -------------------------------------------------------------------


def test_a_wide_picture_is_centre_cropped_and_resized(tmp_path: Path) -> None:
    picture = read_picture(drawn(tmp_path / "wide.png", (300, 200)), (64, 64))
    assert picture.image.size == (64, 64) and picture.image.mode == "RGB"
    assert picture.record["crop"] == [50, 0, 250, 200]
    assert picture.record["original_size"] == [300, 200] and picture.record["format"] == "PNG"
    tall = read_picture(drawn(tmp_path / "tall.png", (100, 400)), (64, 32))
    assert tall.image.size == (64, 32) and tall.record["crop"] == [0, 175, 100, 225]


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (8, 8, 24, 24))
    image.save(tmp_path / "rgba.png")
    picture = read_picture(tmp_path / "rgba.png", (32, 32))
    array = np.asarray(picture.image)
    assert tuple(array[0, 0]) == pictures.BACKGROUND and tuple(array[16, 16]) == (0, 0, 255)
    assert picture.record["alpha_composited_on"] == list(pictures.BACKGROUND)


@pytest.mark.parametrize("mode", ["L", "P", "LA"])
def test_greyscale_and_palette_pictures_become_rgb(tmp_path: Path, mode: str) -> None:
    picture = read_picture(drawn(tmp_path / f"{mode}.png", mode=mode), (32, 32))
    assert picture.image.mode == "RGB" and picture.image.size == (32, 32)


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path: Path) -> None:
    array = np.full((16, 16), 65535, dtype=np.uint16)
    array[:8] = 0
    Image.fromarray(array).save(tmp_path / "deep.png")  # uint16 -> a 16-bit greyscale PNG
    fitted = np.asarray(read_picture(tmp_path / "deep.png", (16, 16)).image)
    assert fitted[12, 8].tolist() == [255, 255, 255] and fitted[2, 8].tolist() == [0, 0, 0]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))  # blue on the left
    exif = Image.Exif()
    exif[pictures.EXIF_ORIENTATION] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    picture = read_picture(tmp_path / "rotated.jpg", (20, 40))
    array = np.asarray(picture.image).astype(int)
    assert picture.record["exif_rotated"] is True
    assert array[5, 10, 2] > 200 and array[35, 10, 0] > 200  # blue now on top, red below


def test_the_same_pixels_give_the_same_key_whatever_the_file_name(tmp_path: Path) -> None:
    first = read_picture(drawn(tmp_path / "a.png"), (32, 32))
    second = read_picture(drawn(tmp_path / "b.png"), (32, 32))
    other = read_picture(drawn(tmp_path / "c.png", colour=(30, 30, 220)), (32, 32))
    assert first.digest == second.digest != other.digest


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda path: None, "no such file"),
        (lambda path: path.write_bytes(b"plain text, not a picture"), "not a picture"),
        (lambda path: path.write_bytes(drawn(path.with_suffix(".full.png"), (64, 64)).read_bytes()[:200]),
         "truncated"),
        (lambda path: Image.new("RGB", (8, 8)).save(path, format="BMP"), "use PNG, JPEG or WebP"),
    ],
)
def test_bad_pictures_are_refused_in_one_line_naming_the_file(tmp_path: Path, make, words: str) -> None:
    path = tmp_path / "keyframe.png"
    make(path)
    with pytest.raises(PictureError, match=words) as caught:
        read_picture(path, (32, 32))
    assert "keyframe.png" in str(caught.value) and "\n" not in str(caught.value)


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path: Path, monkeypatch) -> None:
    # a 20000 x 20000 picture of one colour compresses to a small PNG; its header alone refuses it
    Image.new("L", (20000, 20000)).save(tmp_path / "bomb.png", optimize=False)
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))
    with pytest.raises(PictureError, match=r"bomb.png' is 400000000 pixels; the limit is 40000000 pixels"):
        read_picture(tmp_path / "bomb.png", (32, 32))
    assert decoded == []


def test_a_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    path = drawn(tmp_path / "big.png", (64, 64))
    with pytest.raises(PictureError, match=r"big.png.*the limit is"):
        read_picture(path, (32, 32), max_bytes=100)


def test_keys_mix_prompts_and_pictures(tmp_path: Path) -> None:
    path = drawn(tmp_path / "disc.png")
    keys = keys_for((f"image:{path}|a red circle", "a blue square"), (4,), (32, 32))
    assert isinstance(keys[0], ImageKey) and keys[0].prompt == "a red circle" and keys[0].seed == 4
    assert keys[1] == PromptKey("a blue square", 4)
    assert keys[0].guidance(5.0) == 1.0 and keys[1].guidance(5.0) == 5.0


# ---- on a model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes64():
    """The bundled model: its VAE is trained, so a picture survives encode and decode."""
    from pipelines.loading import load_model

    return Morpher(load_model("shapes64", device="cpu"))


def test_inversion_undoes_the_sampler_in_latent_space(tiny_model) -> None:
    """On the tiny model (a DDIM sampler), invert a latent, then sample it back: close to the same latent.

    The tiny UNet is random, not smooth, so DDIM's one-step approximation is rough here;
    a fresh noise sampled the same way lands nowhere near, which is the contrast asked for.
    """
    import torch

    from pipelines.inversion import invert, sampler_for_inversion

    pipe = tiny_model.pipe
    clean = torch.randn((1, 4, 4, 4), generator=torch.Generator().manual_seed(0))
    embeds = pipe.encode_prompt("a red circle", "cpu", 1, False)[0]
    noise = invert(pipe, clean, embeds, 20)
    own = pipe.scheduler
    pipe.scheduler = sampler_for_inversion(pipe)
    try:
        def sample(latents):
            return pipe(prompt_embeds=embeds, latents=latents, num_inference_steps=20, guidance_scale=1.0,
                        height=32, width=32, output_type="latent").images

        back = sample(noise)
        elsewhere = sample(torch.randn((1, 4, 4, 4), generator=torch.Generator().manual_seed(1)))
    finally:
        pipe.scheduler = own
    error = torch.nn.functional.mse_loss(back, clean)
    assert error < 0.25 * clean.pow(2).mean()
    assert error < 0.2 * torch.nn.functional.mse_loss(elsewhere, clean)


def test_a_picture_the_model_rendered_is_inverted_back_nearly_exactly(shapes64, tmp_path: Path) -> None:
    request = MorphRequest(prompts=("a large red circle", "a blue square"), frames=2, steps=20, guidance=1.0,
                           seeds=(3,))
    rendered = shapes64.render(request).frames[0].image
    rendered.save(tmp_path / "own.png")
    again = shapes64.render(replace(request, prompts=(f"image:{tmp_path / 'own.png'}|a large red circle",
                                                      "a blue square")))
    assert psnr(again.frames[0].image, rendered) >= 32  # the VAE round trip itself is the ceiling
    assert again.manifest["keys"][0]["reconstruction"]["within_tolerance"] is True


def test_a_drawn_picture_is_reconstructed_within_2_db_of_the_vae_round_trip(shapes64, tmp_path: Path) -> None:
    path = drawn(tmp_path / "disc.png", (64, 64))
    result = shapes64.render(MorphRequest(prompts=(f"image:{path}", "a blue square"), frames=2, steps=20))
    figures = result.manifest["keys"][0]["reconstruction"]
    assert figures["psnr_vs_input_db"] >= figures["vae_round_trip_psnr_db"] - 2.0
    assert figures["within_tolerance"] is True


def test_a_picture_chain_starts_on_the_picture_and_reports_its_reconstruction(morpher, tmp_path: Path) -> None:
    path = drawn(tmp_path / "disc.png", (48, 48))
    request = MorphRequest(prompts=(f"image:{path}", "a blue square"), frames=4, steps=8, size=(32, 32))
    result = morpher.render(request)
    record = result.manifest["keys"][0]
    assert record["kind"] == "image" and record["file"] == "disc.png" and record["crop"] == [0, 0, 48, 48]
    figures = record["reconstruction"]
    assert figures["psnr_vs_vae_round_trip_db"] >= figures["vae_round_trip_psnr_db"] - 2 or figures["within_tolerance"]
    assert result.manifest["keyframes"][0]["reconstruction"] == figures
    # re-timing the same picture morph inverts nothing again
    inverted = morpher.inversions.inverted
    morpher.render(replace(request, frames=6))
    assert morpher.inversions.inverted == inverted


def test_cli_refuses_a_bad_picture_before_loading_a_model(tmp_path: Path, capsys, monkeypatch) -> None:
    from pipelines import loading

    monkeypatch.setattr(loading, "load_model", lambda *args, **kwargs: pytest.fail("model loaded"))
    (tmp_path / "notes.png").write_text("hello")
    assert main([f"image:{tmp_path / 'notes.png'}", "a blue square", "--out", str(tmp_path / "m.gif")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.png" in err[0] and "not a picture" in err[0]
    assert not (tmp_path / "m.gif").exists()


def test_cli_morphs_between_two_pictures(tiny_model_dir: Path, tmp_path: Path) -> None:
    first, second = drawn(tmp_path / "a.png"), drawn(tmp_path / "b.png", colour=(30, 200, 30))
    code = main([f"image:{first}", f"image:{second}", "--model", str(tiny_model_dir), "--frames", "3", "--steps",
                 "3", "--size", "32x32", "--out", str(tmp_path / "m.png"), "--manifest", str(tmp_path / "m.json")])
    assert code == 0
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert [key["kind"] for key in manifest["keys"]] == ["image", "image"]
    with Image.open(tmp_path / "m.png") as strip:
        assert strip.size == (96, 32)


@pytest.mark.parametrize(
    "walk,extra",
    [("grid", {"grid": (2, 2)}), ("direction", {"scale": (0.0, 1.0), "frames": 3}), ("chain", {"spacing": "even"})],
)
def test_pictures_work_in_every_walk_and_spacing(morpher, tmp_path: Path, walk: str, extra: dict) -> None:
    picture = f"image:{drawn(tmp_path / 'disc.png')}"
    prompts = {"grid": (picture, "a blue circle", "a red square", "a blue square"),
               "direction": (picture, "a red square", "a blue square"),
               "chain": (picture, "a blue square")}[walk]
    request = MorphRequest(prompts=prompts, walk=walk, steps=3, size=(32, 32), **{"frames": 4, **extra})
    result = morpher.render(request)
    assert result.manifest["keys"][0]["kind"] == "image"
    first = next(entry for entry in result.manifest["keyframes"] if entry["key"] == 0)
    assert "reconstruction" in first  # the frame that shows the picture alone reports how close it is
