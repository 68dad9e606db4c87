"""CaloChallenge voxel geometries: cylindrical (layer, alpha, r) binnings.

>>> from caloforge.geometry import get_geometry
>>> g = get_geometry("ds2")
>>> g.n_voxels
6480
"""

from caloforge.geometry.binning import Geometry, LayerBinning
from caloforge.geometry.builtin import BUILTIN_NAMES, geometry_for_voxels, get_geometry
from caloforge.geometry.xml import read_binning_xml

__all__ = [
    "BUILTIN_NAMES",
    "Geometry",
    "LayerBinning",
    "geometry_for_voxels",
    "get_geometry",
    "read_binning_xml",
]
