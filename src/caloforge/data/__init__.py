"""CaloChallenge HDF5 files: streamed, validated reading and atomic, compressed writing.

A file holds ``incident_energies`` (N, 1) and ``showers`` (N, voxels), both in MeV.
"""

from caloforge.data.energy import EnergySpec, parse_energy
from caloforge.data.hdf5 import ShowerFile, ShowerWriter, open_showers, read_showers, write_showers

__all__ = [
    "EnergySpec",
    "ShowerFile",
    "ShowerWriter",
    "open_showers",
    "parse_energy",
    "read_showers",
    "write_showers",
]
