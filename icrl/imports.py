"""Classes named in YAML by their import path (``my_ext.SigmoidAttention``)."""

from __future__ import annotations

import importlib


def import_subclass(setting: str, path: str, base: type) -> type | None:
    """The class at the dotted ``path`` if it subclasses ``base``, else None.

    An import that fails raises ``ValueError`` naming the setting, so the CLI reports it before training.

    >>> import_subclass("attention", "icrl.recall.attention.ReLUAttention", object).__name__
    'ReLUAttention'
    >>> import_subclass("attention", "collections.OrderedDict", int) is None
    True
    """
    if "." not in path:
        return None
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{setting}={path!r} could not be imported: {err}") from err
    return cls if isinstance(cls, type) and issubclass(cls, base) else None
