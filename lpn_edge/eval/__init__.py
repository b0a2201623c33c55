"""Evaluation: the benchmark metrics (identical to the official evaluate_gpu.py) and the paper's figures.

Both modules need only numpy and Pillow; nothing here imports torch.
"""

from lpn_edge.eval.metrics import (
    PerQueryMetrics,
    evaluate_retrieval,
    format_metrics_table,
    per_query_metrics,
    rank_gallery,
)
from lpn_edge.eval.plots import (
    StripRow,
    heatmap_overlay,
    heatmap_panel,
    retrieval_grid,
    retrieval_strip,
)

__all__ = [
    "PerQueryMetrics",
    "StripRow",
    "evaluate_retrieval",
    "format_metrics_table",
    "heatmap_overlay",
    "heatmap_panel",
    "per_query_metrics",
    "rank_gallery",
    "retrieval_grid",
    "retrieval_strip",
]
