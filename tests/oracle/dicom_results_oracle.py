"""Independent check of imhost's DICOM results (highdicom 0.28.2, pydicom 3.0.2, nibabel).

    dicom_results_oracle.py DICOM_OUT SOURCE_DICOM_DIR RUN_OUT

DICOM_OUT holds what `--dicom-out` wrote (dicom-results.json and the files), SOURCE_DICOM_DIR the
source CT series, RUN_OUT what `imhost run` wrote (result.json and one NIfTI per volume output).
Checks, each against an independent reader:
- every instance: the source's Patient, Study and Frame of Reference, its own new series, a
  "RESEARCH USE ONLY" series description, the SOP class of its kind;
- Parametric Maps (highdicom): values equal the NIfTI map voxel for voxel, bit-exact in float32,
  at the same patient position; the unit and quantity the manifest declares;
- Segmentations (highdicom): each segment's mask equals the label's voxels in the NIfTI label
  map; labels, CIELab colours and property codes as the manifest declares;
- the measurement report (highdicom's TID 1500 parser): every score of result.json, each
  volume group referencing the right segment of the right SEG, whose voxel count times the voxel
  volume gives the same number; the research-use statement;
- geometry (pydicom): per-frame positions, orientation, pixel spacing and slice spacing equal
  the source series';
- a 4-D source's temporal average (pydicom, numpy): one CT image per slice at the source
  slice's position, each pixel within 0.5 HU of the mean over the frames of the source pixels
  (read and rescaled by pydicom), deriving from every frame of its slice; the maps and
  segmentations reference its series first, then the source series.
Exits 1 with one line per failure; else prints a JSON summary of what was checked.
"""
import json
import os
import sys

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom

out_dir, source_dir, run_dir = sys.argv[1:4]
index = json.load(open(os.path.join(out_dir, "dicom-results.json")))
result = json.load(open(os.path.join(run_dir, "result.json")))
specs = {o["name"]: o for o in result["outputs"]}
failures = []
checked = {"parametric_maps": 0, "segmentations": 0, "segments": 0, "measurements": 0, "voxels": 0, "frames": 0,
           "average_slices": 0}
average = [e for e in index["instances"] if e["kind"] == "reference_image"]
average_uids = {e["sop_instance_uid"] for e in average}
average_series = {e["series_instance_uid"] for e in average}


def fail(what):
    failures.append(what)


# The source series: slices of the first frame by position along the normal.
source = []
for name in sorted(os.listdir(source_dir)):
    ds = pydicom.dcmread(os.path.join(source_dir, name), stop_before_pixels=True)
    if "ImagePositionPatient" in ds:
        source.append(ds)
first = source[0]
iop = np.array([float(x) for x in first.ImageOrientationPatient])
normal = np.cross(iop[:3], iop[3:])
positions = sorted({round(float(np.dot([float(x) for x in d.ImagePositionPatient], normal)), 4) for d in source})
by_position = {}
for d in source:
    key = round(float(np.dot([float(x) for x in d.ImagePositionPatient], normal)), 4)
    by_position.setdefault(key, d)
slices = [by_position[p] for p in positions]
step = positions[1] - positions[0] if len(positions) > 1 else None
source_uids = {d.SOPInstanceUID for d in source}


def nifti_lps(path):
    """A NIfTI volume (i, j, k) and its voxel-to-LPS affine."""
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    return data, np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine


