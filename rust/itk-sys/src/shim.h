// imhost's ITK shim: declarations for the cxx bridge in lib.rs.
#pragma once
#include <array>
#include <cstddef>

#include "rust/cxx.h"

namespace imhost_itk {
struct Grid;
struct RigidSettings;
struct RigidTransform;
RigidTransform register_rigid(rust::Slice<const float> fixed, rust::Slice<const float> moving, const Grid &grid,
                              const RigidSettings &settings, rust::Slice<float> resampled);
RigidSettings settings_for(std::array<std::size_t, 3> size);
rust::String describe();
}  // namespace imhost_itk
