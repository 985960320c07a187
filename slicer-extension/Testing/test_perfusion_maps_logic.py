"""Perfusion Maps from Python with the real slicer-core wheel: the scene, the Sequence and every
check are built with Slicer's own MRML Python API (and nibabel reads the command's maps), the
Logic is driven through its C entry point. Run by ctest (slicer_perfusion_maps_pytest):

    IMHOST_SLICER_LOGIC=.../libvtkSlicerImhostModuleLogic.so IMHOST_COMMAND=.../imhost \
    IMHOST_PHANTOM=.../phantom IMHOST_WORK=... pytest test_perfusion_maps_logic.py
"""

import ctypes
import json
import os
import subprocess

import nibabel as nib
import numpy as np
import pytest
import slicer
from vtkmodules.util import numpy_support

LIB = ctypes.CDLL(os.environ["IMHOST_SLICER_LOGIC"])
LIB.imhost_slicer_generate_perfusion_maps.restype = ctypes.c_size_t
LIB.imhost_slicer_generate_perfusion_maps.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                                      ctypes.c_char_p, ctypes.c_size_t]
WORK = os.environ["IMHOST_WORK"]


def pointer(vtk_object):
    """The C++ address of a VTK-Python object ('_0000…_p_vtkMRMLScene')."""
    return int(vtk_object.__this__[1:].split("_")[0], 16)


def generate(scene, node, options=None):
    size = 1 << 22
    while True:
        out = ctypes.create_string_buffer(size)
        n = LIB.imhost_slicer_generate_perfusion_maps(pointer(scene), node.GetID().encode() if node else b"",
                                                      json.dumps(options or {}).encode(), out, size)
        if n < size:
            return json.loads(out.value.decode())
        size = n + 1


def rotated_study():
    """The phantom on a rotated (25° about z, 12° about y), anisotropic grid, written with nibabel."""
    img = nib.load(os.path.join(os.environ["IMHOST_PHANTOM"], "ctp.nii.gz"))
    a, b = np.radians(25), np.radians(12)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ np.diag([1.75, 2.125, 5.5])
    affine[:3, 3] = [20.0, -35.5, 12.25]
    out = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.int16), affine, img.header)
    out.set_sform(affine, code=1)
    out.set_qform(affine, code=1)
    path = os.path.join(WORK, "py-study.nii.gz")
    nib.save(out, path)
    return path


@pytest.fixture(scope="module")
def study():
    path = rotated_study()
    img = nib.load(path)
    cli = os.path.join(WORK, "py-cli")
    subprocess.run([os.environ["IMHOST_COMMAND"], "perfusion", path, "--out", cli, "--overwrite", "-q"], check=True)
    return img, cli


def add_sequence(scene, img, times):
    data = np.asarray(img.dataobj)
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "CTP phantom")
    seq.SetIndexName("time")
    seq.SetIndexUnit("s")
    matrix = slicer.vtkMRMLScalarVolumeNode().GetIJKToRASMatrix  # noqa: F841 (API check)
    ijk_to_ras = np.array(img.affine, dtype=np.float64)
    import vtk

    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, ijk_to_ras[r, c])
    for t in range(data.shape[3]):
        frame = slicer.vtkMRMLScalarVolumeNode()
        image = vtk.vtkImageData()
        image.SetDimensions(*data.shape[:3])
        voxels = np.ascontiguousarray(data[..., t].transpose(2, 1, 0)).ravel()  # i fastest
        image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(voxels, deep=True, array_type=vtk.VTK_SHORT))
        frame.SetAndObserveImageData(image)
        frame.SetIJKToRASMatrix(m)
        seq.SetDataNodeAtValue(frame, repr(float(times[t])))
    return seq, m


def voxels(node):
    image = node.GetImageData()
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1]).transpose(2, 1, 0)


