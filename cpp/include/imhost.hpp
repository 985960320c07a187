// imhost.hpp — header-only C++17 wrapper over the imhost C API (include/imhost.h).
//
// - Move-only RAII handles (Context, Volume, CancelToken, Model, Registry, ModelResult,
//   PerfusionResult) over the opaque C handles; moving leaves the source empty; destructors
//   free; using an emptied (moved-from) handle throws an Error (IMH_STATUS_NULL_ARGUMENT).
// - Every failing C status becomes an imhost::Error carrying the status and the library's
//   message.
// - Buffers are exposed as Span<T> (a pointer and a length; std::span is C++20).
// - Callbacks are std::function. No C++ exception ever crosses into the library: an exception
//   thrown by a progress callback cancels the operation and is rethrown to the caller once the
//   C call has returned; one thrown by a log callback is swallowed (logging must never fail an
//   operation).
//
// Research use only: not a medical device.
#ifndef IMHOST_HPP
#define IMHOST_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "imhost.h"

namespace imhost {

/// An imhost call failed. `status()` is the C status; `what()` the library's one-line message.
class Error : public std::runtime_error {
public:
    Error(imh_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
    imh_status status() const noexcept { return status_; }
    /// "IMH_STATUS_FORMAT" etc.
    const char* status_name() const noexcept { return imh_status_name(static_cast<uint32_t>(status_)); }

private:
    imh_status status_;
};

namespace detail {
inline void check(imh_status status) {
    if (status != IMH_STATUS_OK) {
        throw Error(status, imh_last_error_message());
    }
}

/// Throw for a handle that was moved from (or never held one).
template <class T>
inline T* require(T* ptr, const char* what) {
    if (ptr == nullptr) throw Error(IMH_STATUS_NULL_ARGUMENT, std::string(what) + " on an empty (moved-from) object");
    return ptr;
}
}  // namespace detail

/// The library's version string, e.g. "0.1.0".
inline std::string_view version() noexcept { return imh_version(); }

/// A non-owning view of contiguous elements.
template <class T>
class Span {
public:
    constexpr Span() noexcept = default;
    constexpr Span(T* data, std::size_t size) noexcept : data_(data), size_(size) {}
    constexpr T* data() const noexcept { return data_; }
    constexpr std::size_t size() const noexcept { return size_; }
    constexpr bool empty() const noexcept { return size_ == 0; }
    constexpr T& operator[](std::size_t i) const noexcept { return data_[i]; }
    constexpr T* begin() const noexcept { return data_; }
    constexpr T* end() const noexcept { return data_ + size_; }

private:
    T* data_ = nullptr;
    std::size_t size_ = 0;
};

/// Pixel types (values of IMH_DTYPE_*).
enum class DType : uint32_t {
    U8 = IMH_DTYPE_U8,
    I16 = IMH_DTYPE_I16,
    U16 = IMH_DTYPE_U16,
    I32 = IMH_DTYPE_I32,
    F32 = IMH_DTYPE_F32,
    F64 = IMH_DTYPE_F64,
};

/// The DType of a C++ element type.
template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<uint8_t>() { return DType::U8; }
template <> constexpr DType dtype_of<int16_t>() { return DType::I16; }
template <> constexpr DType dtype_of<uint16_t>() { return DType::U16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<double>() { return DType::F64; }

using Shape = std::array<int64_t, 4>;
using Strides = std::array<int64_t, 4>;
using Matrix4 = std::array<double, 16>;

/// Strides (in elements) of a buffer in NIfTI order: i fastest, t slowest. This is also the
/// layout of a C array declared [nt][nk][nj][ni], of VTK/ITK image buffers, and of a NumPy
/// array of shape (t, k, j, i).
inline Strides nifti_strides(const Shape& shape) {
    return {1, shape[0], shape[0] * shape[1], shape[0] * shape[1] * shape[2]};
}

/// Placement in the patient, LPS millimetres (see imh_geometry).
struct Geometry {
    std::array<double, 3> spacing{1.0, 1.0, 1.0};
    std::array<double, 3> origin{0.0, 0.0, 0.0};
    std::array<double, 9> direction{1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0};

    imh_geometry c() const {
        imh_geometry g{};
        for (int n = 0; n < 3; ++n) {
            g.spacing[n] = spacing[n];
            g.origin[n] = origin[n];
        }
        for (int n = 0; n < 9; ++n) g.direction[n] = direction[n];
        return g;
    }

    static Geometry from_c(const imh_geometry& g) {
        Geometry out;
        for (int n = 0; n < 3; ++n) {
            out.spacing[n] = g.spacing[n];
            out.origin[n] = g.origin[n];
        }
        for (int n = 0; n < 9; ++n) out.direction[n] = g.direction[n];
        return out;
    }

    /// 3D Slicer's IJKToRASMatrix (row-major 4×4), also the NIfTI affine.
    Matrix4 ijk_to_ras() const {
        Matrix4 m{};
        imh_geometry g = c();
        detail::check(imh_geometry_to_ijk_to_ras(&g, m.data()));
        return m;
    }

    /// From 3D Slicer's IJKToRASMatrix (row-major 4×4) or a NIfTI affine.
    static Geometry from_ijk_to_ras(const Matrix4& m) {
        imh_geometry g{};
        detail::check(imh_geometry_from_ijk_to_ras(m.data(), &g));
        return from_c(g);
    }
};

/// A borrowed 3-D or 4-D image (see imh_view): the pixels stay where they are. The caller keeps
/// the buffer (and the frame times) alive while the view is used.
class View {
public:
    /// A 4-D view over `data` with the given shape, element strides and frame times (seconds,
    /// one per frame; may be empty if unknown).
    template <class T>
    static View four_d(const T* data, const Shape& shape, const Strides& strides, const Geometry& geometry,
                       Span<const double> frame_times) {
        if (!frame_times.empty() && static_cast<int64_t>(frame_times.size()) != shape[3]) {
            throw Error(IMH_STATUS_SHAPE, "View::four_d: frame_times has " + std::to_string(frame_times.size()) +
                                              " values for " + std::to_string(shape[3]) + " frames");
        }
        return View(data, dtype_of<T>(), 4, shape, strides, geometry, frame_times.empty() ? nullptr : frame_times.data());
    }

    /// A 3-D view (shape[3] and strides[3] are ignored).
    template <class T>
    static View three_d(const T* data, const Shape& shape, const Strides& strides, const Geometry& geometry) {
        return View(data, dtype_of<T>(), 3, shape, strides, geometry, nullptr);
    }

    /// Wrap a C view as it is.
    explicit View(const imh_view& v) : view_(v) {}

    const imh_view& c() const noexcept { return view_; }
    DType dtype() const noexcept { return static_cast<DType>(view_.dtype); }
    int ndim() const noexcept { return static_cast<int>(view_.ndim); }
    Shape shape() const noexcept { return {view_.shape[0], view_.shape[1], view_.shape[2], view_.shape[3]}; }
    Strides strides() const noexcept { return {view_.strides[0], view_.strides[1], view_.strides[2], view_.strides[3]}; }
    Geometry geometry() const { return Geometry::from_c(view_.geometry); }
    /// Frame times in seconds (empty for 3-D views or when unknown).
    Span<const double> frame_times() const noexcept {
        if (view_.ndim != 4 || view_.frame_times == nullptr) return {};
        return {view_.frame_times, static_cast<std::size_t>(view_.shape[3])};
    }

    /// The element at (i, j, k, t); T must match dtype() (checked).
    template <class T>
    T at(int64_t i, int64_t j, int64_t k, int64_t t = 0) const {
        if (dtype_of<T>() != dtype()) throw Error(IMH_STATUS_DATA_TYPE, "View::at: element type does not match the view's dtype");
        const int64_t offset = i * view_.strides[0] + j * view_.strides[1] + k * view_.strides[2] +
                               (view_.ndim == 4 ? t * view_.strides[3] : 0);
        return static_cast<const T*>(view_.data)[offset];
    }

private:
    View(const void* data, DType dtype, uint32_t ndim, const Shape& shape, const Strides& strides, const Geometry& g,
         const double* times) {
        view_.data = data;
        view_.dtype = static_cast<imh_dtype>(dtype);
        view_.ndim = ndim;
        for (int a = 0; a < 4; ++a) {
            view_.shape[a] = shape[a];
            view_.strides[a] = strides[a];
        }
        view_.geometry = g.c();
        view_.frame_times = times;
    }
    imh_view view_{};
};

/// Log severities (values of IMH_LOG_*).
enum class LogLevel : uint32_t { Error = IMH_LOG_ERROR, Warn = IMH_LOG_WARN, Info = IMH_LOG_INFO, Debug = IMH_LOG_DEBUG, Trace = IMH_LOG_TRACE };

class Volume;

/// Owns an imh_context: the log callback and the entry point for file I/O.
class Context {
public:
    using LogFn = std::function<void(LogLevel, std::string_view target, std::string_view message)>;

    Context() { detail::check(imh_context_new(&ptr_)); }
    ~Context() { imh_context_free(ptr_); }
    Context(Context&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)), logs_(std::move(other.logs_)) {}
    Context& operator=(Context&& other) noexcept {
        if (this != &other) {
            imh_context_free(ptr_);
            ptr_ = std::exchange(other.ptr_, nullptr);
            logs_ = std::move(other.logs_);
        }
        return *this;
    }
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;

    /// Receive log records of `max_level` and more severe; an empty function stops logging.
    /// The callback runs on the thread that calls into imhost.
    void set_log_callback(LogFn callback, LogLevel max_level = LogLevel::Info) {
        auto holder = callback ? std::make_unique<LogFn>(std::move(callback)) : nullptr;
        detail::check(imh_context_set_log_callback(ptr_, holder ? &Context::log_trampoline : nullptr, holder.get(),
                                                   static_cast<imh_log_level>(max_level)));
        // Calls already running on other threads keep the previous callback, so every callback
        // installed lives as long as the context.
        if (holder) logs_.push_back(std::move(holder));
    }

    /// Worker threads of this context's operations, LibTorch's included (0: one per core).
    void set_threads(uint32_t threads) { detail::check(imh_context_set_threads(ptr_, threads)); }

    /// The most an operation of this context may allocate, in bytes (0: the system's limits).
    void set_memory_limit(uint64_t bytes) { detail::check(imh_context_set_memory_limit(ptr_, bytes)); }

    /// Read a NIfTI file (.nii, .nii.gz).
    Volume read(const std::string& path) const;
    /// Read the CT series in a folder of DICOM files (imh_volume_read_dicom_folder).
    Volume read_dicom_folder(const std::string& dir) const;
    /// Read a CT series from DICOM instances in memory, borrowed for the call
    /// (imh_volume_read_dicom): e.g. what an Orthanc plugin holds.
    Volume read_dicom(const std::vector<imh_buffer>& instances) const;

    imh_context* c() const noexcept { return ptr_; }

private:
    static void log_trampoline(void* user, imh_log_level level, const char* target, const char* message) {
        try {
            (*static_cast<LogFn*>(user))(static_cast<LogLevel>(level), target, message);
        } catch (...) {
            // Logging must never fail an operation, and must never unwind into the library.
        }
    }
    imh_context* ptr_ = nullptr;
    std::vector<std::unique_ptr<LogFn>> logs_;
};

/// Owns an imh_volume: an image held by the library.
class Volume {
public:
    /// Adopt a C handle (takes ownership).
    explicit Volume(imh_volume* ptr) noexcept : ptr_(ptr) {}
    ~Volume() { imh_volume_free(ptr_); }
    Volume(Volume&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
    Volume& operator=(Volume&& other) noexcept {
        if (this != &other) {
            imh_volume_free(ptr_);
            ptr_ = std::exchange(other.ptr_, nullptr);
        }
        return *this;
    }
    Volume(const Volume&) = delete;
    Volume& operator=(const Volume&) = delete;

    /// Copy a borrowed view into a library-owned volume.
    static Volume copy_of(const Context& context, const View& view) {
        imh_volume* out = nullptr;
        detail::check(imh_volume_from_view(context.c(), &view.c(), &out));
        return Volume(out);
    }

    /// The volume's pixels and geometry, valid while the volume lives.
    View view() const {
        imh_view v{};
        detail::check(imh_volume_get_view(ptr_, &v));
        return View(v);
    }

    /// All voxels in NIfTI order (i fastest); T must match the dtype (checked).
    template <class T>
    Span<const T> data() const {
        View v = view();
        if (dtype_of<T>() != v.dtype()) throw Error(IMH_STATUS_DATA_TYPE, "Volume::data: element type does not match the volume's dtype");
        const Shape s = v.shape();
        return {static_cast<const T*>(v.c().data), static_cast<std::size_t>(s[0] * s[1] * s[2] * s[3])};
    }

    /// Write as NIfTI (.nii, .nii.gz), atomically.
    void write(const Context& context, const std::string& path) const {
        detail::check(imh_volume_write(context.c(), ptr_, path.c_str()));
    }

    imh_volume* c() const noexcept { return ptr_; }
    explicit operator bool() const noexcept { return ptr_ != nullptr; }

private:
    imh_volume* ptr_ = nullptr;
};

inline Volume Context::read(const std::string& path) const {
    imh_volume* out = nullptr;
    detail::check(imh_volume_read(ptr_, path.c_str(), &out));
    return Volume(out);
}

inline Volume Context::read_dicom_folder(const std::string& dir) const {
    imh_volume* out = nullptr;
    detail::check(imh_volume_read_dicom_folder(ptr_, dir.c_str(), &out));
    return Volume(out);
}

inline Volume Context::read_dicom(const std::vector<imh_buffer>& instances) const {
    imh_volume* out = nullptr;
    detail::check(imh_volume_read_dicom(ptr_, instances.data(), instances.size(), &out));
    return Volume(out);
}

/// Owns an imh_cancel_token. cancel() may be called from any thread while an operation runs.
class CancelToken {
public:
    CancelToken() { detail::check(imh_cancel_token_new(&ptr_)); }
    ~CancelToken() { imh_cancel_token_free(ptr_); }
    CancelToken(CancelToken&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
    CancelToken& operator=(CancelToken&& other) noexcept {
        if (this != &other) {
            imh_cancel_token_free(ptr_);
            ptr_ = std::exchange(other.ptr_, nullptr);
        }
        return *this;
    }
    CancelToken(const CancelToken&) = delete;
    CancelToken& operator=(const CancelToken&) = delete;

    void cancel() const { detail::check(imh_cancel_token_cancel(ptr_)); }
    void reset() const { detail::check(imh_cancel_token_reset(ptr_)); }
    bool cancelled() const noexcept { return imh_cancel_token_is_cancelled(ptr_); }
    const imh_cancel_token* c() const noexcept { return ptr_; }

private:
    imh_cancel_token* ptr_ = nullptr;
};

/// Progress and cancellation for one operation.
struct RunOptions {
    /// Called with the fraction done (0..1) and the stage name; return false to cancel.
    std::function<bool(double fraction, std::string_view stage)> progress;
    /// Watched for cancellation (may be null).
    const CancelToken* cancel = nullptr;
    /// Time limit in seconds (0: the model's own); an isolated plugin over it is stopped and the
    /// call throws an Error with IMH_STATUS_TIMED_OUT.
    double timeout_s = 0.0;
};

namespace detail {
struct ProgressState {
    const RunOptions* options;
    std::exception_ptr error;
};

inline bool progress_trampoline(void* user, double fraction, const char* stage) {
    auto* state = static_cast<ProgressState*>(user);
    try {
        return state->options->progress(fraction, stage);
    } catch (...) {
        state->error = std::current_exception();
        return false;  // stop the operation; the exception is rethrown after the call
    }
}

/// Call a C operation with the options wired in; rethrow a callback's exception, else check.
template <class Call>
void run_with_options(const RunOptions& options, Call&& call) {
    ProgressState state{&options, nullptr};
    imh_run_options c_options{};
    c_options.struct_size = sizeof c_options;
    c_options.progress = options.progress ? &progress_trampoline : nullptr;
    c_options.progress_user_data = &state;
    c_options.cancel = options.cancel ? options.cancel->c() : nullptr;
    c_options.timeout_s = options.timeout_s;
    imh_status status = call(&c_options);
    if (state.error) std::rethrow_exception(state.error);
    check(status);
}
}  // namespace detail

/// Temporal maximum intensity projection of a 4-D view (see imh_mip).
inline Volume mip(const Context& context, const View& input, const RunOptions& options = {}) {
    imh_volume* out = nullptr;
    detail::run_with_options(options, [&](const imh_run_options* o) { return imh_mip(context.c(), &input.c(), o, &out); });
    return Volume(out);
}

/// Write a borrowed view as NIfTI without copying it first.
inline void write(const Context& context, const View& view, const std::string& path) {
    detail::check(imh_view_write(context.c(), &view.c(), path.c_str()));
}


/// Owns an imh_model: a model folder (manifest + sha256-verified weights) loaded once onto a
/// device and reused across calls. Move-only.
class Model {
public:
    /// Load `dir`. `device`: "auto", "cpu", "cuda", "cuda:N" or empty (IMHOST_DEVICE, else auto);
    /// `precision`: IMH_MODEL_PRECISION_* (half precisions need CUDA).
    Model(const Context& context, const std::string& dir, const std::string& device = {},
          imh_model_precision precision = IMH_MODEL_PRECISION_F32) {
        imh_model_options o{};
        o.struct_size = sizeof o;
        o.precision = precision;
        o.device = device.empty() ? nullptr : device.c_str();
        detail::check(imh_model_load(context.c(), dir.c_str(), &o, &ptr_));
    }
    ~Model() { imh_model_free(ptr_); }
    Model(Model&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
    Model& operator=(Model&& other) noexcept {
        if (this != &other) {
            imh_model_free(ptr_);
            ptr_ = std::exchange(other.ptr_, nullptr);
        }
        return *this;
    }
    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;

    /// The manifest JSON (id, version, inputs, outputs with units, training data, sha256).
    std::string manifest_json() const { return imh_model_manifest_json(detail::require(ptr_, "Model::manifest_json")); }
    const imh_model* c() const noexcept { return ptr_; }

private:
    imh_model* ptr_ = nullptr;
};

/// Options of `perfusion()` (see imh_perfusion_options); defaults everywhere.
struct PerfusionOptions {
    imh_perfusion_method method = IMH_PERFUSION_METHOD_DEFAULT;
    /// Manual AIF voxel {i, j, k}; automatic when unset.
    std::optional<std::array<uint32_t, 3>> aif_voxel;
    std::optional<double> age;
    std::optional<double> nihss;
    bool bilateral_filter = true;
    double filter_sigma_mm = 0.0;  ///< 0: the library's default
    double filter_range_hu = 0.0;  ///< 0: the library's default
    /// The model of IMH_PERFUSION_METHOD_CNN (borrowed; must outlive the call).
    const Model* model = nullptr;
    /// Correct motion where it is found (needs `registration`); false: estimate and flag only.
    bool motion_correction = true;
    /// The host's rigid registration (see imh_rigid_registration_fn: called from worker
    /// threads, must be thread-safe and noexcept), e.g. `imhost::itk::registration_callback`
    /// from imhost_itk.hpp; nullptr: motion is estimated and flagged, not corrected.
    imh_rigid_registration_fn registration = nullptr;
    void* registration_user_data = nullptr;
    /// What `registration` is, for the report (borrowed; must outlive the call).
    const char* registration_name = nullptr;

