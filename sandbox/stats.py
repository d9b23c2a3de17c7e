"""Small statistics shared by the verifier and the scores (one implementation of each).

Example:
    >>> geomean([2.0, 0.5, None, 8.0])
    2.0
    >>> geomean([None, 0.0]) is None
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["geomean"]


def geomean(xs: Iterable[float | None]) -> float | None:
    """Geometric mean of the positive, finite values of ``xs``; ``None`` when there are none.

    ``None``, zero, negative, NaN and infinite values are left out (an unmeasured or broken
    ratio is never invented into the mean).
    """
    logs = [math.log(x) for x in xs if x is not None and math.isfinite(x) and x > 0]
    return math.exp(math.fsum(logs) / len(logs)) if logs else None
