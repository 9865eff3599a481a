"""Distribution strategies of a cell: DDP (accelerate) or DeepSpeed ZeRO stage 1/2/3.

A cell's *process configuration* (strategy, precision, world size and, for DeepSpeed, the
engine config derived from its recipe) decides which cells can share a process group: accelerate
keeps one Accelerator per process, and DeepSpeed fills its config from the first model it wraps.
Cells with the same process configuration run one after another in one process group; any other
cell gets its own worker (see `bench.pool`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from bench.errors import UsageError

ZERO_STAGES = {"zero1": 1, "zero2": 2, "zero3": 3}
STRATEGIES = ("ddp", *ZERO_STAGES, "deepspeed")  # "deepspeed": a user JSON (--deepspeed-config)
RESERVED_DS_KEYS = ("optimizer", "scheduler")


def parse_strategies(spec: str) -> list[str]:
    out = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item not in STRATEGIES or item == "deepspeed":
            raise UsageError(f"unknown strategy {item!r}; expected one of: ddp, zero1, zero2, zero3 "
                             f"(or --deepspeed-config FILE)")
        if item not in out:
            out.append(item)
    if not out:
        raise UsageError("--strategy is empty; expected ddp, zero1, zero2 or zero3")
    return out


def load_deepspeed_json(path: Path) -> dict[str, Any]:
    """A user's DeepSpeed config; fgbench owns the optimizer and schedule (they come from the recipe)."""
    try:
        config = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"--deepspeed-config {path} does not exist; expected a DeepSpeed JSON file") from None
    except OSError as exc:
        raise UsageError(f"--deepspeed-config {path} cannot be read ({exc.strerror}); expected a DeepSpeed JSON file") from None
    except ValueError as exc:
        raise UsageError(f"--deepspeed-config {path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise UsageError(f"--deepspeed-config {path} must hold a JSON object")
    clash = [k for k in RESERVED_DS_KEYS if k in config]
    if clash:
        raise UsageError(f"--deepspeed-config {path}: remove {clash}; fgbench builds the optimizer and lr schedule "
                         f"from the recipe so every strategy trains the same way")
    return config


def deepspeed_config(strategy: str, strategy_config: dict[str, Any], recipe, precision: str, world_size: int) -> dict:
    """The DeepSpeed engine config of a cell: batch, accumulation and clipping from its recipe."""
    config = json.loads(json.dumps(strategy_config))  # deep copy; never mutate the cell's
    zero = config.setdefault("zero_optimization", {})
    if strategy in ZERO_STAGES:
        zero["stage"] = ZERO_STAGES[strategy]
    config.update(
        train_micro_batch_size_per_gpu=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum,
        train_batch_size=recipe.batch_size * recipe.grad_accum * world_size,
        gradient_clipping=recipe.clip_grad,
        steps_per_print=config.get("steps_per_print", 10**9),
    )
    config["bf16"] = {**config.get("bf16", {}), "enabled": precision == "bf16"}
    config["fp16"] = {**config.get("fp16", {}), "enabled": precision == "fp16"}
    return config


def is_deepspeed(strategy: str) -> bool:
    return strategy != "ddp"


def process_key(cell) -> str:
    """Cells with equal keys can share one process group (and one Accelerator)."""
    parts = {"strategy": cell.strategy, "precision": cell.precision, "world_size": cell.world_size}
    if is_deepspeed(cell.strategy):
        parts["deepspeed"] = deepspeed_config(cell.strategy, cell.strategy_config, cell.recipe, cell.precision,
                                              cell.world_size)
    return json.dumps(parts, sort_keys=True)


def _prepare_single_process_deepspeed() -> None:
    """DeepSpeed wants a torch.distributed environment even for one process; set torchrun's variables,
    and on a CPU skip the JIT build of its shared-memory all-reduce kernel (about 90 s of compiling
    for a kernel a one-process run never calls)."""
    for key, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1").items():
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        from bench.ports import free_port

        os.environ["MASTER_PORT"] = str(free_port())
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        try:
            import deepspeed.ops

            if int(os.environ.get("WORLD_SIZE", "1")) == 1:
                deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        except ImportError:
            pass


def make_accelerator(strategy: str, precision: str | None, ds_config: dict | None = None,
                     log_with: list[str] | None = None, project_dir: Path | None = None):
    """The process's Accelerator: CPU ranks over gloo without CUDA, DeepSpeed for zero* strategies;
    `log_with` trackers (see `bench.trackers`) keep their files under `project_dir`."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    tracking = {}
    if log_with:
        tracking = dict(log_with=list(log_with), project_config=ProjectConfiguration(
            project_dir=str(project_dir), logging_dir=str(Path(project_dir) / "tb")))
    try:
        if not is_deepspeed(strategy):
            return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision, **tracking)
        try:
            import deepspeed  # noqa: F401
            import transformers  # noqa: F401  (accelerate's DeepSpeed path needs it)
        except ImportError:
            raise UsageError(f"--strategy {strategy} needs DeepSpeed: pip install 'fgbench[deepspeed]'") from None
        from accelerate.utils import DeepSpeedPlugin

        _prepare_single_process_deepspeed()
        # Accelerator(cpu=True) would silently drop the plugin; DeepSpeed picks the CPU by itself
        return Accelerator(mixed_precision=precision, deepspeed_plugin=DeepSpeedPlugin(hf_ds_config=ds_config),
                           **tracking)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"cannot set up {strategy} with precision {precision}: {' '.join(str(exc).split())}") from None


def input_dtype(accelerator) -> torch.dtype | None:
    """DeepSpeed's bf16/fp16 engines hold low-precision weights and take inputs of that dtype."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)
    return None
