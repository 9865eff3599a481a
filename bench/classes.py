"""Per-class accuracy and the most frequent confusions of one evaluation.

A record keeps them for the last evaluation only: per-class top-1 shows which classes a method
fixes, and for ultra-fine-grained sets with hundreds of classes the top (true -> predicted) pairs
say more than a confusion matrix nobody can read. The tally keeps the gathered top-1 predictions
and targets (O(test split), never O(classes²)) and counts them once at the end.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

TOP_CONFUSIONS = 20  # (true, predicted) pairs kept per record


class ClassTally:
    """Accumulates gathered top-1 predictions and targets of one evaluation pass."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self._predicted: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def update(self, predicted: torch.Tensor, targets: torch.Tensor) -> None:
        self._predicted.append(predicted.detach().reshape(-1))
        self._targets.append(targets.detach().reshape(-1))

    def summary(self, class_names: Sequence[str] | None = None, top: int = TOP_CONFUSIONS) -> dict[str, Any]:
        """``{"n", "top1", "confusions"[, "names"]}``: test samples and top-1 % per class (None for a
        class without test samples), and the `top` most frequent mistakes, most frequent first (ties:
        by true class, then predicted class)."""
        return class_summary(torch.cat(self._predicted).cpu() if self._predicted else torch.zeros(0, dtype=torch.long),
                             torch.cat(self._targets).cpu() if self._targets else torch.zeros(0, dtype=torch.long),
                             self.num_classes, class_names, top)


def class_summary(predicted: torch.Tensor, targets: torch.Tensor, num_classes: int,
                  class_names: Sequence[str] | None = None, top: int = TOP_CONFUSIONS) -> dict[str, Any]:
    predicted, targets = predicted.long(), targets.long()
    counts = torch.bincount(targets, minlength=num_classes)
    hits = torch.bincount(targets[predicted == targets], minlength=num_classes)
    wrong = predicted != targets
    pairs, frequency = torch.unique(targets[wrong] * num_classes + predicted[wrong], return_counts=True)
    order = sorted(range(len(pairs)), key=lambda i: (-int(frequency[i]), int(pairs[i])))[:top]
    out: dict[str, Any] = {
        "n": counts.tolist(),
        "top1": [100.0 * h / n if n else None for h, n in zip(hits.tolist(), counts.tolist())],
        "confusions": [{"true": int(pairs[i]) // num_classes, "pred": int(pairs[i]) % num_classes,
                        "count": int(frequency[i])} for i in order],
    }
    if class_names is not None and len(class_names) == num_classes:
        out["names"] = [str(name) for name in class_names]
    return out
