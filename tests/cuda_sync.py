"""The no-host-sync check shared by the methods' CUDA tests."""

from __future__ import annotations

import pytest
import torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (host-device syncs exist only there)")


def assert_second_step_does_not_sync(step) -> None:
    """Run `step` once to warm up (kernel selection, pinned-memory pools, cached priors), then again
    with CUDA's sync debug mode raising on any host-device synchronisation."""
    step()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
