"""Matterport's ``log``: print a label with an array's shape, range and dtype."""
from __future__ import annotations

import numpy as np


def log(text: str, array=None) -> None:
    """Print ``text`` and, if given, the shape, min, max and dtype of ``array``."""
    if array is not None:
        array = np.asarray(array)
        text = text.ljust(25)
        if array.size:
            text += ("shape: {:20}  min: {:10.5f}  max: {:10.5f}".format(
                str(array.shape), float(array.min()), float(array.max())))
        else:
            text += "shape: {:20}  min: {:10}  max: {:10}".format(str(array.shape), "", "")
        text += "  {}".format(array.dtype)
    print(text)
