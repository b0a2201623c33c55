"""The benchmark document as a table for people (stdout): one line per figure, its reference and ratio, then what
was skipped and why."""

from __future__ import annotations


def _setting(row: dict) -> str:
    parts = []
    if "batch" in row:
        parts.append(f"b{row['batch']}")
    if row.get("threads") is not None:
        parts.append(f"t{row['threads']}")
    if "queries" in row:
        parts.append(f"q{row['queries']}")
    if row.get("precision") and row["part"] == "pool":
        parts.append(row["precision"])
    return " ".join(parts)


def table(document: dict) -> str:
    machine = document["machine"]
    lines = [f"# {machine['date']}  commit {machine['commit']}  {machine['cpu']} ({machine['cpus']} CPUs)"
             f"{'  GPU ' + machine['gpu'] if machine.get('gpu') else ''}  load average "
             f"{machine['load_average_start']} -> {machine.get('load_average_end')}"]
    header = (f"{'part':7s} {'device':6s} {'setting':12s} {'what':58s} {'min':>9s} {'median':>9s} {'mean':>9s} "
              f"{'p90':>9s} {'p99':>9s} {'items/s':>9s} {'ratio':>7s}  notes")
    lines += [header, "-" * len(header)]
    for row in document["results"]:
        s = row["stats"]
        ratio = f"{row['ratio']:.3f}" if "ratio" in row else ("ref" if row.get("reference_row") else "")
        notes = []
        if row.get("floor_ms") is not None and not row.get("reference_row", False) or \
                (row.get("reference_row") and row.get("floor_ms") is not None):
            notes.append(f"{row['ratio_to_floor']:.2f}x floor {row['floor_ms']:.2f} ms")
        accuracy = row.get("accuracy")
        if accuracy:
            notes.append(f"cos min {accuracy['min_cosine']:.4f} mean {accuracy['mean_cosine']:.4f} top-1 "
                         f"{accuracy['top1_agreement']:.0%} ({accuracy['image_set']})")
        if row.get("breakdown_ms"):
            notes.append(" + ".join(f"{step} {ms:.2f}" for step, ms in row["breakdown_ms"].items()) +
                         f" ms (medians); {row['engine']} over {row['gallery']} tiles")
        if row.get("top1_agreement") is not None and row["part"] == "locate":
            notes.append(f"best tile as the reference's in {row['top1_agreement']:.0%} of frames")
        if row.get("host_copies") is not None:
            notes.append("host copies" if row["host_copies"] else "no host copies")
        lines.append(f"{row['part']:7s} {row.get('device', ''):6s} {_setting(row):12s} {row['name'][:58]:58s} "
                     f"{s['min_ms']:9.2f} {s['median_ms']:9.2f} {s['mean_ms']:9.2f} {s['p90_ms']:9.2f} "
                     f"{s['p99_ms']:9.2f} {s['throughput']:9.1f} {ratio:>7s}  {'; '.join(notes)}")
    lines.append("times in ms; ratio = median / the reference's median in the same run (< 1: faster)")
    for skipped in document["skipped"]:
        lines.append(f"skipped  {skipped['part']}: {skipped['what']}: {skipped['reason']}")
    for failed in document.get("failed", []):
        lines.append(f"FAILED   {failed['part']}: {failed['error']} (its rows above are those it finished)")
    return "\n".join(lines)
