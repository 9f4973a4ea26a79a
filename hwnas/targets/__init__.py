"""The registry of target backends.

``get_target("cpu")`` or ``get_target("mcu:stm32f746")``: the part after the
colon is the target's variant. Duplicate names are refused; an unknown name
is answered with the known ones.
"""

from __future__ import annotations

from hwnas.errors import InvalidConfigError, UnknownTargetError
from hwnas.targets.base import Built, Target

_REGISTRY: dict[str, type[Target]] = {}


def register(cls: type[Target]) -> type[Target]:
    """Add a target class under ``cls.name`` (usable as a decorator)."""
    if not isinstance(cls, type) or not issubclass(cls, Target):
        raise InvalidConfigError(f"a target must subclass hwnas.targets.Target, got {cls!r}")
    if not cls.name or ":" in cls.name:
        raise InvalidConfigError(f"target class {cls.__name__} needs a name without ':', got {cls.name!r}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise InvalidConfigError(
            f"target name {cls.name!r} is already registered by {_REGISTRY[cls.name].__module__}"
        )
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    if _REGISTRY:
        return
    from hwnas.targets.cpu import CpuTarget
    from hwnas.targets.mcu import McuTarget
    from hwnas.targets.published import PublishedTarget

    register(CpuTarget)
    register(McuTarget)
    register(PublishedTarget)


def target_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def target_class(name: str) -> type[Target]:
    """The registered class of ``name`` (no variant)."""
    _load_builtins()
    if name not in _REGISTRY:
        raise UnknownTargetError(f"unknown target {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_target(spec: str) -> Target:
    """The target instance for ``spec`` (``name`` or ``name:variant``)."""
    name, _, variant = str(spec).partition(":")
    try:
        cls = target_class(name)
    except UnknownTargetError:
        raise UnknownTargetError(f"unknown target {spec!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return cls(variant or None)


__all__ = ["Built", "Target", "get_target", "register", "target_class", "target_names"]
