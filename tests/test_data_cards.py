"""Dataset cards: every listed dataset has one, with valid recipes per method family; transforms follow them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from bench.data import expand_datasets, get_card, load_cards
from bench.data import transforms  # (not `import test_transform`: pytest would collect it as a test)
from bench.recipe import Recipe, resolve_recipe

FAMILIES = ("vit", "transfg", "ffvt", "mixvit", "sovit", "ramstrans")
CLASSES = {"cotton": 80, "soyloc": 200, "soygene": 1110, "soyglobal": 1938, "soyageing_r1": 198,
           "soyageing_r3": 198, "soyageing_r4": 198, "soyageing_r5": 198, "soyageing_r6": 198, "cub": 200, "dogs": 120, "cars": 196, "nabirds": 555, "inat2017": 5089,
           "demo": 12}


def test_every_dataset_has_a_card_with_its_class_count():
    cards = load_cards()
    assert {name: cards[name].num_classes for name in CLASSES} == CLASSES
    assert "soyageing_r2" not in cards
    assert expand_datasets("soyageing") == ["soyageing_r1", "soyageing_r3", "soyageing_r4", "soyageing_r5",
                                            "soyageing_r6"]


@pytest.mark.parametrize("alias, name", [("soybean200", "soyloc"), ("COTTON", "cotton"), ("cotton80", "cotton"),
                                         ("soybean_gene", "soygene"), ("soybean2000", "soyglobal"),
                                         ("CUB_200_2011", "cub"), ("SoyAgeing-R1/R1", "soyageing_r1"),
                                         ("soybean_aging_R5", "soyageing_r5"), ("r3", "soyageing_r3")])
def test_aliases(alias, name):
    assert get_card(alias).name == name


def test_aliases_are_unique_across_cards():
    seen = {}
    for card in load_cards().values():
        for alias in (card.name, *card.aliases):
            assert seen.setdefault(alias.lower(), card.name) == card.name, alias


@pytest.mark.parametrize("name", [n for n in CLASSES if n != "demo"])
def test_every_card_has_a_valid_recipe_per_method_family(name):
    card = get_card(name)
    assert set(FAMILIES) <= set(card.recipes), sorted(card.recipes)
    for family in FAMILIES:
        recipe, sources = resolve_recipe(card.recipe_layers(family))
        assert recipe.resize_size > recipe.img_size
        assert sources["steps"].startswith(f"datasets/{name}.yaml recipes.")


@pytest.mark.parametrize("name, family, expected", [
    ("cotton", "ffvt", dict(img_size=384, resize_size=500, steps=2000, eval_every=16, lr=0.02, batch_size=8)),
    ("cotton", "mixvit", dict(img_size=448, resize_size=600, steps=2400, lr=5e-3, schedule="linear", batch_size=16)),
    ("soyloc", "ffvt", dict(img_size=384, resize_size=500, steps=4750, eval_every=50)),
    ("soyloc", "mixvit", dict(steps=9500, eval_every=38, weight_decay=5e-5)),
    ("cub", "ffvt", dict(img_size=448, resize_size=600, steps=10000, color_jitter=0.4)),
    ("cub", "transfg", dict(lr=0.03, batch_size=16, eval_every=100, color_jitter=0.0)),
    ("cub", "ramstrans", dict(lr=0.03, batch_size=16, color_jitter=0.0)),
    ("soyageing_r5", "mixvit", dict(batch_size=16, steps=15500, eval_every=155)),
    ("soyglobal", "mixvit", dict(lr=0.02, steps=72600, eval_every=726)),
    ("dogs", "ffvt", dict(img_size=448, resize_size=600, batch_size=4, lr=3e-3, steps=30000, schedule="linear",
                          eval_every=300, color_jitter=0.4)),
    ("dogs", "transfg", dict(lr=3e-3, batch_size=16, schedule="cosine", color_jitter=0.0)),
    ("cars", "transfg", dict(img_size=448, resize_size=600, lr=0.03, batch_size=16, steps=10000)),
    ("nabirds", "ramstrans", dict(lr=0.03, batch_size=16, eval_every=1495)),
    ("inat2017", "transfg", dict(img_size=304, resize_size=400, lr=0.01)),
    ("inat2017", "ramstrans", dict(img_size=304, resize_size=400, lr=0.03)),
])
def test_published_recipes(name, family, expected):
    recipe, _ = resolve_recipe(get_card(name).recipe_layers(family))
    assert {k: getattr(recipe, k) for k in expected} == expected


def reference_test_tensor(image: Image.Image, resize: int, crop: int) -> torch.Tensor:
    """Resize((R, R)) bilinear with antialias -> centre crop -> [0, 1] -> ImageNet normalisation, in float64."""
    resized = np.asarray(image.resize((resize, resize), Image.BILINEAR), dtype=np.float64) / 255.0
    top = int(round((resize - crop) / 2.0))
    patch = resized[top:top + crop, top:top + crop]
    out = (patch - np.array(transforms.IMAGENET_MEAN)) / np.array(transforms.IMAGENET_STD)
    return torch.from_numpy(out.transpose(2, 0, 1))


def test_test_transform_matches_the_reference_pipeline():
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((53, 71), (90, 41))]
    recipe = Recipe(img_size=32, resize_size=41)
    batch = torch.stack([transforms.test_transform(recipe)(img) for img in images])
    assert batch.dtype == torch.uint8 and batch.shape == (2, 3, 32, 32)
    model_input = transforms.normalize(batch)  # what the runner does on the device, for the whole batch
    for got, img in zip(model_input, images):
        assert torch.equal(got, transforms.reference_test_input(img, recipe))  # the per-image float pipeline
        assert torch.allclose(got.double(), reference_test_tensor(img, 41, 32), atol=1e-5)


def test_train_transform_follows_the_recipe():
    def ops(recipe, resized=False):
        return [type(t) for t in transforms.train_transform(recipe, resized=resized).transforms]

    plain = Recipe(img_size=32, resize_size=40)
    jitter = Recipe(img_size=32, resize_size=40, color_jitter=0.4)
    assert ops(plain) == [v2.Resize, v2.RandomCrop, v2.RandomHorizontalFlip, v2.ToImage]
    assert ops(jitter) == [v2.Resize, v2.RandomCrop, v2.ColorJitter, v2.RandomHorizontalFlip, v2.ToImage]
    assert ops(plain, resized=True) == [v2.RandomCrop, v2.RandomHorizontalFlip, v2.ToImage]  # the cache did the Resize
    assert ops(jitter, resized=True) == [v2.RandomCrop, v2.ToPILImage, v2.ColorJitter, v2.RandomHorizontalFlip,
                                         v2.ToImage]  # PIL's jitter arithmetic, as the originals
    out = transforms.train_transform(plain)(Image.new("RGB", (90, 60)))
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
