// imhost — motion correction from the host's own ITK (header-only, C++17, ITK 5.2 or later).
//
// libimhost links no ITK. A host that has one (3D Slicer ships ITK 5.4) supplies rigid
// registration to the perfusion pipeline with this header, so that no second ITK enters its
// process:
//
//     imh_perfusion_options o = {sizeof o};
//     imhost::itk::use_for_motion_correction(o);      // or PerfusionOptions::registration
//
// The same code is the `imhost` command's registration (rust/itk-sys, against Debian's ITK).
// Research use only.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "imhost.h"
#include "itkCenteredTransformInitializer.h"
#include "itkEuler3DTransform.h"
#include "itkImage.h"
#include "itkImageRegistrationMethodv4.h"
#include "itkLinearInterpolateImageFunction.h"
#include "itkMeanSquaresImageToImageMetricv4.h"
#include "itkRegistrationParameterScalesFromPhysicalShift.h"
#include "itkRegularStepGradientDescentOptimizerv4.h"
#include "itkResampleImageFilter.h"
#include "itkVersion.h"

namespace imhost {
namespace itk {

/// Registration settings.
struct RigidSettings {
    /// Shrink factors of the pyramid levels, coarse to fine (0 ends the list).
    unsigned shrink[3] = {4, 2, 1};
    /// Gradient-descent iterations per level.
    unsigned iterations = 200;
    /// Fraction of voxels the metric samples (0 < f <= 1).
    double sampling = 0.25;
    /// Seed of the random sampling.
    unsigned seed = 7;
    /// ITK work units per registration (0: ITK's default, every core).
    unsigned threads = 0;

    /// The pyramid for a frame of `slices` slices handed over at about 2 mm, as the pipeline
    /// hands them: levels shrunk 4× and 2×, the frame's own resolution left out. On the
    /// 512×512×16×89 benchmark study (handed over at 1.8 mm) that level took 60 % of the time and
    /// did not improve the maps against the phantom's truth (BENCHMARKS.md); on the known-motion
    /// tests the error stays within 0.011 rad and 0.1 mm. Thin slabs cannot be shrunk 4× along
    /// k (ITK shrinks every axis alike): 2× and their own resolution.
    static RigidSettings for_slices(std::size_t slices) {
        RigidSettings s;
        if (slices < 16) {
            s.shrink[0] = 2, s.shrink[1] = 1, s.shrink[2] = 0;
        } else {
            s.shrink[0] = 4, s.shrink[1] = 2, s.shrink[2] = 0;
        }
        return s;
    }

