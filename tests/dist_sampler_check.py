"""Run under `torchrun --nproc_per_node 2` by test_data_distributed.py (not a test module itself).

Builds fgbench's loaders over a split whose labels are the item indices, prepares them with
accelerate exactly as the runner does, and has rank 0 write what each rank saw to argv[1]:
the train indices per rank per epoch and the gathered evaluation labels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from bench.data.items import Split
from bench.loaders import BatchStream, build_loaders
from bench.recipe import Recipe

N_TRAIN, N_TEST, BATCH, EPOCHS = 22, 9, 4, 3


def indexed(name: str, n: int) -> Split:
    return Split(name, Path("."), [(f"{i}.png", i) for i in range(n)], name)


def main(out: Path) -> None:
    acc = Accelerator(cpu=True)
    recipe = Recipe(img_size=4, resize_size=4, batch_size=BATCH, eval_batch_size=2)
    splits = {"train": indexed("train", N_TRAIN), "test": indexed("test", N_TEST)}
    resized = {name: np.zeros((len(s), 4, 4, 3), np.uint8) for name, s in splits.items()}  # stands in for the cache
    loaders = build_loaders(splits, recipe, seed=5, workers=0, device=acc.device, resized=resized)
    train, test = acc.prepare(loaders["train"], loaders["test"])
    per_epoch = N_TRAIN // (BATCH * acc.num_processes)
    batches = BatchStream(train, acc)
    seen = [[i for _ in range(per_epoch) for i in next(batches)[1].tolist()] for _ in range(EPOCHS)]
    evaluated = []
    for _, labels in test:
        evaluated += acc.gather_for_metrics(labels).tolist()
    ranks = gather_object([{"rank": acc.process_index, "train": seen}])
    if acc.is_main_process:
        out.write_text(json.dumps({"world": acc.num_processes, "ranks": ranks, "evaluated": evaluated,
                                   "n_train": N_TRAIN, "n_test": N_TEST}))
    acc.wait_for_everyone()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
