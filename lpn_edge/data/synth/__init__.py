"""A procedural cross-view world: the project's built-in data, written in the University-1652 layout.

Each location is a neighbourhood (roads, fields, buildings with varied footprints, roofs and heights, trees,
sun shadows) around a target building drawn from a few look-alike designs, so that the surroundings are what
tells places apart. It is rendered as a north-up satellite tile, drone views from three distances, and low
oblique street / Google-like views, with numpy and Pillow only.

Modules: world (geometry), ortho (top-down rendering and height map), camera and render (perspective views),
views (where cameras stand, lighting), location (one place's files), generate (`synthesize`), preview, flight
(one geo-referenced area and a drone flight over it: `lpn-edge synth-flight`).
"""

from lpn_edge.data.synth.generate import SynthSummary, synthesize

__all__ = ["SynthSummary", "synthesize"]