    /// The settings imhost registers a frame of `size` voxels with (the pipeline hands the
    /// registration frames already shrunk to about 2 mm pixels, several at once from its own
    /// threads): those of `for_slices`; the metric sampling the fraction of every level that
    /// would be 12 000 voxels of the frame itself (25 % of a small frame, down to 2 % of a
    /// large one: about 1 500 voxels at the 2× level of a 128×128×16 frame); one work unit per
    /// registration.
    static RigidSettings for_grid(const std::size_t size[3]) {
        RigidSettings s = for_slices(size[2]);
        const double voxels = static_cast<double>(size[0]) * static_cast<double>(size[1]) * static_cast<double>(size[2]);
        s.sampling = std::min(0.25, std::max(0.02, 12000.0 / std::max(voxels, 1.0)));
        s.threads = 1;
        return s;
    }
};

/// The transform found (fixed → moving points: p' = R·(p − c) + c + t) and the final metric.
struct RigidTransform {
    double angles[3];       ///< Euler angles about x, y, z (rad)
    double translation[3];  ///< mm (LPS)
    double center[3];       ///< mm (LPS)
    double metric;          ///< metric value at the end
};

/// The grid both frames share (LPS: ITK's convention and imhost's).
struct Grid {
    std::size_t size[3];
    double spacing[3];
    double origin[3];
    double direction[9];  ///< row-major; columns are the index axes' unit vectors
};

namespace detail {
using Image = ::itk::Image<float, 3>;

inline Image::Pointer make_image(const float* data, const Grid& grid) {
    auto image = Image::New();
    Image::RegionType region;
    Image::SizeType size;
    Image::SpacingType spacing;
    Image::PointType origin;
    Image::DirectionType direction;
    for (unsigned a = 0; a < 3; ++a) {
        size[a] = grid.size[a];
        spacing[a] = grid.spacing[a];
        origin[a] = grid.origin[a];
        for (unsigned b = 0; b < 3; ++b) direction[a][b] = grid.direction[3 * a + b];
    }
    region.SetSize(size);
    image->SetRegions(region);
    image->SetSpacing(spacing);
    image->SetOrigin(origin);
    image->SetDirection(direction);
    image->Allocate();
    std::copy(data, data + grid.size[0] * grid.size[1] * grid.size[2], image->GetBufferPointer());
    return image;
}
}  // namespace detail

/// Rigid (Euler 3-D) registration of `moving` onto `fixed` (both on `grid`, voxels i fastest)
/// with ITK's v4 framework — mean squares on a random sample, regular-step gradient descent
/// with physical-shift scales, a multi-level pyramid — then linear resampling of `moving`
/// through the transform into `resampled` (−1024 HU outside the moved field of view). Throws
/// on failure (ITK's exceptions derive from std::exception).
inline RigidTransform register_rigid(const float* fixed_data, const float* moving_data, const Grid& grid,
                                     const RigidSettings& settings, float* resampled) {
    if (!fixed_data || !moving_data || !resampled) throw std::invalid_argument("a frame buffer is NULL");
    if (!(settings.sampling > 0.0 && settings.sampling <= 1.0)) throw std::invalid_argument("sampling must be in (0, 1]");
    using Image = detail::Image;
    auto fixed = detail::make_image(fixed_data, grid);
    auto moving = detail::make_image(moving_data, grid);

    using Transform = ::itk::Euler3DTransform<double>;
    using Metric = ::itk::MeanSquaresImageToImageMetricv4<Image, Image>;
    using Optimizer = ::itk::RegularStepGradientDescentOptimizerv4<double>;
    using Registration = ::itk::ImageRegistrationMethodv4<Image, Image, Transform>;

    auto transform = Transform::New();
    auto initializer = ::itk::CenteredTransformInitializer<Transform, Image, Image>::New();
    initializer->SetTransform(transform);
    initializer->SetFixedImage(fixed);
    initializer->SetMovingImage(moving);
    initializer->GeometryOn();
    initializer->InitializeTransform();

    auto metric = Metric::New();
    auto optimizer = Optimizer::New();
    auto scales = ::itk::RegistrationParameterScalesFromPhysicalShift<Metric>::New();
    scales->SetMetric(metric);
    optimizer->SetScalesEstimator(scales);
    // A modest first step (0.5 mm of physical shift): with 1 mm the optimizer left still,
    // noisy CT frames up to 1 mm off; with 0.25 mm and fast relaxation it stopped short of a
    // 3° rotation.
    optimizer->SetLearningRate(0.5);
    optimizer->SetMinimumStepLength(1e-3);
    optimizer->SetRelaxationFactor(0.7);
    optimizer->SetGradientMagnitudeTolerance(1e-8);
    optimizer->SetDoEstimateLearningRateOnce(false);
    optimizer->SetDoEstimateLearningRateAtEachIteration(false);
    optimizer->SetNumberOfIterations(settings.iterations);
    optimizer->SetReturnBestParametersAndValue(true);

    auto registration = Registration::New();
    registration->SetFixedImage(fixed);
    registration->SetMovingImage(moving);
    registration->SetMetric(metric);
    registration->SetOptimizer(optimizer);
    registration->SetInitialTransform(transform);
    registration->InPlaceOn();
    if (settings.threads > 0) {
        metric->SetMaximumNumberOfWorkUnits(settings.threads);
        optimizer->SetNumberOfWorkUnits(settings.threads);
        registration->SetNumberOfWorkUnits(settings.threads);
    }
    typename Registration::ShrinkFactorsArrayType shrink;
    typename Registration::SmoothingSigmasArrayType sigmas;
    unsigned levels = 0;
    for (unsigned l = 0; l < 3 && settings.shrink[l] > 0; ++l) ++levels;
    if (levels == 0) throw std::invalid_argument("at least one pyramid level is needed");
    shrink.SetSize(levels);
    sigmas.SetSize(levels);
    for (unsigned l = 0; l < levels; ++l) {
        shrink[l] = settings.shrink[l];
        sigmas[l] = settings.shrink[l] > 1 ? 0.5 * settings.shrink[l] : 0.0;
    }
    registration->SetNumberOfLevels(levels);
    registration->SetShrinkFactorsPerLevel(shrink);
    registration->SetSmoothingSigmasPerLevel(sigmas);
    registration->SetSmoothingSigmasAreSpecifiedInPhysicalUnits(false);
    registration->SetMetricSamplingStrategy(Registration::MetricSamplingStrategyEnum::RANDOM);
    registration->SetMetricSamplingPercentage(settings.sampling);
    registration->MetricSamplingReinitializeSeed(static_cast<int>(settings.seed));
    registration->Update();

    auto final_transform = registration->GetModifiableTransform();
    auto resample = ::itk::ResampleImageFilter<Image, Image>::New();
    resample->SetInput(moving);
    resample->SetTransform(final_transform);
    resample->SetUseReferenceImage(true);
    resample->SetReferenceImage(fixed);
    resample->SetDefaultPixelValue(-1024.0f);
    resample->SetInterpolator(::itk::LinearInterpolateImageFunction<Image, double>::New());
    if (settings.threads > 0) resample->SetNumberOfWorkUnits(settings.threads);
    resample->Update();
    const float* out = resample->GetOutput()->GetBufferPointer();
    std::copy(out, out + grid.size[0] * grid.size[1] * grid.size[2], resampled);

    RigidTransform result{};
    result.angles[0] = final_transform->GetAngleX();
    result.angles[1] = final_transform->GetAngleY();
    result.angles[2] = final_transform->GetAngleZ();
    const auto t = final_transform->GetTranslation();
    const auto c = final_transform->GetCenter();
    for (unsigned a = 0; a < 3; ++a) result.translation[a] = t[a], result.center[a] = c[a];
    result.metric = optimizer->GetValue();
    return result;
}

/// What this registration is, for the perfusion report.
inline const std::string& description() {
    static const std::string text = "ITK " + std::string(::itk::Version::GetITKVersion()) +
                                    " rigid (Euler3D, mean squares, regular-step gradient descent, pyramid)";
    return text;
}

/// An `imh_rigid_registration_fn` (user data unused): `register_rigid` with
/// `RigidSettings::for_grid`. Thread-safe (every call builds its own ITK objects); never
/// throws: a failure returns IMH_STATUS_INTERNAL, and the run fails naming this registration.
inline uint32_t registration_callback(void*, const float* fixed, const float* moving, const int64_t* shape,
                                      const imh_geometry* geometry, double* motion, float* resampled) noexcept {
    try {
        if (!shape || !geometry || !motion) return IMH_STATUS_NULL_ARGUMENT;
        Grid grid{};
        for (unsigned a = 0; a < 3; ++a) {
            if (shape[a] <= 0) return IMH_STATUS_SHAPE;
            grid.size[a] = static_cast<std::size_t>(shape[a]);
            grid.spacing[a] = geometry->spacing[a];
            grid.origin[a] = geometry->origin[a];
        }
        std::copy(geometry->direction, geometry->direction + 9, grid.direction);
        const RigidTransform t = register_rigid(fixed, moving, grid, RigidSettings::for_grid(grid.size), resampled);
        for (unsigned a = 0; a < 3; ++a) motion[a] = t.angles[a], motion[3 + a] = t.translation[a];
        return IMH_STATUS_OK;
    } catch (...) {
        return IMH_STATUS_INTERNAL;
    }
}

/// Have `options` correct motion with this ITK.
inline void use_for_motion_correction(imh_perfusion_options& options) {
    options.registration = &registration_callback;
    options.registration_user_data = nullptr;
    options.registration_name = description().c_str();
}

}  // namespace itk
}  // namespace imhost
