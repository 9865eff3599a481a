"""Reader for torchvision-style ImageFolder trees (the layout So-ViT's README asks for).

    <root>/train/<class_name>/*.jpg
    <root>/test/<class_name>/*.jpg      test split; without test/, val/ is the test split
    <root>/val/<class_name>/*.jpg       a shipped validation split when test/ exists too

Class indices are the positions of the class-folder names in the sorted union over all splits
(torchvision sorts per folder, which shifts every index when a split lacks a class). Hidden
folders (`.ipynb_checkpoints`, ...) are not classes. File discovery is torchvision's
`make_dataset` with its image extensions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from bench.data.cards import DatasetCard
from bench.data.items import DatasetSplits, Split
from bench.data.readers import register_reader
from bench.errors import DatasetError

LAYOUT = "train/<class>/<image> and test/<class>/ or val/<class>/"


def looks_like_imagefolder(path: Path) -> bool:
    if (path / "dataset_dict.json").is_file():  # a datasets save_to_disk folder also has train/ and test/
        return False
    return (path / "train").is_dir() and ((path / "test").is_dir() or (path / "val").is_dir())


def class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_dirs(root: Path, options: Mapping[str, Any]) -> dict[str, Path]:
    """Which folder is train, test and (optionally) val, after the options."""
    train = options["train_dir"] or "train"
    test = options["test_dir"] or ("test" if (root / "test").is_dir() else "val")
    val = options["val_dir"] or ("val" if test != "val" and (root / "val").is_dir() else "")
    dirs = {"train": root / train, "test": root / test}
    if val:
        dirs["val"] = root / val
    for name, path in dirs.items():
        if not path.is_dir():
            raise DatasetError(f"missing {path} ({name} split); expected {LAYOUT}")
    return dirs


@register_reader("imagefolder", title="ImageFolder", looks_like=looks_like_imagefolder, layout=LAYOUT,
                 options={"train_dir": "", "test_dir": "", "val_dir": ""})
def read_imagefolder(card: DatasetCard, root: Path, options: Mapping[str, Any]) -> DatasetSplits:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset  # imports torch: only when used

    dirs = split_dirs(root, options)
    names = sorted({name for path in dirs.values() for name in class_folders(path)})
    if len(names) != card.num_classes:
        raise DatasetError(f"{root} has {len(names)} class folders across {', '.join(dirs)} but the card says "
                           f"{card.num_classes} classes (wrong class count)")
    index = {name: i for i, name in enumerate(names)}
    out = DatasetSplits(name=card.name, root=root, num_classes=card.num_classes, format="imagefolder",
                        class_names=names)
    for split, path in dirs.items():
        present = {name: index[name] for name in class_folders(path)}
        found = make_dataset(path, present, extensions=IMG_EXTENSIONS, allow_empty=True)
        if not found:
            raise DatasetError(f"{path} holds no images with extensions {', '.join(IMG_EXTENSIONS)} (empty split)")
        items = [(Path(file).relative_to(path).as_posix(), label) for file, label in found]
        out.splits[split] = Split(split, path, items, str(path))
    return out
