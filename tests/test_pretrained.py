"""Local pretrained weights: Google .npz and timm state dicts into the shared backbone."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from scipy import ndimage, special
from timm.models.vision_transformer import _load_weights

from bench.errors import UsageError
from google_layout import hybrid_arrays, vit_arrays, write_npz
from methods.backbone import BackboneConfig, build_vit, check_pretrained, create_vit
from methods.pretrained import PretrainedFile, file_sha256, resize_grid
from methods.pretrained import digest

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(patch=8, dim=16, depth=2, heads=4)


def tiny_cfg(img_size: int = 32, **kw) -> BackboneConfig:
    return BackboneConfig(img_size=img_size, patch_size=TINY["patch"], embed_dim=TINY["dim"], depth=TINY["depth"],
                          num_heads=TINY["heads"], drop_rate=0.0, **kw)


@pytest.fixture
def tiny_npz(tmp_path):
    arrays = vit_arrays(np.random.default_rng(0), grid=4, **TINY)
    return write_npz(tmp_path / "ViT-tiny.npz", arrays), arrays


def reference_forward(a: dict[str, np.ndarray], images: np.ndarray, heads: int) -> np.ndarray:
    """The jeonsworld ViT forward written straight from the npz arrays, float64 numpy."""
    a = {k: v.astype(np.float64) for k, v in a.items()}

    def layer_norm(x, prefix):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-6) * a[prefix + "/scale"] + a[prefix + "/bias"]

    kernel = a["embedding/kernel"]  # [p, p, 3, D]
    p = kernel.shape[0]
    B, C, S, _ = images.shape
    g = S // p
    patches = images.reshape(B, C, g, p, g, p)
    x = np.einsum("bcipjq,pqcd->bijd", patches, kernel).reshape(B, g * g, -1) + a["embedding/bias"]
    x = np.concatenate([np.broadcast_to(a["cls"], (B, 1, x.shape[-1])), x], axis=1)
    x = x + a["Transformer/posembed_input/pos_embedding"]
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in a:
        blk = f"Transformer/encoderblock_{i}/"
        mha = blk + "MultiHeadDotProductAttention_1/"
        h = layer_norm(x, blk + "LayerNorm_0")
        q, k, v = (np.einsum("bnd,dhe->bhne", h, a[mha + n + "/kernel"]) + a[mha + n + "/bias"][None, :, None]
                   for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
        probs = np.exp(s - s.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + np.einsum("bhne,hed->bnd", probs @ v, a[mha + "out/kernel"]) + a[mha + "out/bias"]
        h = layer_norm(x, blk + "LayerNorm_2")
        h = h @ a[blk + "MlpBlock_3/Dense_0/kernel"] + a[blk + "MlpBlock_3/Dense_0/bias"]
        h = 0.5 * h * (1 + special.erf(h / np.sqrt(2)))
        x = x + h @ a[blk + "MlpBlock_3/Dense_1/kernel"] + a[blk + "MlpBlock_3/Dense_1/bias"]
        i += 1
    return layer_norm(x, "Transformer/encoder_norm")


def test_google_npz_reproduces_the_reference_forward(tiny_npz):
    path, arrays = tiny_npz
    model = create_vit(tiny_cfg(pretrained=PretrainedFile.from_path(path)), num_classes=5).double().eval()
    images = np.random.default_rng(1).standard_normal((2, 3, 32, 32))
    with torch.no_grad():
        ours = model.forward_features(torch.from_numpy(images)).numpy()
        logits = model(torch.from_numpy(images))
    ref = reference_forward(arrays, images, TINY["heads"])
    assert np.abs(ours - ref).max() <= 1e-10
    assert torch.count_nonzero(logits) == 0  # the head is fgbench's, zero-initialised, never loaded
    report = model.pretrained_report
    assert {"head/kernel", "head/bias", "pre_logits/kernel", "pre_logits/bias"} <= set(report.skipped)
    assert report.initialised == ["head.weight", "head.bias"]
    assert "blocks.1.attn.qkv.weight" in report.loaded and report.adapted == {}


def _timm_loaded(cfg: BackboneConfig, path) -> dict[str, torch.Tensor]:
    model = build_vit(cfg, num_classes=5)
    _load_weights(model, str(path))
    return model.state_dict()


@pytest.mark.parametrize("kind", ["plain", "hybrid"])
def test_npz_conversion_agrees_with_timm_loader(tmp_path, kind):
    rng = np.random.default_rng(2)
    if kind == "plain":
        cfg = tiny_cfg()
        arrays = vit_arrays(rng, grid=cfg.grid_size, **TINY)
    else:
        cfg = BackboneConfig(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, drop_rate=0.0,
                             hybrid_layers=(1, 1))
        backbone = build_vit(cfg, 5).patch_embed.backbone
        arrays = hybrid_arrays(rng, backbone, dim=16, depth=1, heads=2, grid=cfg.grid_size)
    path = write_npz(tmp_path / f"{kind}.npz", arrays)
    ours = create_vit(BackboneConfig(**{**cfg.__dict__, "pretrained": PretrainedFile.from_path(path)}), 5).state_dict()
    theirs = _timm_loaded(cfg, path)
    assert ours.keys() == theirs.keys()
    for key in ours:
        if not key.startswith("head."):
            assert torch.equal(ours[key], theirs[key]), key
    if kind == "hybrid":
        assert any(k.startswith("patch_embed.backbone.stages.1.blocks.0.downsample") for k in ours)


@pytest.mark.parametrize("new_grid", [24, 28, 37])
def test_pos_embed_resize_equals_scipy_zoom_order_1(new_grid):
    grid = np.random.default_rng(new_grid).uniform(-1, 1, (14, 14, 8))
    zoomed = ndimage.zoom(grid, (new_grid / 14, new_grid / 14, 1), order=1)

    def ours(values: np.ndarray, mode: str) -> np.ndarray:
        out = resize_grid(torch.from_numpy(values).reshape(1, 196, 8), new_grid, mode)
        return out.reshape(new_grid, new_grid, 8).numpy()

    assert np.abs(ours(grid, "bilinear") - zoomed).max() <= 1e-12
    # float32 parameters: what the originals get, fp32(zoom(float64(weights))), to the last bit or one ulp
    as_float32 = grid.astype(np.float32)
    expected = ndimage.zoom(as_float32.astype(np.float64), (new_grid / 14, new_grid / 14, 1), order=1)
    np.testing.assert_array_max_ulp(ours(as_float32, "bilinear"), expected.astype(np.float32), maxulp=1)
    assert np.abs(ours(grid, "bicubic") - zoomed).max() > 1e-2  # timm's default is a different initialisation


def test_loading_resizes_the_grid_and_keeps_the_class_entry(tmp_path):
    arrays = vit_arrays(np.random.default_rng(3), grid=14, **TINY)
    path = write_npz(tmp_path / "g14.npz", arrays)
    model = create_vit(tiny_cfg(img_size=28 * 8, pretrained=PretrainedFile.from_path(path)), num_classes=3)
    pos = model.pos_embed.detach().double().numpy()[0]
    file_pos = arrays["Transformer/posembed_input/pos_embedding"][0].astype(np.float64)
    assert np.array_equal(pos[0], file_pos[0])
    zoomed = ndimage.zoom(file_pos[1:].reshape(14, 14, -1), (2, 2, 1), order=1).reshape(28 * 28, -1)
    np.testing.assert_array_max_ulp(pos[1:].astype(np.float32), zoomed.astype(np.float32), maxulp=1)
    assert model.pretrained_report.adapted == {"pos_embed grid": "14x14 -> 28x28 (bilinear)"}


def test_extra_prefix_tokens_start_as_copies_of_the_class_token(tiny_npz):
    path, arrays = tiny_npz
    model = create_vit(tiny_cfg(extra_tokens=1, pretrained=PretrainedFile.from_path(path)), num_classes=3)
    cls = torch.from_numpy(arrays["cls"])
    file_pos = torch.from_numpy(arrays["Transformer/posembed_input/pos_embedding"])
    assert torch.equal(model.cls_token, cls) and torch.equal(model.reg_token, cls)
    assert torch.equal(model.pos_embed[:, 0], file_pos[:, 0]) and torch.equal(model.pos_embed[:, 1], file_pos[:, 0])
    assert torch.equal(model.pos_embed[:, 2:], file_pos[:, 1:])
    assert set(model.pretrained_report.adapted) == {"pos_embed prefix", "reg_token"}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_state_dicts_load(tmp_path, suffix):
    source = build_vit(tiny_cfg(), num_classes=5)
    with torch.no_grad():  # a live head of the same shape: loading it would show
        source.head.weight.normal_()
        source.head.bias.normal_()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"vit{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    model = create_vit(tiny_cfg(pretrained=PretrainedFile.from_path(path)), num_classes=5)
    for key, value in model.state_dict().items():
        if key.startswith("head."):
            assert torch.count_nonzero(value) == 0
        else:
            assert torch.equal(value, state[key]), key
    assert model.pretrained_report.skipped == ["head.bias", "head.weight"]


def test_a_checkpoint_that_does_not_fit_names_the_key(tmp_path, tiny_npz):
    path, _ = tiny_npz
    wide = BackboneConfig(img_size=32, patch_size=16, embed_dim=16, depth=2, num_heads=4,
                          pretrained=PretrainedFile.from_path(path))
    with pytest.raises(UsageError, match=r"'patch_embed\.proj\.weight' has shape \(16, 3, 8, 8\) in the file but "
                                         r"\(16, 3, 16, 16\)"):
        check_pretrained(wide)
    deep = BackboneConfig(img_size=32, patch_size=8, embed_dim=16, depth=3, num_heads=4,
                          pretrained=PretrainedFile.from_path(path))
    with pytest.raises(UsageError, match=r"no 'blocks\.2\.norm1\.weight' \(\+11 more\)"):
        create_vit(deep, num_classes=2)
    broken = vit_arrays(np.random.default_rng(0), grid=4, **TINY)
    del broken["Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias"]
    bad = PretrainedFile.from_path(write_npz(tmp_path / "broken.npz", broken))
    with pytest.raises(UsageError, match="lacks 'Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias'"):
        check_pretrained(tiny_cfg(pretrained=bad))
    not_vit = PretrainedFile.from_path(write_npz(tmp_path / "other.npz", {"w": np.zeros(3)}))
    with pytest.raises(UsageError, match="not a Google ViT .npz"):
        check_pretrained(tiny_cfg(pretrained=not_vit))


def test_sha256_is_by_content_and_cached_by_path_size_mtime(tmp_path, tiny_npz, monkeypatch):
    path, _ = tiny_npz
    calls = []
    real = digest._hash_file
    monkeypatch.setattr(digest, "_hash_file", lambda p: calls.append(p) or real(p))
    digest._cached.cache_clear()
    first = file_sha256(path)
    assert file_sha256(path) == first and len(calls) == 1
    os.utime(path, ns=(1, 1))
    assert file_sha256(path) == first and len(calls) == 2
    copy = shutil.copy(path, tmp_path / "elsewhere.npz")
    assert PretrainedFile.from_path(copy).sha256 == first
    with open(copy, "ab") as f:
        f.write(b"\0")
    assert file_sha256(copy) != first
    assert first == __import__("hashlib").sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind, reason", [("truncated", "BadZipFile"), ("empty", "EOFError"),
                                          ("one array", "not named arrays")])
def test_broken_npz_files_are_one_line_usage_errors(tmp_path, kind, reason):
    from methods.pretrained.formats import read_npz

    path = tmp_path / "weights.npz"
    if kind == "truncated":
        path.write_bytes(b"PK\x03\x04half a download")
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    with pytest.raises(UsageError, match=f"cannot read it as .npz .*{reason}"):
        read_npz(path)
