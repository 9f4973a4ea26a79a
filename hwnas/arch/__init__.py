"""Architecture search spaces: genomes of ints <-> torch modules, and their registry.

``get_space("mbv2", widths=(0.5, 1.0))`` returns a space; ``space_names()`` lists them.
"""

from __future__ import annotations

from hwnas.arch.base import ArchSpace
from hwnas.arch.fbnet import FBNetSpace
from hwnas.arch.mbv2 import MBV2Space
from hwnas.arch.nb201 import NB201Space
from hwnas.errors import InvalidConfigError, UnknownSpaceError
from hwnas.util import keyword_options

__all__ = ["ArchSpace", "FBNetSpace", "MBV2Space", "NB201Space", "get_space", "register_space", "space_names"]

_REGISTRY: dict[str, type[ArchSpace]] = {}


def register_space(cls: type[ArchSpace]) -> type[ArchSpace]:
    """Register a space class under its ``name``; a name is registered once."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name:
        raise InvalidConfigError(f"space class {cls.__name__} has no name")
    if name in _REGISTRY:
        raise InvalidConfigError(f"space {name!r} is already registered ({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls
    return cls


for _cls in (FBNetSpace, MBV2Space, NB201Space):
    register_space(_cls)


def space_names() -> list[str]:
    """Names of the registered spaces, sorted."""
    return sorted(_REGISTRY)


def get_space(name: str, **options: object) -> ArchSpace:
    """The space registered as ``name``, built with ``options``.

    Raises :class:`UnknownSpaceError` for a name that is not registered and
    :class:`InvalidConfigError` for an option the space does not take or a
    value it refuses.
    """
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise UnknownSpaceError(f"unknown space {name!r}; known: {', '.join(space_names())}")
    accepted = keyword_options(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InvalidConfigError(
            f"space {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"options: {', '.join(accepted) or '(none)'}"
        )
    return cls(**options)
