"""highdicom writing the same Parametric Map as imhost (BENCHMARKS.md "DICOM results").

    PYTHONPATH=.cache/python python3 benches/highdicom_pm.py OUT_DIR [RUNS]

OUT_DIR is what `bench_dicom` wrote: `source/` (the 16 slices of the first frame) and `cbf.f32`
(the CBF map, float32, slices × rows × columns). Writes OUT_DIR/highdicom_cbf.dcm and prints
the best of RUNS (default 3) in seconds for building and saving the map, as JSON.
"""
import json
import os
import sys
import time

import highdicom as hd
import numpy as np
import pydicom

out = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
src = os.path.join(out, "source")
slices = [pydicom.dcmread(os.path.join(src, n)) for n in sorted(os.listdir(src))]
rows, cols = int(slices[0].Rows), int(slices[0].Columns)
cbf = np.fromfile(os.path.join(out, "cbf.f32"), dtype="<f4").reshape(len(slices), rows, cols)
mapping = hd.pm.RealWorldValueMapping(
    lut_label="CBF",
    lut_explanation="cerebral blood flow",
    unit=hd.sr.CodedConcept("mL/(100.g.min)", "UCUM", "mL/(100.g.min)"),
    value_range=(float(cbf.min()), float(cbf.max())),
    intercept=0,
    slope=1,
    quantity_definition=hd.sr.CodedConcept("126390", "DCM", "Absolute Regional Blood Flow"),
)
best = float("inf")
for _ in range(runs):
    t = time.perf_counter()
    pm = hd.pm.ParametricMap(
        source_images=slices,
        pixel_array=cbf,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="imhost-bench",
        manufacturer_model_name="highdicom",
        software_versions=hd.__version__,
        device_serial_number="1",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=40.0, window_width=80.0)],
    )
    pm.save_as(os.path.join(out, "highdicom_cbf.dcm"))
    best = min(best, time.perf_counter() - t)
print(json.dumps({"highdicom_version": hd.__version__, "one_parametric_map_s": best, "runs": runs}))
