"""Node attributes: defaults from the ONNX schema, filled in once at load time, and typed accessors.

Rules, executors and passes read attributes only through the accessors, so no ONNX default is
ever typed by hand: ``graph.fill_default_attributes`` copies each schema's defaults (as onnx-ir's
default-attributes pass does), in the exact values the runtime uses (float32 constants stay as
float32 rounds them). Attributes the schema leaves without a default (Conv's ``strides``,
``pads``…) stay absent; the op family that owns them knows their documented fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import numpy as np
import onnx
from onnx import defs, helper

from ..errors import AttributeValueError

_MISSING: Any = object()


def decode_attribute(attribute: onnx.AttributeProto) -> Any:
    """An AttributeProto as plain Python: str for strings, numpy arrays for tensors."""
    value = helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8", errors="replace") for v in value]
    return value


@cache
def schema_defaults(op_type: str, domain: str, opset: int) -> Mapping[str, Any]:
    """The attributes with a default in the schema of ``op_type`` at ``opset`` (empty when unknown)."""
    try:
        schema = defs.get_schema(op_type, opset, domain)
    except defs.SchemaError:
        return {}
    defaults = {}
    for name, attribute in schema.attributes.items():
        if attribute.default_value.type != onnx.AttributeProto.UNDEFINED:
            defaults[name] = decode_attribute(attribute.default_value)
    return defaults


@cache
def schema_since_version(op_type: str, domain: str, opset: int) -> int | None:
    """The opset that introduced the version of ``op_type`` in force at ``opset`` (None: no schema)."""
    try:
        return int(defs.get_schema(op_type, opset, domain).since_version)
    except defs.SchemaError:
        return None


class AttributeReader:
    """Typed attribute accessors, mixed into Node (which has ``attrs``, ``op_type`` and ``name``).

    Each raises AttributeValueError (a ValueError) naming the node when the attribute is missing
    and no default is given, or has the wrong type.
    """

    attrs: dict[str, Any]
    op_type: str
    name: str

    def has_attr(self, key: str) -> bool:
        return key in self.attrs

    def attr(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.attrs:
            return self.attrs[key]
        if default is _MISSING:
            raise AttributeValueError(f"{self.op_type} '{self.name}' has no attribute '{key}', which it needs")
        return default

    def attr_int(self, key: str, default: Any = _MISSING) -> int:
        value = self.attr(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise self._bad(key, "an int", value)
        return int(value)

    def attr_float(self, key: str, default: Any = _MISSING) -> float:
        value = self.attr(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self._bad(key, "a float", value)
        return float(value)

    def attr_str(self, key: str, default: Any = _MISSING) -> str:
        value = self.attr(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise self._bad(key, "a string", value)
        return value

    def attr_ints(self, key: str, default: Any = _MISSING) -> tuple[int, ...]:
        value = self.attr(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
            value = value.ravel().tolist()
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
        ):
            raise self._bad(key, "a list of ints", value)
        return tuple(int(v) for v in value)

    def attr_floats(self, key: str, default: Any = _MISSING) -> tuple[float, ...]:
        value = self.attr(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, np.ndarray):
            value = value.ravel().tolist()
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, float, np.integer, np.floating)) for v in value
        ):
            raise self._bad(key, "a list of floats", value)
        return tuple(float(v) for v in value)

    def attr_tensor(self, key: str, default: Any = _MISSING) -> np.ndarray:
        value = self.attr(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, np.ndarray):
            raise self._bad(key, "a tensor", value)
        return value

    def _bad(self, key: str, expected: str, value: Any) -> AttributeValueError:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return AttributeValueError(f"attribute '{key}' of {self.op_type} '{self.name}' must be {expected}, not {shown}")
