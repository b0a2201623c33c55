"""The evaluation protocol written plainly (DESIGN.md section 4), the yardstick of the metrics and evaluation tests."""

from __future__ import annotations

import numpy as np


def loop_evaluation(query_features, query_labels, gallery_features, gallery_labels):
    """The protocol written plainly, one query at a time (DESIGN.md section 4)."""
    gallery_size = len(gallery_labels)
    cmc_total, ap_total = np.zeros(gallery_size), 0.0
    for feature, label in zip(query_features, query_labels):
        score = gallery_features.astype(np.float32) @ feature.astype(np.float32)
        order = np.argsort(score, kind="stable")[::-1]
        order = order[gallery_labels[order] != -1]
        good_ranks = np.flatnonzero(gallery_labels[order] == label)
        if len(good_ranks) == 0:
            continue
        cmc_total[good_ranks[0] :] += 1
        for i, rank in enumerate(good_ranks):
            precision = (i + 1) / (rank + 1)
            old_precision = i / rank if rank != 0 else 1.0
            ap_total += (1 / len(good_ranks)) * (old_precision + precision) / 2
    cmc = cmc_total / len(query_labels)
    return {
        "R@1": cmc[0],
        "R@5": cmc[4],
        "R@10": cmc[9],
        "R@top1%": cmc[round(gallery_size * 0.01)],
        "AP": ap_total / len(query_labels),
    }