def resample_to_nifti(vol_array, vol_affine, nifti_shape, nifti_affine, what):
    """highdicom's volume (its own axis order) as an array on the NIfTI's (i, j, k) grid."""
    shape = vol_array.shape[:3]
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    lps = (vol_affine @ np.c_[idx, np.ones(len(idx))].T)[:3].T
    ijk = (np.linalg.inv(nifti_affine) @ np.c_[lps, np.ones(len(lps))].T)[:3].T
    rounded = np.rint(ijk)
    if np.abs(ijk - rounded).max() > 1e-3:
        fail(f"{what}: voxel centres are not on the NIfTI grid (off by {np.abs(ijk - rounded).max():.4f} voxels)")
        return None
    rounded = rounded.astype(int)
    if (rounded < 0).any() or (rounded >= np.array(nifti_shape)).any():
        fail(f"{what}: voxels outside the NIfTI grid")
        return None
    out = np.zeros(nifti_shape, dtype=vol_array.dtype)
    out[rounded[:, 0], rounded[:, 1], rounded[:, 2]] = vol_array.reshape(-1)
    return out


def check_common(ds, entry):
    what = entry["file_name"]
    for keyword in ["StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "AccessionNumber"]:
        if str(getattr(ds, keyword, "")) != str(getattr(first, keyword, "")):
            fail(f"{what}: {keyword} {getattr(ds, keyword, None)!r} is not the source's {getattr(first, keyword, None)!r}")
    if ds.SOPClassUID != entry["sop_class_uid"] or ds.SOPInstanceUID != entry["sop_instance_uid"]:
        fail(f"{what}: SOP class/instance differ from dicom-results.json")
    if ds.SeriesInstanceUID == first.SeriesInstanceUID:
        fail(f"{what}: reuses the source's Series Instance UID")
    if "RESEARCH USE ONLY" not in str(ds.SeriesDescription):
        fail(f"{what}: Series Description {ds.SeriesDescription!r} does not say research use only")
    if entry["kind"] in ("parametric_map", "segmentation"):
        if ds.FrameOfReferenceUID != first.FrameOfReferenceUID:
            fail(f"{what}: Frame of Reference is not the source's")
        refs = {i.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
        if refs != source_uids | average_uids:
            fail(f"{what}: references {len(refs)} instances, the source series has {len(source_uids)} "
                 f"and its average {len(average_uids)}")
        series = [s.SeriesInstanceUID for s in ds.ReferencedSeriesSequence]
        expected = sorted(average_series) + [first.SeriesInstanceUID]
        if series != expected:
            fail(f"{what}: references the series {series}, expected the average first then the source {expected}")


def check_geometry(ds, what):
    shared = ds.SharedFunctionalGroupsSequence[0]
    if np.abs(np.array([float(x) for x in shared.PlaneOrientationSequence[0].ImageOrientationPatient]) - iop).max() > 1e-5:
        fail(f"{what}: orientation differs from the source")
    pm = shared.PixelMeasuresSequence[0]
    if np.abs(np.array([float(x) for x in pm.PixelSpacing]) - np.array([float(x) for x in first.PixelSpacing])).max() > 1e-5:
        fail(f"{what}: pixel spacing differs from the source")
    if step is not None and abs(float(pm.SpacingBetweenSlices) - abs(step)) > 1e-3:
        fail(f"{what}: slice spacing {pm.SpacingBetweenSlices} where the source steps {abs(step)}")
    for frame in ds.PerFrameFunctionalGroupsSequence:
        p = np.array([float(x) for x in frame.PlanePositionSequence[0].ImagePositionPatient])
        key = round(float(np.dot(p, normal)), 4)
        src = by_position.get(key)
        if src is None or np.abs(p - np.array([float(x) for x in src.ImagePositionPatient])).max() > 1e-4:
            fail(f"{what}: a frame at {p.tolist()} matches no source slice")
            return
        derived = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        if by_position[key].SOPInstanceUID != derived and derived not in source_uids:
            fail(f"{what}: a frame derives from an instance not in the source series")
        checked["frames"] += 1


seg_files = {}
for entry in index["instances"]:
    path = os.path.join(out_dir, entry["file_name"])
    ds = pydicom.dcmread(path)
    check_common(ds, entry)
    name = entry["output"]
    if entry["kind"] == "parametric_map":
        spec = specs[name]
        check_geometry(ds, entry["file_name"])
        truth, affine = nifti_lps(os.path.join(run_dir, f"{name}.nii.gz"))
        image = hd.imread(path)
        volume = image.get_volume()
        mapped = resample_to_nifti(volume.array.astype(np.float32), volume.affine, truth.shape, affine, entry["file_name"])
        # Bit-exact: the raw float32 pixels against the NIfTI's float32 values.
        raw = ds.pixel_array.astype(np.float32)
        if mapped is not None:
            if not np.array_equal(mapped, truth.astype(np.float32), equal_nan=True):
                fail(f"{name}: Parametric Map values differ from the NIfTI map at {(mapped != truth).sum()} voxels")
            if raw.dtype != np.float32 or raw.size != truth.size:
                fail(f"{name}: pixel data is not {truth.size} float32 values")
            checked["voxels"] += truth.size
        rwvm = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        unit = rwvm.MeasurementUnitsCodeSequence[0]
        if unit.CodingSchemeDesignator != "UCUM" or unit.CodeValue != spec.get("unit_ucum", "1"):
            fail(f"{name}: unit {unit.CodeValue} ({unit.CodingSchemeDesignator}), manifest {spec.get('unit_ucum')}")
        if "quantity" in spec:
            q = rwvm.QuantityDefinitionSequence[0].ConceptCodeSequence[0]
            if (q.CodeValue, q.CodingSchemeDesignator) != (spec["quantity"]["value"], spec["quantity"]["scheme"]):
                fail(f"{name}: quantity {q.CodeValue} is not the manifest's")
        checked["parametric_maps"] += 1
    elif entry["kind"] == "segmentation":
        spec = specs[name]
        check_geometry(ds, entry["file_name"])
        labels, affine = nifti_lps(os.path.join(run_dir, f"{name}.nii.gz"))
        seg = hd.seg.segread(path)
        numbers = list(seg.segment_numbers)
        if len(numbers) != len(spec["labels"]):
            fail(f"{name}: {len(numbers)} segments for {len(spec['labels'])} labels")
        seg_files[name] = (seg, ds, labels, affine)
        for number, label in zip(numbers, spec["labels"]):
            d = seg.get_segment_description(number)
            if d.segment_label != label["name"]:
                fail(f"{name}: segment {number} is labelled {d.segment_label!r}, not {label['name']!r}")
            if "property" in label and d.segmented_property_type.value != label["property"]["value"]:
                fail(f"{name}: segment {number} property {d.segmented_property_type.value}")
            if "RecommendedDisplayCIELabValue" not in d:
                fail(f"{name}: segment {number} has no colour")
            vol = seg.get_volume(segment_numbers=[number], combine_segments=False)
            mask = resample_to_nifti(vol.array[..., 0].astype(np.uint8), vol.affine, labels.shape, affine, f"{name}/{number}")
            if mask is not None:
                want = (labels == label["value"]).astype(np.uint8)
                if not np.array_equal(mask, want):
                    fail(f"{name}: segment {number} ({label['name']}) differs from label {label['value']} at {(mask != want).sum()} voxels")
                checked["voxels"] += want.size
            checked["segments"] += 1
        checked["segmentations"] += 1
    elif entry["kind"] == "measurement_report":
        sr = hd.sr.srread(path)
        report = sr.content
        texts = [str(getattr(i, "TextValue", "")) for c in sr.ContentSequence if "ContentSequence" in c for i in c.ContentSequence]
        if not any("RESEARCH USE ONLY" in t for t in texts):
            fail("report: no research-use statement")
        found = {}
        for group in report.get_volumetric_roi_measurement_groups():
            ref = group.referenced_segment
            ref_item = ref.ReferencedSOPSequence[0] if hasattr(ref, "ReferencedSOPSequence") else ref[0].ReferencedSOPSequence[0]
            number = int(ref_item.ReferencedSegmentNumber)
            seg_entry = [e for e in index["instances"] if e["sop_instance_uid"] == ref_item.ReferencedSOPInstanceUID]
            if len(seg_entry) != 1:
                fail(f"report: group {group.tracking_identifier} references an unknown SEG")
                continue
            seg, seg_ds, labels, affine = seg_files[seg_entry[0]["output"]]
            vol = seg.get_volume(segment_numbers=[number], combine_segments=False)
            spacing = [float(x) for x in seg_ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
            thickness = float(seg_ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices)
            from_mask = float(vol.array.sum()) * spacing[0] * spacing[1] * thickness / 1000.0
            for m in group.get_measurements():
                found.setdefault(("segment", seg_entry[0]["output"], number), []).append((m.name.meaning, float(m.value), m.unit.value, from_mask))
        for group in report.get_image_measurement_groups():
            for m in group.get_measurements():
                found.setdefault(("scores",), []).append((m.name.meaning, float(m.value), m.unit.value, None))
        # Every score of result.json, where the manifest says it was measured.
        for name, value in result["scores"].items():
            spec = specs[name]
            on = spec.get("measured_on")
            if on:
                label_index = [l["value"] for l in specs[on["output"]]["labels"]].index(on["label"]) + 1
                items = found.get(("segment", on["output"], label_index), [])
            else:
                items = found.get(("scores",), [])
            match = [i for i in items if abs(i[1] - value) <= 1e-9 * max(1.0, abs(value)) and i[2] == spec.get("unit_ucum", "1")]
            if not match:
                fail(f"report: score {name} = {value} {spec.get('unit_ucum')} not found (have {items})")
                continue
            if on and match[0][3] is not None and abs(match[0][3] - value) > 1e-6 * max(1.0, value):
                fail(f"report: {name} = {value} but the referenced segment holds {match[0][3]} ml")
            checked["measurements"] += 1
    elif entry["kind"] == "reference_image":
        if ds.SOPClassUID != "1.2.840.10008.5.1.4.1.1.2" or ds.Modality != "CT":
            fail(f"{what}: the average is not a CT Image ({ds.SOPClassUID}, {ds.Modality})")
        if ds.FrameOfReferenceUID != first.FrameOfReferenceUID:
            fail(f"{what}: Frame of Reference is not the source's")
        p = np.array([float(x) for x in ds.ImagePositionPatient])
        key = round(float(np.dot(p, normal)), 4)
        frames = [d for d in source if round(float(np.dot([float(x) for x in d.ImagePositionPatient], normal)), 4) == key]
        if not frames:
            fail(f"{what}: at {p.tolist()}, where the source has no slice")
        else:
            stack = np.stack([pydicom.dcmread(d.filename).pixel_array * float(getattr(d, "RescaleSlope", 1))
                              + float(getattr(d, "RescaleIntercept", 0)) for d in frames]).astype(np.float64)
            mean = stack.mean(axis=0)
            ours = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            err = np.abs(ours - mean).max() if ours.shape == mean.shape else np.inf
            if err > 0.5 + 1e-6:
                fail(f"{what}: differs from the mean of the {len(frames)} source frames by {err} HU")
            derived = {i.ReferencedSOPInstanceUID for i in ds.SourceImageSequence}
            if derived != {d.SOPInstanceUID for d in frames}:
                fail(f"{what}: derives from {len(derived)} instances, the slice has {len(frames)} frames")
            checked["average_slices"] += 1
            checked["voxels"] += int(mean.size)
    elif entry["kind"] == "secondary_capture":
        from PIL import Image

        png = np.asarray(Image.open(os.path.join(run_dir, "preview.png")).convert("RGB"))
        if ds.pixel_array.shape != png.shape or not np.array_equal(ds.pixel_array, png):
            fail("preview: the Secondary Capture's pixels are not the PNG's")

if failures:
    for f in failures:
        print(f)
    sys.exit(1)
print(json.dumps(checked))
