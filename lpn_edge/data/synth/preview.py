"""A contact sheet of a synthetic dataset: per row one location's satellite tile and a drone view per distance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from lpn_edge.data.synth.location import LocationFiles

_LABEL_HEIGHT = 14
_GAP = 4


def contact_sheet(root: Path, locations: Sequence[LocationFiles], cell: int) -> Image.Image:
    """Rows of [satellite, short, middle, long] images of ``locations`` (read back from ``root``), labelled with
    the location, whether it is a training or a test location (from its folder), and what each image is."""
    columns = 1 + max(len(loc.drone_samples) for loc in locations)
    row_height = cell + _LABEL_HEIGHT + _GAP
    sheet = Image.new("RGB", (columns * (cell + _GAP) + _GAP, len(locations) * row_height + _GAP), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row, location in enumerate(locations):
        top = _GAP + row * row_height
        for column, relative in enumerate((location.satellite, *location.drone_samples)):
            left = _GAP + column * (cell + _GAP)
            with Image.open(root / relative) as image:
                sheet.paste(image.convert("RGB").resize((cell, cell)), (left, top + _LABEL_HEIGHT))
            label = f"{location_label(location)} {'satellite' if column == 0 else Path(relative).stem}"
            draw.text((left, top + 1), label, fill=(0, 0, 0))
    return sheet


def location_label(location: LocationFiles) -> str:
    """'0003 TRAIN' or '0040 TEST': the split is the top folder the location's satellite tile was written to."""
    return f"{location.name} {'TRAIN' if Path(location.satellite).parts[0] == 'train' else 'TEST'}"
