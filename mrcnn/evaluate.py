"""Public evaluation API (re-exported from :mod:`mrcnn.evaluation`).

Matterport's per-image metrics (``compute_matches``, ``compute_ap``,
``compute_ap_range``, ``compute_recall``) are also reachable through
``mrcnn.utils`` under their original names.
"""
from mrcnn.evaluation import *  # noqa: F401,F403
from mrcnn.evaluation import __all__  # noqa: F401
