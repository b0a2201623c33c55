"""lpn-edge: the Local Pattern Network (Wang et al., TCSVT 2021) for cross-view drone geo-localization.

Public API (stable): ``load_model(path, device="cpu") -> LPN`` and ``LPN.embed(images, view, flip=True)``.
Heavy imports (torch) happen only when a function that needs them is called.
"""

from lpn_edge.errors import LpnEdgeError

__version__ = "0.1.0"
__all__ = ["LpnEdgeError", "__version__", "load_model"]


def load_model(path, device="cpu"):
    """Load an lpn-edge checkpoint (``.pt``) and return the LPN model in eval mode on ``device``."""
    from lpn_edge.checkpoint import load_model as _load_model

    return _load_model(path, device=device)
