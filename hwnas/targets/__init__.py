"""The registry of target backends.

``get_target("cpu")`` or ``get_target("mcu:stm32f746")``: the part after the
colon is the target's variant. Duplicate names are refused; an unknown name
is answered with the known ones.

Every target, hwnas's own included, is an entry point in the group
``hwnas.targets`` of an installed package, discovered on first use (hwnas's
are in its ``pyproject.toml``)::

    [project.entry-points."hwnas.targets"]
    mydsp = "hwnas_mydsp:MyDspTarget"

The entry point loads a :class:`Target` subclass (or a module that registers
its targets itself). A plugin that fails to load, or whose name is already
taken, is refused: it is left out, and :func:`plugin_errors` says why (``hwnas
targets`` prints it).
"""

from __future__ import annotations

from hwnas.errors import InvalidConfigError, UnknownTargetError
from hwnas.targets.base import Built, Target

_REGISTRY: dict[str, type[Target]] = {}
#: the entry-point group installed packages declare their targets in
ENTRY_POINT_GROUP = "hwnas.targets"
_PLUGIN_ERRORS: list[str] = []
#: the targets hwnas declares in its own pyproject.toml
BUILTIN_TARGETS = ("asic", "cpu", "fpga", "gpu", "mcu", "published")
_loaded = False


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
    """Register every target declared in the ``hwnas.targets`` entry-point group, hwnas's own included."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    _load_entry_points()
    missing = [name for name in BUILTIN_TARGETS if name not in _REGISTRY]
    if missing:
        _PLUGIN_ERRORS.append(f"hwnas's own targets ({', '.join(missing)}) are not registered: is hwnas installed "
                              "(pip install -e .), with its entry points?")


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    def own_first(ep):  # hwnas's own targets keep their names: a plugin that takes one is the one refused
        dist = getattr(ep, "dist", None)
        return (getattr(dist, "name", None) != "hwnas", ep.name)

    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=own_first):
        where = f"{ep.name} = {ep.value}" + (f" (package {ep.dist.name})" if getattr(ep, "dist", None) else "")
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not break hwnas
            _PLUGIN_ERRORS.append(f"target plugin {where} could not be loaded: {type(exc).__name__}: {exc}")
            continue
        if isinstance(obj, type):
            if not issubclass(obj, Target):
                _PLUGIN_ERRORS.append(f"target plugin {where} is not a hwnas.targets.Target subclass")
                continue
            if _REGISTRY.get(obj.name) is obj:
                continue
            try:
                register(obj)
            except InvalidConfigError as exc:
                _PLUGIN_ERRORS.append(f"target plugin {where} refused: {exc}")


def plugin_errors() -> list[str]:
    """Why installed target plugins were refused (empty when all loaded)."""
    _load_builtins()
    return list(_PLUGIN_ERRORS)


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


__all__ = ["Built", "Target", "get_target", "plugin_errors", "register", "target_class", "target_names"]
