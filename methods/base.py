"""The method-adapter interface every method implements.

An adapter is a small, stateless description of one published method: how to build its
`nn.Module` for a number of classes and a backbone geometry, its option flags (hyper-parameters
and switchable quirks of the released code), named variants (bundles of options), and its
recipe defaults. The runner knows nothing else about methods.

The built module's `forward(images, targets=None)` returns a dict (see `method_output`):

- ``logits``: ``[B, C]`` headline logits (what accuracy is measured on);
- ``views``: optional ``{name: [B, C]}`` further logits evaluated beside the headline
  (e.g. RAMS-Trans global/local/summed);
- ``loss`` and ``losses``: only when ``targets`` are given; the scalar to back-propagate and its
  named components (``{"ce": ..., "bce": ...}``) for logging.

Train-only behaviour (token mixing, auxiliary branches) is gated on ``self.training``; in eval
mode a method must not consume random numbers.

Every adapter also has the options of `COMMON_OPTIONS`, applied by `MethodAdapter.create` (what
the runner calls) after `build`, so a benchmark can flip them on any method the same way:
``attention`` = ``fused`` (default: SDPA in the blocks, statistics without N×N maps) or ``eager``
(explicit attention maps and full-map statistics, the originals' cost; see `methods.attention`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterable, Mapping

import torch
from torch import nn

from bench.errors import UsageError
from methods.attention import ATTENTION_MODES, set_attention_mode
from methods.backbone import BackboneConfig

COMMON_OPTIONS: Mapping[str, Any] = {"attention": "fused"}


def method_output(
    logits: torch.Tensor,
    loss: torch.Tensor | None = None,
    losses: Mapping[str, torch.Tensor] | None = None,
    views: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"logits": logits}
    if views:
        out["views"] = dict(views)
    if loss is not None:
        out["loss"] = loss
        out["losses"] = dict(losses) if losses else {"loss": loss}
    return out


class MethodAdapter:
    """Base class; subclasses set the class attributes and implement `build`."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""  # key of the method's block in dataset cards' `recipes`; default = name
    summary: ClassVar[str] = ""
    reference: ClassVar[str] = ""  # paper and released code
    in_all: ClassVar[bool] = True  # included in `--methods all`
    options: ClassVar[Mapping[str, Any]] = {}  # option -> default (released-code behaviour)
    variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {}  # variant -> option overrides
    recipe: ClassVar[Mapping[str, Any]] = {}  # method-wide recipe defaults (below dataset cards)
    # dataset card name -> option overrides: the settings the released scripts use per dataset
    # (e.g. Mix-ViT's mask weight per SoyAgeing round); above the defaults, below variants and --opt
    dataset_options: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give every adapter the shared options; an adapter may override their defaults."""
        super().__init_subclass__(**kwargs)
        cls.options = {**COMMON_OPTIONS, **cls.options}

    @property
    def recipe_family(self) -> str:
        return self.family or self.name

    def resolve_options(self, variant: str | None, overrides: Mapping[str, Any] | None = None,
                        dataset: str | None = None) -> dict[str, Any]:
        """Defaults, then the dataset's published settings (`dataset_options`), then the variant's
        bundle, then user overrides (unknown keys are an error)."""
        opts = dict(self.options)
        layers = [(f"{self.name} settings for {dataset}", self.dataset_options.get(dataset, {}) if dataset else {}),
                  (f"variant {self.name}:{variant}", self.variants[variant] if variant else {})]
        layers.append(("--opt", overrides or {}))
        for source, layer in layers:
            for key, value in layer.items():
                if key not in opts:
                    known = ", ".join(sorted(opts)) or "none"
                    raise UsageError(f"unknown option {key!r} for method {self.name!r} ({source}); options: {known}")
                default = opts[key]
                if isinstance(default, bool) and not isinstance(value, bool):
                    raise UsageError(f"option {key!r} of {self.name!r} must be true/false, got {value!r}")
                if isinstance(default, (int, float)) and not isinstance(default, bool):
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        raise UsageError(f"option {key!r} of {self.name!r} must be a number, got {value!r}")
                    value = type(default)(value) if isinstance(default, float) else value
                if isinstance(default, str) and not isinstance(value, str):  # e.g. a YAML list from --opt
                    raise UsageError(f"option {key!r} of {self.name!r} must be a word, got {value!r}")
                opts[key] = value
        check_common_options(self.name, opts)
        self.check_options(opts)
        return opts

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise UsageError for option values the method cannot run with."""

    def configure_backbone(self, backbone: BackboneConfig, options: Mapping[str, Any]) -> BackboneConfig:
        """The backbone this method runs on, given the preset's (e.g. RAMS-Trans adds a second class
        token with `dataclasses.replace(backbone, extra_tokens=1)`). Default: unchanged."""
        return backbone

    def check_backbone(self, backbone: BackboneConfig) -> None:
        """Raise UsageError if the method cannot run on this backbone geometry."""

    def build(self, num_classes: int, backbone: BackboneConfig, options: Mapping[str, Any], recipe) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement build()")

    def create(self, num_classes: int, backbone: BackboneConfig, options: Mapping[str, Any], recipe) -> nn.Module:
        """`build`, then the shared options (the attention mode); what the runner calls."""
        model = self.build(num_classes, backbone, options, recipe)
        switched = set_attention_mode(model, options["attention"])
        if not switched and options["attention"] != COMMON_OPTIONS["attention"]:
            raise UsageError(f"method {self.name!r} has no timm attention layers to run in "
                             f"{options['attention']!r} mode")
        return model

    def param_groups(self, model: nn.Module, recipe) -> Iterable[dict[str, Any]]:
        """Optimizer parameter groups; the originals use one group over all parameters."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]


def check_common_options(method: str, options: Mapping[str, Any]) -> None:
    if options["attention"] not in ATTENTION_MODES:
        raise UsageError(f"option 'attention' of {method!r} must be one of {', '.join(ATTENTION_MODES)}, "
                         f"got {options['attention']!r}")
