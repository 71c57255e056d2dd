"""A pydantic v2 field type for numpy arrays: validated dtype and shape, read-only, JSON round-trip."""

from __future__ import annotations

import base64
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
        if self.dtype is None:
            return {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.reshape(-1).tolist()}
        return arr.tolist()

    @staticmethod
    def _from_json_dict(value: dict[str, Any]) -> np.ndarray:
        shape = tuple(int(s) for s in value.get("shape", ()))
        if "packbits" in value:
            bits = np.frombuffer(base64.b64decode(value["packbits"]), dtype=np.uint8)
            count = int(np.prod(shape)) if shape else 0
            return np.unpackbits(bits, count=count).astype(bool).reshape(shape)
        if "data" in value:
            return np.asarray(value["data"], dtype=np.dtype(value.get("dtype", "float64"))).reshape(shape)
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
