"""Geo-referenced imagery and positions: from gallery tiles to "where am I?", in metres.

Torch-free (numpy and Pillow; rasterio only inside the GeoTIFF reader, the optional extra ``[geo]``), because the
onboard runtime imports it.

Modules:
    georef      pixel <-> WGS84 transforms; ESRI world files, explicit bounds, GeoTIFF; haversine distances
    tiling      cut a geo-referenced orthophoto into square gallery tiles with geo.csv (``lpn-edge index tile``)
    metrics     position error in metres and top-k true-tile hit rates
    track       sequence filter: reject impossible jumps among the top-k candidates of consecutive frames
    flight_map  the orthophoto with the true path, the estimates coloured by error, and the tiles

Conventions: positions are WGS84 latitude/longitude in degrees; distances and errors are metres on the ground
(sphere of the WGS84 mean radius). Pixel coordinates are continuous (col, row) with (0, 0) the upper-left corner
of the upper-left pixel, so the centre of pixel index (i, j) is (i + 0.5, j + 0.5), as in GDAL and rasterio.
"""
