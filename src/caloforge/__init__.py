"""caloforge: fast calorimeter shower simulation with deep generative models.

The package is organised by concept:

- :mod:`caloforge.geometry`   - CaloChallenge voxel geometries and the binning-XML parser
- :mod:`caloforge.data`       - reading and writing CaloChallenge HDF5 files
- :mod:`caloforge.features`   - the CaloChallenge high-level shower features
- :mod:`caloforge.simulation` - a fast parametric (GFlash-like) shower simulator
- :mod:`caloforge.plotting`   - HEP-style plots of showers and features
- :mod:`caloforge.evaluation` - CaloChallenge metrics and the evaluation report
"""

__version__ = "0.1.0"

from caloforge.errors import CaloForgeError, InputError

__all__ = ["__version__", "CaloForgeError", "InputError"]
