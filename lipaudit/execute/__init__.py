"""Run the IR with torch ops: the function lipaudit analyses, made executable.

Used for the faithfulness check (the IR against the model's own runtime) and for the empirical
lower bound (Jacobian norms). Every op with a Lipschitz rule can run here, with ONNX semantics:
``auto_pad``, asymmetric pads, ``count_include_pad``, ``ceil_mode``, and the opset-dependent forms
where an attribute became an input (Pad, Slice, Split, Reduce*, Squeeze, Unsqueeze, Clip).

Float values are computed in one dtype (float32 to compare with a runtime, float64 for lower
bounds); integer and boolean values keep theirs. Everything is differentiable where the op is.

One small function per op, registered with ``core.op``, one module per family (as in
``lipaudit.analyzers``). Importing this package fills the registry; registering an op twice raises
``core.DuplicateOpError``.
"""

from . import (activation, arithmetic, attention, linear, normalization, pooling, reduce, resize,  # noqa: F401
               structural)
from .core import can_execute, supported_ops
from .executor import Executor, execute

__all__ = ["Executor", "can_execute", "execute", "supported_ops"]
