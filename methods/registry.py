"""Registry of method adapters: `@register_method` on the class, `get_method(name)` to use it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.errors import UsageError

if TYPE_CHECKING:
    from methods.base import MethodAdapter

_REGISTRY: dict[str, type["MethodAdapter"]] = {}


def register_method(cls: type["MethodAdapter"]) -> type["MethodAdapter"]:
    name = cls.name
    if not name or not name.replace("_", "").isalnum() or name != name.lower():
        raise ValueError(f"method name must be lower-case [a-z0-9_], got {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"method {name!r} registered twice ({_REGISTRY[name].__module__} and {cls.__module__})")
    _REGISTRY[name] = cls
    return cls


def method_names(only_in_all: bool = False) -> list[str]:
    """Registered method names in registration order (`only_in_all`: those `--methods all` runs)."""
    return [n for n, c in _REGISTRY.items() if c.in_all or not only_in_all]


def get_method(name: str) -> "MethodAdapter":
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise UsageError(f"unknown method {name!r}; expected one of: {', '.join(method_names())}") from None


def parse_method_spec(spec: str) -> tuple["MethodAdapter", str | None]:
    """`name` or `name:variant` -> (adapter, variant or None)."""
    name, _, variant = spec.strip().partition(":")
    adapter = get_method(name)
    if variant and variant not in adapter.variants:
        choices = ", ".join(f"{name}:{v}" for v in adapter.variants) or f"none (use plain {name!r})"
        raise UsageError(f"unknown variant {spec!r}; expected one of: {choices}")
    return adapter, (variant or None)
