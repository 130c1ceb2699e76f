"""A pytest helper: fail a test when a model's certified Lipschitz bound is over a limit.

```python
from lipaudit.testing import assert_lipschitz

def test_critic_is_1_lipschitz():
    assert_lipschitz(critic, example_inputs=torch.randn(1, 3, 32, 32), max_lipschitz=1.0, rtol=1e-5)
```
"""

from __future__ import annotations

from typing import Any

from .api import audit
from .render.verdict import verdict
from .report import Report


def assert_lipschitz(
    model: Any,
    *,
    example_inputs: Any = None,
    max_lipschitz: float,
    allow_incomplete: bool = False,
    **options: Any,
) -> Report:
    """Audit ``model`` (a path, an ``onnx.ModelProto`` or an ``nn.Module`` with ``example_inputs``)
    and raise AssertionError unless its certified bound is within ``max_lipschitz`` (·(1 + ``rtol``))
    and every other gate passes. ``options``: any keyword of ``lipaudit.audit``. Returns the report.

    A bound that is not finite (an op without a rule, or one that is not Lipschitz) fails too,
    unless ``allow_incomplete``; so does a figure that is only an estimate (``method="power"``)."""
    report = audit(model, example_inputs=example_inputs, max_lipschitz=max_lipschitz, **options)
    status, line = verdict(report)
    network = report.network
    if not report.bounded_and_complete and not allow_incomplete:
        blockers = [f"{b.op} at '{b.node}': {b.reason}" for b in network.unsupported + network.unbounded]
        raise AssertionError(f"lipaudit: {line}" + "".join(f"\n  {text}" for text in blockers))
    if report.threshold.passed is False:
        raise AssertionError(f"lipaudit: {line}")
    if network.upper_bound is not None and not network.certified:
        raise AssertionError(f"lipaudit: the bound {network.upper_bound} is an estimate, not certified")
    return report


__all__ = ["assert_lipschitz"]
