"""lipaudit: certified upper bounds on the Lipschitz constant of trained networks.

``lipaudit.audit(model, ...) -> Report`` audits a model file, an ``onnx.ModelProto`` or a
``torch.nn.Module`` (see ``lipaudit.api``); ``lipaudit.testing.assert_lipschitz`` is its pytest
helper. Both load on first use, so that ``import lipaudit`` (and ``lipaudit --version``) stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .api import audit
    from .report import Report


def __getattr__(name: str) -> Any:
    if name == "audit":
        from .api import audit

        return audit
    if name == "Report":
        from .report import Report

        return Report
    raise AttributeError(f"module 'lipaudit' has no attribute {name!r}")


__all__ = ["Report", "__version__", "audit"]
