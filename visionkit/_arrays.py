"""A pydantic v2 field type for numpy arrays: validated dtype and shape, read-only, JSON round-trip."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema


def freeze(arr: np.ndarray) -> np.ndarray:
    """Return ``arr`` read-only, copying first when the caller could still write to it."""
    if arr.flags.writeable or (arr.base is not None and getattr(arr.base, "flags", None) is not None):
        arr = np.array(arr, copy=True)
    arr.setflags(write=False)
    return arr


class ArraySpec:
    """Annotation metadata: ``Annotated[np.ndarray, ArraySpec(np.float32, (None, 4))]``.

    ``dtype=None`` accepts any dtype (and serialises it losslessly); ``None`` in ``shape`` is a free
    dimension. Values are cast to ``dtype`` when that is safe (ints to floats, any float width to
    float32), rejected otherwise (floats to ints, numbers to bool).
    """

    def __init__(self, dtype: Any = None, shape: Sequence[int | None] | None = None) -> None:
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self.shape = tuple(shape) if shape is not None else None

    # -- validation ---------------------------------------------------------------------------
    def validate(self, value: Any) -> np.ndarray:
        if isinstance(value, dict):
            value = self._from_json_dict(value)
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged nested lists
            raise ValueError(f"expected an array, got {type(value).__name__}: {exc}") from None
        if self.shape is not None and arr.size == 0 and arr.ndim != len(self.shape):
            # `[]` from JSON or an empty list: give it the declared trailing dimensions.
            trailing = [d if d is not None else 0 for d in self.shape[1:]]
            arr = arr.reshape(0, *trailing)
        if self.dtype is not None and arr.dtype != self.dtype:
            arr = self._cast(arr)
        if self.shape is not None and not self._shape_ok(arr.shape):
            want_s = "(" + ", ".join("n" if d is None else str(d) for d in self.shape) + ")"
            raise ValueError(f"must have shape {want_s}, but got shape {arr.shape}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError("must be finite, but contains NaN or inf")
        return freeze(arr)

    def _shape_ok(self, shape: tuple[int, ...]) -> bool:
        assert self.shape is not None
        return len(shape) == len(self.shape) and all(
            want is None or got == want for want, got in zip(self.shape, shape, strict=True)
        )

    def _cast(self, arr: np.ndarray) -> np.ndarray:
        assert self.dtype is not None
        src, dst = arr.dtype.kind, self.dtype.kind
        ok = (
            (dst == "f" and src in "fiub")
            or (dst in "iu" and src in "iu")
            or (dst == "b" and src == "b")
            or (dst in "iu" and src == "b")
        )
        if arr.size == 0 or ok:
            return arr.astype(self.dtype)
        raise ValueError(f"must have dtype {self.dtype}, but got dtype {arr.dtype}")

    # -- serialisation --------------------------------------------------------------------------
    def serialize(self, arr: np.ndarray) -> Any:
        if arr.dtype == np.bool_ and arr.ndim >= 2:
            # Masks: bit-packed and base64'd, 8x smaller than a list of bools and lossless.
            packed = np.packbits(arr.reshape(-1))
            return {"shape": list(arr.shape), "packbits": base64.b64encode(packed.tobytes()).decode("ascii")}
        if self.dtype is None or (arr.size == 0 and self._loses_shape(arr.shape)):
            # An empty list cannot carry free trailing dimensions (e.g. logits (0, 256, 256)): keep the shape.
            return {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.reshape(-1).tolist()}
        return arr.tolist()

    def _loses_shape(self, shape: tuple[int, ...]) -> bool:
        """True when ``[]`` would validate back to a different shape than ``shape``."""
        if self.shape is None:
            return True
        return any(want is None and got != 0 for want, got in zip(self.shape[1:], shape[1:], strict=False))

    @staticmethod
    def _from_json_dict(value: dict[str, Any]) -> np.ndarray:
        # This is where untrusted JSON becomes memory: check every size before allocating anything.
        raw_shape = value.get("shape", ())
        if not isinstance(raw_shape, (list, tuple)) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw_shape
        ):
            raise ValueError(f"'shape' must be a list of non-negative integers, but got {raw_shape!r}")
        shape = tuple(raw_shape)
        count = math.prod(shape)
        if "packbits" in value:
            text = value["packbits"]
            if not isinstance(text, str):
                raise ValueError(f"'packbits' must be base64 text, but got {type(text).__name__}")
            try:
                packed = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"'packbits' is not valid base64 ({exc})") from None
            want = (count + 7) // 8
            if len(packed) != want:
                raise ValueError(
                    f"'packbits' must hold {want} bytes for shape {list(shape)}, but holds {len(packed)} "
                    "(truncated or corrupt mask data)"
                )
            bits = np.frombuffer(packed, dtype=np.uint8)
            return np.unpackbits(bits, count=count).astype(bool).reshape(shape)
        if "data" in value:
            data = value["data"]
            if not isinstance(data, list):
                raise ValueError(f"'data' must be a flat list of numbers, but got {type(data).__name__}")
            if len(data) != count:
                raise ValueError(
                    f"'data' must hold {count} values for shape {list(shape)}, but holds {len(data)}"
                )
            try:
                dtype = np.dtype(value.get("dtype", "float64"))
            except TypeError as exc:
                raise ValueError(f"'dtype' {value.get('dtype')!r} is not a numpy dtype ({exc})") from None
            if dtype.kind not in "biufU":  # numbers and text (e.g. a per-item label); never objects
                raise ValueError(
                    f"'dtype' must be a boolean, integer, float or unicode dtype, but got {dtype.str!r}"
                )
            try:
                return np.asarray(data, dtype=dtype).reshape(shape)
            except (TypeError, ValueError, OverflowError) as exc:
                raise ValueError(f"'data' does not fit dtype {dtype.str!r} ({exc})") from None
        raise ValueError("an array given as a dict needs 'shape' and either 'packbits' or 'data'")

    # -- pydantic hooks -------------------------------------------------------------------------
    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self.validate,
            serialization=core_schema.plain_serializer_function_ser_schema(self.serialize, when_used="json"),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        desc = f"array dtype={self.dtype or 'any'} shape={self.shape or 'any'}"
        return {"description": desc, "anyOf": [{"type": "array"}, {"type": "object"}]}


def arrays_equal(a: Any, b: Any) -> bool:
    """Structural equality that compares numpy arrays by value (dtype-agnostic, shape-sensitive)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(arrays_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(arrays_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