    imh_perfusion_options c() const {
        imh_perfusion_options o{};
        o.struct_size = sizeof o;
        o.method = method;
        if (aif_voxel) {
            o.flags |= IMH_PERFUSION_MANUAL_AIF;
            for (int a = 0; a < 3; ++a) o.aif_voxel[a] = (*aif_voxel)[static_cast<std::size_t>(a)];
        }
        if (age) o.flags |= IMH_PERFUSION_HAS_AGE, o.age = *age;
        if (nihss) o.flags |= IMH_PERFUSION_HAS_NIHSS, o.nihss = *nihss;
        if (!bilateral_filter) o.flags |= IMH_PERFUSION_NO_FILTER;
        o.filter_sigma_mm = filter_sigma_mm;
        o.filter_range_hu = filter_range_hu;
        o.model = model ? model->c() : nullptr;
        if (!motion_correction) o.flags |= IMH_PERFUSION_NO_MOTION_CORRECTION;
        o.registration = registration;
        o.registration_user_data = registration_user_data;
        o.registration_name = registration_name;
        return o;
    }
};

/// Owns an imh_perfusion_result: maps, masks and the JSON report. Research use only.
class PerfusionResult {
public:
    explicit PerfusionResult(imh_perfusion_result* ptr) noexcept : ptr_(ptr) {}
    ~PerfusionResult() { imh_perfusion_result_free(ptr_); }
    PerfusionResult(PerfusionResult&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
    PerfusionResult& operator=(PerfusionResult&& other) noexcept {
        if (this != &other) {
            imh_perfusion_result_free(ptr_);
            ptr_ = std::exchange(other.ptr_, nullptr);
        }
        return *this;
    }
    PerfusionResult(const PerfusionResult&) = delete;
    PerfusionResult& operator=(const PerfusionResult&) = delete;

    /// One output (IMH_PERFUSION_CBF ... IMH_PERFUSION_BRAIN_MASK), valid while this result lives.
    View view(imh_perfusion_output which) const {
        imh_view v{};
        detail::check(imh_volume_get_view(borrow(which), &v));
        return View(v);
    }

    /// Write one output as NIfTI.
    void write(const Context& context, imh_perfusion_output which, const std::string& path) const {
        detail::check(imh_volume_write(context.c(), borrow(which), path.c_str()));
    }

    /// report.json as text.
    std::string report_json() const {
        return imh_perfusion_result_report_json(detail::require(ptr_, "PerfusionResult::report_json"));
    }

    const imh_perfusion_result* c() const noexcept { return ptr_; }

private:
    const imh_volume* borrow(imh_perfusion_output which) const {
        const imh_volume* v = nullptr;
        detail::check(imh_perfusion_result_volume(detail::require(ptr_, "PerfusionResult::view"), which, &v));
        return v;
    }
    imh_perfusion_result* ptr_ = nullptr;
};

/// Run the classical perfusion pipeline on a 4-D view in HU (see imh_perfusion_run).
inline PerfusionResult perfusion(const Context& context, const View& input, const PerfusionOptions& options = {},
                                 const RunOptions& run = {}) {
    imh_perfusion_result* out = nullptr;
    const imh_perfusion_options c_options = options.c();
    detail::run_with_options(run, [&](const imh_run_options* o) {
        return imh_perfusion_run(context.c(), &input.c(), &c_options, o, &out);
    });
    return PerfusionResult(out);
}

/// CBF, CBV, MTT, Tmax and delay of each tissue curve against one arterial input, all sampled at
/// `times` (see imh_perfusion_curves; curves of another length throw imhost::Error).
inline std::vector<imh_curve_perfusion> perfusion_curves(const Context& context, const std::vector<double>& aif,
                                                         const std::vector<std::vector<double>>& tissue,
                                                         const std::vector<double>& times,
                                                         imh_perfusion_method method = IMH_PERFUSION_METHOD_DEFAULT,
                                                         bool constants = true, uint32_t baseline_frames = 0) {
    std::vector<double> flat;
    flat.reserve(tissue.size() * times.size());
    for (std::size_t c = 0; c < tissue.size(); ++c) {
        if (tissue[c].size() != times.size()) {
            throw Error(IMH_STATUS_INVALID_ARGUMENT, "tissue curve " + std::to_string(c + 1) + " has " +
                                                         std::to_string(tissue[c].size()) + " samples, the times " +
                                                         std::to_string(times.size()));
        }
        flat.insert(flat.end(), tissue[c].begin(), tissue[c].end());
    }
    if (aif.size() != times.size()) {
        throw Error(IMH_STATUS_INVALID_ARGUMENT, "the arterial input has " + std::to_string(aif.size()) +
                                                     " samples, the times " + std::to_string(times.size()));
    }
    imh_curve_options o{};
    o.struct_size = sizeof o;
    o.method = method;
    o.flags = constants ? 0u : IMH_CURVES_NO_CONSTANTS;
    o.baseline_frames = baseline_frames;
    std::vector<imh_curve_perfusion> out(tissue.size());
    detail::check(imh_perfusion_curves(context.c(), aif.data(), flat.data(), tissue.size(), times.size(), times.data(),
                                       &o, out.data()));
    return out;
}

/// What to score in score_segmentation (see imh_score_options).
struct ScoreOptions {
    /// Score only voxels equal to this label; empty: every non-zero voxel.
    std::optional<double> label;
    /// Also the surface distances (HD, HD95, ASSD, MASD, NSD).
    bool surface = true;
    /// NSD tolerance τ in mm.
    double tolerance_mm = 1.0;
};

/// Overlap and surface distances of a predicted label map against the truth, two 3-D views on
/// the same grid (see imh_score_segmentation; NaN where undefined, +inf next to an empty mask).
inline imh_segmentation_scores score_segmentation(const Context& context, const View& prediction, const View& truth,
                                                  const ScoreOptions& options = {}) {
    imh_score_options o{};
    o.struct_size = sizeof o;
    o.flags = (options.label ? IMH_SCORE_LABEL : 0u) | (options.surface ? IMH_SCORE_SURFACE : 0u);
    o.label = options.label.value_or(0.0);
    o.tolerance_mm = options.tolerance_mm;
    imh_segmentation_scores out{};
    out.struct_size = sizeof out;
    detail::check(imh_score_segmentation(context.c(), &prediction.c(), &truth.c(), &o, &out));
    return out;
}

/// Owns an imh_model_result: what one registry run produced — volumes (maps, label maps) by
/// name, scores, and the JSON summary. Research use only.
class ModelResult {
public:
    explicit ModelResult(imh_model_result* ptr) noexcept : ptr_(ptr) {}
    ~ModelResult() { imh_model_result_free(ptr_); }
    ModelResult(ModelResult&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
    ModelResult& operator=(ModelResult&& other) noexcept {
        if (this != &other) {
            imh_model_result_free(ptr_);
            ptr_ = std::exchange(other.ptr_, nullptr);
        }
        return *this;
    }
    ModelResult(const ModelResult&) = delete;
    ModelResult& operator=(const ModelResult&) = delete;

    /// Number of volumes.
    std::size_t volume_count() const { return imh_model_result_volume_count(detail::require(ptr_, "ModelResult::volume_count")); }

    /// Volume `index`: its output name and pixels (valid while this result lives).
    std::pair<std::string, View> volume(std::size_t index) const {
        const char* name = nullptr;
        const imh_volume* v = nullptr;
        detail::check(imh_model_result_volume(detail::require(ptr_, "ModelResult::volume"), index, &name, &v));
        imh_view view{};
        detail::check(imh_volume_get_view(v, &view));
        return {name, View(view)};
    }

    /// The volume called `name`, if the model produced it.
    std::optional<View> volume(std::string_view name) const {
        for (std::size_t i = 0, n = volume_count(); i < n; ++i) {
            auto [found, view] = volume(i);
            if (found == name) return view;
        }
        return std::nullopt;
    }

    /// The score called `name`, if the model produced it (a withheld score is absent).
    std::optional<double> score(const std::string& name) const {
        double value = 0.0;
        imh_status s = imh_model_result_score(detail::require(ptr_, "ModelResult::score"), name.c_str(), &value);
        if (s == IMH_STATUS_INVALID_ARGUMENT) return std::nullopt;
        detail::check(s);
        return value;
    }

    /// `{"scores": {...}, "volumes": [...], "report": ...}`.
    std::string json() const { return imh_model_result_json(detail::require(ptr_, "ModelResult::json")); }

    const imh_model_result* c() const noexcept { return ptr_; }

private:
    imh_model_result* ptr_ = nullptr;
};

/// Where the registry looks for models besides the built-in ones (see imh_registry_options).
struct RegistryOptions {
    /// Plugin libraries, model package folders or folders of them.
    std::vector<std::string> paths;
    /// Also IMHOST_PLUGIN_PATH and ~/.local/share/imhost/plugins.
    bool standard_locations = false;
    /// Run every native plugin in a worker process.
    bool isolate_all = false;
    /// Device of learned models ("cpu", "cuda", …; empty: IMHOST_DEVICE, then auto).
    std::string device;
    /// The host's rigid registration for the perfusion models (see imh_rigid_registration_fn),
    /// e.g. `imhost::itk::registration_callback`; nullptr: motion is estimated and flagged.
    imh_rigid_registration_fn registration = nullptr;
    void* registration_user_data = nullptr;
    /// What `registration` is, for reports (borrowed; must outlive the registry).
    const char* registration_name = nullptr;
};

/// Owns an imh_registry: every model a host can run — built in, learned, packaged, plugins —
/// listed, described and run the same way.
class Registry {
public:
    explicit Registry(const Context& context, const RegistryOptions& options = {}) {
        std::vector<const char*> paths;
        for (const auto& p : options.paths) paths.push_back(p.c_str());
        imh_registry_options o{};
        o.struct_size = sizeof o;
        o.standard_locations = options.standard_locations;
        o.isolate_all = options.isolate_all;
        o.paths = paths.empty() ? nullptr : paths.data();
        o.n_paths = paths.size();
        o.device = options.device.empty() ? nullptr : options.device.c_str();
        o.registration = options.registration;
        o.registration_user_data = options.registration_user_data;
        o.registration_name = options.registration_name;
        detail::check(imh_registry_open(context.c(), &o, &ptr_));
    }
    ~Registry() { imh_registry_free(ptr_); }
    Registry(Registry&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
    Registry& operator=(Registry&& other) noexcept {
        if (this != &other) {
            imh_registry_free(ptr_);
            ptr_ = std::exchange(other.ptr_, nullptr);
        }
        return *this;
    }
    Registry(const Registry&) = delete;
    Registry& operator=(const Registry&) = delete;

    /// `{"models": [manifest, …], "problems": [{"path", "message"}, …]}`.
    std::string list_json() const { return imh_registry_list_json(detail::require(ptr_, "Registry::list_json")); }

    /// The manifest of model `id` (throws for an unknown id; the message lists the known ones).
    std::string manifest_json(const std::string& id) const {
        const char* out = nullptr;
        detail::check(imh_registry_manifest_json(detail::require(ptr_, "Registry::manifest_json"), id.c_str(), &out));
        return out;
    }

    /// Run model `id` on `inputs` (in the manifest's order, read in place) with `options_json`
    /// (a JSON object; empty: defaults).
    ModelResult run(const Context& context, const std::string& id, const std::vector<View>& inputs,
                    const std::string& options_json = {}, const RunOptions& run = {}) const {
        std::vector<imh_view> views;
        views.reserve(inputs.size());
        for (const auto& v : inputs) views.push_back(v.c());
        imh_model_result* out = nullptr;
        detail::run_with_options(run, [&](const imh_run_options* o) {
            return imh_registry_run(context.c(), detail::require(ptr_, "Registry::run"), id.c_str(),
                                    views.empty() ? nullptr : views.data(), views.size(),
                                    options_json.empty() ? nullptr : options_json.c_str(), o, &out);
        });
        return ModelResult(out);
    }

    /// Run a model that takes one input.
    ModelResult run(const Context& context, const std::string& id, const View& input, const std::string& options_json = {},
                    const RunOptions& run = {}) const {
        return this->run(context, id, std::vector<View>{input}, options_json, run);
    }

    const imh_registry* c() const noexcept { return ptr_; }

private:
    imh_registry* ptr_ = nullptr;
};

/// Owns an imh_dicom_results: one run's results as DICOM instances (Parametric Maps,
/// Segmentations, a TID 1500 measurement report, the preview), linked to the source series.
class DicomResults {
public:
    /// One instance, borrowed from the results (valid while they live).
    struct Instance {
        std::string_view file_name;
        Span<const uint8_t> bytes;
    };

