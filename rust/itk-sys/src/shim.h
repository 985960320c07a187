// imhost's ITK shim: declarations for the cxx bridge in lib.rs.
#pragma once
#include "rust/cxx.h"

namespace imhost_itk {
struct Grid;
struct RigidSettings;
struct RigidTransform;
RigidTransform register_rigid(rust::Slice<const float> fixed, rust::Slice<const float> moving, const Grid &grid,
                              const RigidSettings &settings, rust::Slice<float> resampled);
rust::String describe();
}  // namespace imhost_itk
