"""Parser for binning files in the official CaloChallenge XML format.

A file holds ``<Bins><Bin pid=".." name=".."><Layer id=".." r_edges="0,5,.." n_bin_alpha=".."/>``.
The standard library's ElementTree does the parsing; no XML entity expansion is involved.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from caloforge.errors import InputError
from caloforge.geometry.binning import Geometry, LayerBinning


def read_binning_xml(path: str | Path, name: str | None = None, readout_threshold: float = 0.0) -> Geometry:
    """Read a CaloChallenge binning XML file into a :class:`Geometry`.

    Raises :class:`InputError` naming the file on a missing file or a malformed document.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such binning file", path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise InputError(f"not a valid XML binning file ({exc})", path) from None
    bins = root.findall("Bin") if root.tag == "Bins" else ([root] if root.tag == "Bin" else [])
    if not bins:
        raise InputError("no <Bin> element: not a CaloChallenge binning file", path)
    bin_el = bins[0]
    layers = []
    for k, el in enumerate(bin_el.findall("Layer")):
        try:
            edges = tuple(float(s) for s in el.attrib["r_edges"].split(",") if s.strip())
            n_alpha = int(el.attrib.get("n_bin_alpha", "1"))
            index = int(el.attrib.get("id", k))
        except (KeyError, ValueError) as exc:
            raise InputError(f"layer {k}: bad or missing attribute ({exc})", path) from None
        if index != k:
            raise InputError(f"layer ids must be 0, 1, 2, ... in order (found {index} at {k})", path)
        try:
            layers.append(LayerBinning(index, edges, n_alpha))
        except ValueError as exc:
            raise InputError(str(exc), path) from None
    if not layers:
        raise InputError("no <Layer> elements", path)
    particle = bin_el.attrib.get("name", "unknown")
    return Geometry(
        name=name or path.stem,
        layers=tuple(layers),
        particle=particle,
        readout_threshold=readout_threshold,
        description=f"read from {path.name}",
    )
