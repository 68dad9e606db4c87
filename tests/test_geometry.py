import numpy as np
import pytest

from caloforge.errors import InputError
from caloforge.geometry import BUILTIN_NAMES, geometry_for_voxels, get_geometry, read_binning_xml

XML_OF = {
    "ds1-photons": "binning_dataset_1_photons.xml",
    "ds1-pions": "binning_dataset_1_pions.xml",
    "ds2": "binning_dataset_2.xml",
    "ds3": "binning_dataset_3.xml",
}
EXPECTED = {"ds1-photons": (368, 5), "ds1-pions": (533, 7), "ds2": (6480, 45), "ds3": (40500, 45)}


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_official_xml_voxel_counts_and_builtin_match(name, binning_dir):
    parsed = read_binning_xml(binning_dir / XML_OF[name])
    assert (parsed.n_voxels, parsed.n_layers) == EXPECTED[name]
    builtin = get_geometry(name)
    assert builtin.layers == parsed.layers
    np.testing.assert_array_equal(builtin.voxel_eta, parsed.voxel_eta)


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_counts_and_recognition(name):
    g = get_geometry(name)
    assert (g.n_voxels, g.n_layers) == EXPECTED[name]
    assert geometry_for_voxels(g.n_voxels) is g
    assert len(g.voxel_r) == len(g.voxel_alpha) == len(g.voxel_layer) == g.n_voxels


def test_ds1_photon_layers_and_alpha_binning():
    g = get_geometry("ds1-photons")
    assert g.relevant_layers == (0, 1, 2, 3, 12)
    assert g.layers_binned_in_alpha == (1, 2)
    assert g.layer_slice(12) == slice(363, 368)
    assert not g.is_regular


def test_voxel_order_is_layer_alpha_r():
    g = get_geometry("ds2")
    assert g.shape == (45, 16, 9)
    # the first 9 voxels are the radial bins of alpha bin 0 in layer 0
    np.testing.assert_allclose(g.voxel_r[:9], (np.arange(9) + 0.5) * 4.65)
    assert np.all(g.voxel_alpha[:9] == g.voxel_alpha[0])
    assert g.voxel_alpha[9] > g.voxel_alpha[0]
    assert g.voxel_layer[144] == 1 and g.voxel_layer[143] == 0
    # alpha centres divide [-pi, pi) evenly, as in the official XMLHandler
    np.testing.assert_allclose(g.layers[0].alpha_centres[0], -np.pi + np.pi / 16)
    np.testing.assert_allclose(g.voxel_eta, g.voxel_r * np.cos(g.voxel_alpha))
    # areas of the rings add up to the disc
    np.testing.assert_allclose(g.voxel_area[:144].sum(), np.pi * 41.85**2)


def test_unknown_voxel_count_and_name():
    with pytest.raises(InputError, match="fits no known geometry"):
        geometry_for_voxels(1234)
    with pytest.raises(InputError, match="unknown dataset"):
        get_geometry("ds9")
    assert get_geometry("2") is get_geometry("ds2")


def test_bad_xml_files(tmp_path):
    with pytest.raises(InputError, match="no such binning file"):
        read_binning_xml(tmp_path / "absent.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<Bins><Bin><Layer id='0' r_edges='0,5,3' n_bin_alpha='1'/></Bin></Bins>")
    with pytest.raises(InputError, match="increase"):
        read_binning_xml(bad)
    garbage = tmp_path / "garbage.xml"
    garbage.write_text("not xml <")
    with pytest.raises(InputError, match="garbage.xml"):
        read_binning_xml(garbage)


def test_custom_xml(tmp_path):
    f = tmp_path / "mine.xml"
    f.write_text(
        '<Bins><Bin pid="11" name="electron">'
        '<Layer id="0" r_edges="0,1,3" n_bin_alpha="4"/>'
        '<Layer id="1" r_edges="0" n_bin_alpha="1"/>'
        '<Layer id="2" r_edges="0,10" n_bin_alpha="1"/>'
        "</Bin></Bins>"
    )
    g = read_binning_xml(f)
    assert g.n_voxels == 9 and g.relevant_layers == (0, 2) and g.layers_binned_in_alpha == (0,)
    np.testing.assert_allclose(g.voxel_r, [0.5, 2] * 4 + [5])