    explicit DicomResults(imh_dicom_results* ptr) noexcept : ptr_(ptr) {}
    ~DicomResults() { imh_dicom_results_free(ptr_); }
    DicomResults(DicomResults&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
    DicomResults& operator=(DicomResults&& other) noexcept {
        if (this != &other) {
            imh_dicom_results_free(ptr_);
            ptr_ = std::exchange(other.ptr_, nullptr);
        }
        return *this;
    }
    DicomResults(const DicomResults&) = delete;
    DicomResults& operator=(const DicomResults&) = delete;

    std::size_t size() const { return imh_dicom_results_count(detail::require(ptr_, "DicomResults::size")); }

    /// Instance `index`: its file name and Part 10 bytes.
    Instance operator[](std::size_t index) const {
        const uint8_t* data = nullptr;
        std::size_t size = 0;
        const char* name = nullptr;
        detail::check(imh_dicom_results_instance(detail::require(ptr_, "DicomResults::operator[]"), index, &data, &size, &name));
        return {name, {data, size}};
    }

    /// `{"instances": [{output, kind, file_name, sop_class_uid, sop_instance_uid, series_instance_uid}], "skipped": [...]}`.
    std::string json() const { return imh_dicom_results_json(detail::require(ptr_, "DicomResults::json")); }

    /// Write every instance into `dir` (created if missing).
    void write(const Context& context, const std::string& dir) const {
        detail::check(imh_dicom_results_write(context.c(), detail::require(ptr_, "DicomResults::write"), dir.c_str()));
    }

    const imh_dicom_results* c() const noexcept { return ptr_; }

private:
    imh_dicom_results* ptr_ = nullptr;
};

namespace detail {
inline imh_buffer preview_buffer(const std::vector<uint8_t>& png) { return imh_buffer{png.data(), png.size()}; }
}  // namespace detail

/// A model result as DICOM, linked to `source` (a volume read from DICOM; any other starts a new
/// study). `options_json`: {"uid_root", "uid_seed", "content_date", "content_time",
/// "first_series_number"}, empty for defaults; `preview_png` empty for none.
inline DicomResults to_dicom(const Context& context, const ModelResult& result, const Volume& source,
                             const std::string& options_json = {}, const std::vector<uint8_t>& preview_png = {}) {
    imh_dicom_results* out = nullptr;
    imh_buffer preview = detail::preview_buffer(preview_png);
    detail::check(imh_model_result_to_dicom(context.c(), result.c(), source.c(), options_json.empty() ? nullptr : options_json.c_str(),
                                            preview_png.empty() ? nullptr : &preview, &out));
    return DicomResults(out);
}

/// A perfusion result as DICOM (see the ModelResult overload).
inline DicomResults to_dicom(const Context& context, const PerfusionResult& result, const Volume& source,
                             const std::string& options_json = {}, const std::vector<uint8_t>& preview_png = {}) {
    imh_dicom_results* out = nullptr;
    imh_buffer preview = detail::preview_buffer(preview_png);
    detail::check(imh_perfusion_result_to_dicom(context.c(), result.c(), source.c(),
                                                options_json.empty() ? nullptr : options_json.c_str(),
                                                preview_png.empty() ? nullptr : &preview, &out));
    return DicomResults(out);
}

}  // namespace imhost

#endif  // IMHOST_HPP
