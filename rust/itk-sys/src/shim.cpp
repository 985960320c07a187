// The cxx bridge's side of rigid registration: the `imhost` command's ITK registration is the
// same code a host supplies through cpp/include/imhost_itk.hpp (one implementation). Throws
// (std::exception) on failure; cxx turns that into a Rust Err.
#include "shim.h"

#include <stdexcept>

#include "imhost_itk.hpp"
#include "itk-sys/src/lib.rs.h"

namespace imhost_itk {

RigidTransform register_rigid(rust::Slice<const float> fixed_data, rust::Slice<const float> moving_data, const Grid &grid,
                              const RigidSettings &settings, rust::Slice<float> resampled) {
    const std::size_t n = grid.size[0] * grid.size[1] * grid.size[2];
    if (fixed_data.size() != n || moving_data.size() != n) throw std::invalid_argument("image buffer does not match the grid");
    if (resampled.size() != n) throw std::invalid_argument("output buffer does not match the grid");
    imhost::itk::Grid g{};
    imhost::itk::RigidSettings s;
    for (unsigned a = 0; a < 3; ++a) {
        g.size[a] = grid.size[a];
        g.spacing[a] = grid.spacing[a];
        g.origin[a] = grid.origin[a];
        s.shrink[a] = settings.shrink[a];
    }
    for (unsigned a = 0; a < 9; ++a) g.direction[a] = grid.direction[a];
    s.iterations = settings.iterations;
    s.sampling = settings.sampling;
    s.seed = settings.seed;
    s.threads = settings.threads;
    const auto t = imhost::itk::register_rigid(fixed_data.data(), moving_data.data(), g, s, resampled.data());
    RigidTransform result{};
    for (unsigned a = 0; a < 3; ++a) {
        result.angles[a] = t.angles[a];
        result.translation[a] = t.translation[a];
        result.center[a] = t.center[a];
    }
    result.metric = t.metric;
    return result;
}

RigidSettings settings_for(std::array<std::size_t, 3> size) {
    const std::size_t dims[3] = {size[0], size[1], size[2]};
    const auto s = imhost::itk::RigidSettings::for_grid(dims);
    RigidSettings out{};
    for (unsigned a = 0; a < 3; ++a) out.shrink[a] = s.shrink[a];
    out.iterations = s.iterations;
    out.sampling = s.sampling;
    out.seed = s.seed;
    out.threads = s.threads;
    return out;
}

rust::String describe() { return imhost::itk::description(); }

}  // namespace imhost_itk
