"""Zero-copy hand-over of CUDA outputs from the child to the parent (CUDA IPC).

The child describes each output tensor's shared allocation as plain JSON (sizes, strides,
dtype, the IPC handles); the parent rebuilds a view of it with torch's own
``rebuild_cuda_tensor``. Nothing is unpickled: every field is validated and converted here.
If either side cannot use IPC the child falls back to a file (``torch.save``, loaded with
``weights_only=True``).
"""

from __future__ import annotations

import base64
from typing import Any

__all__ = ["describe", "open_shared"]

_DTYPES = ("float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2",
           "int64", "int32", "int16", "int8", "uint8", "bool", "complex64")


def _b(x: bytes | None) -> str | None:
    return None if x is None else base64.b64encode(x).decode()


def _u(x: str | None) -> bytes | None:
    return None if x is None else base64.b64decode(x.encode(), validate=True)


def describe(t: Any) -> dict[str, Any]:
    """JSON-able description of a CUDA tensor's shared storage (child side)."""
    from torch.multiprocessing.reductions import reduce_tensor

    _fn, a = reduce_tensor(t)
    (_tcls, size, stride, offset, _scls, dtype, device, handle, storage_size, storage_offset,
     _grad, ref_handle, ref_offset, event_handle, event_sync) = a
    return {"size": list(size), "stride": list(stride), "offset": int(offset),
            "dtype": str(dtype).removeprefix("torch."), "device": int(device),
            "handle": _b(handle), "storage_size": int(storage_size),
            "storage_offset": int(storage_offset), "ref_handle": _b(ref_handle),
            "ref_offset": int(ref_offset), "event_handle": _b(event_handle),
            "event_sync": bool(event_sync)}


def open_shared(d: dict[str, Any]) -> Any:
    """The parent's view of a tensor the child described (validated field by field)."""
    import torch
    from torch.multiprocessing.reductions import rebuild_cuda_tensor

    if d.get("dtype") not in _DTYPES:
        raise ValueError(f"unexpected dtype {d.get('dtype')!r}")
    ints = [d["offset"], d["device"], d["storage_size"], d["storage_offset"], d["ref_offset"]]
    if not all(isinstance(i, int) and i >= 0 for i in ints):
        raise ValueError("bad integer field")
    if not all(isinstance(i, int) and i >= 0 for i in [*d["size"], *d["stride"]]):
        raise ValueError("bad size or stride")
    return rebuild_cuda_tensor(
        torch.Tensor, torch.Size(d["size"]), tuple(d["stride"]), d["offset"],
        torch.storage.UntypedStorage, getattr(torch, d["dtype"]), d["device"], _u(d["handle"]),
        d["storage_size"], d["storage_offset"], False, _u(d["ref_handle"]), d["ref_offset"],
        _u(d["event_handle"]), bool(d["event_sync"]),
    )
