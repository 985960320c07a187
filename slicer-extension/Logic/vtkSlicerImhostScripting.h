// C entry points of the Logic for scripts and hosts without Slicer's VTK-Python wrapping of
// loadable-module logics (inside Slicer, use the wrapped vtkSlicerPerfusionMapsLogic instead):
// the pytest tests drive the Logic this way from a scene built with the slicer-core wheel.
#pragma once

#include <stddef.h>

#include "vtkSlicerImhostModuleLogicExport.h"

#ifdef __cplusplus
extern "C" {
#endif

/// Generate perfusion maps on node `input_id` of `scene` (a vtkMRMLScene*) and wait, processing
/// on the calling thread (which must be the scene's thread). `options_json` (may be NULL):
/// {"method": "osvd", "age": 70, "nihss": 12, "motion_correction": true, "replace": true,
/// "aif_ras": [x, y, z]}. Writes {"state": "succeeded"|"failed"|"cancelled", "status": "...",
/// "report": {...}, "nodes": [ids], "folder": item id, "input_copy_bytes": n,
/// "longest_main_thread_update_s": s} into `out` (NUL-terminated, truncated to `out_size`) and
/// returns the length it needs (without the NUL), as snprintf does.
VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT size_t imhost_slicer_generate_perfusion_maps(void* scene, const char* input_id,
                                                                                   const char* options_json, char* out,
                                                                                   size_t out_size);

#ifdef __cplusplus
}
#endif