def test_generate_perfusion_maps_matches_the_command(study):
    img, cli = study
    report = json.load(open(os.path.join(cli, "report.json")))
    scene = slicer.vtkMRMLScene()
    seq, matrix = add_sequence(scene, img, report["input"]["frame_times_s"])
    result = generate(scene, seq)
    assert result["state"] == "succeeded", result["status"]
    assert result["report"]["readout"] == report["readout"]
    for name, label in [("cbf", "CBF"), ("cbv", "CBV"), ("mtt", "MTT"), ("ttp", "TTP"), ("tmax", "Tmax")]:
        node = scene.GetFirstNodeByName(f"CTP phantom {label}")
        assert node is not None, label
        expected = np.asarray(nib.load(os.path.join(cli, f"{name}.nii.gz")).dataobj)
        np.testing.assert_array_equal(voxels(node), expected, err_msg=label)
        got = slicer.vtkMatrix4x4() if hasattr(slicer, "vtkMatrix4x4") else __import__("vtk").vtkMatrix4x4()
        node.GetIJKToRASMatrix(got)
        for r in range(4):
            for c in range(4):
                assert got.GetElement(r, c) == pytest.approx(matrix.GetElement(r, c), abs=1e-9)
        assert node.GetAttribute("imhost.ResearchUseOnly").startswith("RESEARCH USE ONLY")
        assert node.GetVoxelValueUnits().GetCodeMeaning() == report["units"][name].replace("ml/100 g/min", "ml/100 g/min")
    # Core and penumbra (hypoperfusion minus core), voxel for voxel against nibabel's masks.
    seg = scene.GetFirstNodeByName("CTP phantom core and penumbra")
    core = np.asarray(nib.load(os.path.join(cli, "core.nii.gz")).dataobj) != 0
    hypo = np.asarray(nib.load(os.path.join(cli, "hypoperfusion.nii.gz")).dataobj) != 0
    segmentation = seg.GetSegmentation()
    assert segmentation.GetSegment("core").GetName() == "Ischemic core"
    assert segmentation.GetSegment("penumbra").GetName() == "Penumbra"
    for segment_id, want in [("core", core), ("penumbra", hypo & ~core)]:
        labelmap = slicer.vtkOrientedImageData()
        seg.GetBinaryLabelmapRepresentation(segment_id, labelmap)
        ext = labelmap.GetExtent()
        got = np.zeros(core.shape, dtype=bool)
        if ext[1] >= ext[0]:
            dims = labelmap.GetDimensions()
            a = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[::-1]).transpose(2, 1, 0)
            got[ext[0]:ext[1] + 1, ext[2]:ext[3] + 1, ext[4]:ext[5] + 1] = a != 0
        np.testing.assert_array_equal(got, want, err_msg=segment_id)
    # The table's rows are the report's numbers.
    table = scene.GetFirstNodeByName("CTP phantom perfusion read-out")
    rows = {table.GetCellText(r, 0): table.GetCellText(r, 1) for r in range(table.GetNumberOfRows())}
    volumes = report["readout"]["volumes"]
    assert float(rows["Ischemic core"]) == pytest.approx(volumes["core_ml"], abs=0.05)
    assert float(rows["Penumbra (mismatch)"]) == pytest.approx(volumes["mismatch_ml"], abs=0.05)
    assert rows["Research use only"] == "yes"
    # The plot's AIF series is the report's curve.
    curves = scene.GetFirstNodeByName("CTP phantom AIF and VOF curves").GetTable()
    aif = numpy_support.vtk_to_numpy(curves.GetColumnByName("AIF (HU)"))
    np.testing.assert_allclose(aif, report["aif"]["curve_hu"], atol=1e-6)
    chart = scene.GetFirstNodeByName("CTP phantom AIF and VOF")
    assert chart.GetNumberOfPlotSeriesNodes() == (2 if report["vof"] else 1)
    # One subject-hierarchy folder holds them all.
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for node_id in result["nodes"]:
        assert sh.GetItemParent(sh.GetItemByDataNode(scene.GetNodeByID(node_id))) == result["folder"]
    assert sh.GetItemName(result["folder"]).startswith("CTP phantom - imhost oSVD")
    assert result["input_copy_bytes"] == np.asarray(img.dataobj).size * 2


def test_a_3d_volume_is_refused_and_nothing_is_added(study):
    img, _ = study
    scene = slicer.vtkMRMLScene()
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T1")
    image = vtk.vtkImageData()
    image.SetDimensions(8, 8, 4)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    node.SetAndObserveImageData(image)
    before = scene.GetNumberOfNodes()
    result = generate(scene, node)
    assert result["state"] == "failed"
    assert "is a 3-D volume" in result["status"]
    assert scene.GetNumberOfNodes() == before
