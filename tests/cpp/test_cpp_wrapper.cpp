// The C++ wrapper (cpp/include/imhost.hpp), run under valgrind by ctest.
//
//   test_cpp_wrapper MUST_FAIL_DIR TMP_DIR
//
// Writes a 4-D float volume from a C++ buffer, reads it back, runs the MIP, checks values
// against a maximum computed here and geometry against what was written; then RAII and move
// semantics, status → exception mapping, exceptions thrown from callbacks, cancellation.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "check.hpp"
#include "imhost.hpp"

namespace {

constexpr int64_t NI = 6, NJ = 5, NK = 4, NT = 7;

float value_at(int64_t i, int64_t j, int64_t k, int64_t t) {
    // Peaks at a frame that depends on the voxel; negative and fractional values on purpose.
    const int64_t peak = (3 * i + j + 2 * k) % NT;
    return static_cast<float>(0.25 * static_cast<double>(i - 2 * j + 3 * k) - (t == peak ? -40.5 : 0.5 * static_cast<double>(t)));
}

imhost::Geometry oblique() {
    imhost::Geometry g;
    const double a = -0.4;  // about x
    g.spacing = {0.8, 0.8, 3.0};
    g.origin = {12.5, -7.0, 101.0};
    g.direction = {1.0, 0.0, 0.0, 0.0, std::cos(a), -std::sin(a), 0.0, std::sin(a), std::cos(a)};
    return g;
}

void test_read_mip_write(const std::string& tmp) {
    imhost::Context ctx;
    std::vector<std::string> log;
    ctx.set_log_callback([&](imhost::LogLevel level, std::string_view, std::string_view message) {
        if (level <= imhost::LogLevel::Info) log.emplace_back(message);
    });

    // A C-ordered [i][j][k][t] array (t fastest), as NumPy would hand it over.
    std::vector<float> buffer(static_cast<size_t>(NI * NJ * NK * NT));
    for (int64_t i = 0; i < NI; ++i)
        for (int64_t j = 0; j < NJ; ++j)
            for (int64_t k = 0; k < NK; ++k)
                for (int64_t t = 0; t < NT; ++t) buffer[static_cast<size_t>(((i * NJ + j) * NK + k) * NT + t)] = value_at(i, j, k, t);
    const std::vector<double> times{0.0, 2.0, 4.0, 6.0, 9.0, 12.0, 20.0};
    const imhost::Geometry geometry = oblique();
    const auto view = imhost::View::four_d(buffer.data(), {NI, NJ, NK, NT}, {NJ * NK * NT, NK * NT, NT, 1}, geometry,
                                           imhost::Span<const double>(times.data(), times.size()));

    const std::string path = tmp + "/cpp_ctp.nii.gz";
    imhost::write(ctx, view, path);
    imhost::Volume volume = ctx.read(path);
    const imhost::View read = volume.view();
    CHECK(read.dtype() == imhost::DType::F32);
    CHECK(read.ndim() == 4);
    CHECK((read.shape() == imhost::Shape{NI, NJ, NK, NT}));
    CHECK(read.frame_times().size() == times.size());
    for (size_t n = 0; n < times.size() && n < read.frame_times().size(); ++n) CHECK(read.frame_times()[n] == times[n]);
    int wrong = 0;
    for (int64_t i = 0; i < NI; ++i)
        for (int64_t j = 0; j < NJ; ++j)
            for (int64_t k = 0; k < NK; ++k)
                for (int64_t t = 0; t < NT; ++t)
                    if (read.at<float>(i, j, k, t) != value_at(i, j, k, t)) ++wrong;
    CHECK(wrong == 0);
    // The Slicer matrix of what was read equals that of what was written (float32 precision).
    const auto m_read = read.geometry().ijk_to_ras();
    const auto m_written = geometry.ijk_to_ras();
    for (size_t n = 0; n < 16; ++n) CHECK(std::abs(m_read[n] - m_written[n]) < 1e-4);

    std::vector<double> fractions;
    imhost::RunOptions options;
    options.progress = [&](double fraction, std::string_view stage) {
        fractions.push_back(fraction);
        return !stage.empty();
    };
    imhost::Volume mip = imhost::mip(ctx, view, options);  // straight from the caller's buffer
    CHECK(!fractions.empty() && fractions.back() == 1.0);
    const imhost::View projected = mip.view();
    CHECK(projected.ndim() == 3);
    wrong = 0;
    for (int64_t i = 0; i < NI; ++i)
        for (int64_t j = 0; j < NJ; ++j)
            for (int64_t k = 0; k < NK; ++k) {
                float expected = value_at(i, j, k, 0);
                for (int64_t t = 1; t < NT; ++t) expected = std::max(expected, value_at(i, j, k, t));
                if (projected.at<float>(i, j, k) != expected) ++wrong;
            }
    CHECK(wrong == 0);
    const auto values = mip.data<float>();
    CHECK(values.size() == static_cast<size_t>(NI * NJ * NK));
    CHECK(values[0] == projected.at<float>(0, 0, 0));
    mip.write(ctx, tmp + "/cpp_mip.nii");
    CHECK(!log.empty() && log.back().find("temporal MIP done") != std::string::npos);

    // Copy of a view: independent of the caller's buffer.
    imhost::Volume copy = imhost::Volume::copy_of(ctx, view);
    buffer[0] = 1e6f;
    CHECK(copy.view().at<float>(0, 0, 0, 0) == value_at(0, 0, 0, 0));
}

void test_move_semantics() {
    imhost::Context a;
    imh_context* raw = a.c();
    imhost::Context b(std::move(a));
    CHECK(a.c() == nullptr && b.c() == raw);  // NOLINT(bugprone-use-after-move): checking the moved-from state
    imhost::Context c;
    c = std::move(b);  // frees c's own context, adopts b's
    CHECK(c.c() == raw && b.c() == nullptr);

    std::vector<int16_t> data{1, 5, 3, 2};
    const std::vector<double> times{0.0, 1.0};
    auto view = imhost::View::four_d(data.data(), {2, 1, 1, 2}, imhost::nifti_strides({2, 1, 1, 2}), imhost::Geometry{},
                                     imhost::Span<const double>(times.data(), times.size()));
    imhost::Volume v1 = imhost::mip(c, view);
    imhost::Volume v2(std::move(v1));
    CHECK(!v1 && v2);  // NOLINT(bugprone-use-after-move)
    CHECK(v2.data<int16_t>()[0] == 3 && v2.data<int16_t>()[1] == 5);
    v1 = std::move(v2);
    CHECK(v1 && !v2);  // NOLINT(bugprone-use-after-move)
    imhost::CancelToken t1;
    imhost::CancelToken t2(std::move(t1));
    CHECK(t1.c() == nullptr && t2.c() != nullptr);  // NOLINT(bugprone-use-after-move)
}

void test_errors(const std::string& must_fail) {
    imhost::Context ctx;
    const std::string message = expect_error(IMH_STATUS_FORMAT, [&] { ctx.read(must_fail + "/truncated.nii.gz"); });
    CHECK(message.find("truncated") != std::string::npos);
    expect_error(IMH_STATUS_IO, [&] { ctx.read(must_fail + "/no-such-file.nii"); });
    expect_error(IMH_STATUS_UNSUPPORTED, [&] { ctx.read(must_fail + "/five-d.nii"); });

    std::vector<float> data(8, 0.0f);
    const std::vector<double> times{0.0, 1.0};
    const imhost::Span<const double> t(times.data(), times.size());
    auto good = imhost::View::four_d(data.data(), {2, 2, 1, 2}, imhost::nifti_strides({2, 2, 1, 2}), imhost::Geometry{}, t);
    expect_error(IMH_STATUS_SHAPE, [&] {
        imhost::View::four_d(data.data(), {2, 2, 1, 3}, imhost::nifti_strides({2, 2, 1, 3}), imhost::Geometry{}, t);
    });
    imhost::Geometry flat;
    flat.spacing[2] = 0.0;
    expect_error(IMH_STATUS_GEOMETRY, [&] {
        imhost::mip(ctx, imhost::View::four_d(data.data(), {2, 2, 1, 2}, imhost::nifti_strides({2, 2, 1, 2}), flat, t));
    });
    expect_error(IMH_STATUS_SHAPE, [&] {
        imhost::mip(ctx, imhost::View::four_d(data.data(), {2, 2, 1, 2}, {1, 2, 4, -4}, imhost::Geometry{}, t));
    });
    expect_error(IMH_STATUS_SHAPE, [&] {
        imhost::mip(ctx, imhost::View::three_d(data.data(), {2, 2, 2, 1}, imhost::nifti_strides({2, 2, 2, 1}), imhost::Geometry{}));
    });
    imhost::Volume v = imhost::mip(ctx, good);
    expect_error(IMH_STATUS_DATA_TYPE, [&] { v.data<double>(); });
    expect_error(IMH_STATUS_INVALID_ARGUMENT, [&] { v.write(ctx, "/tmp/x.png"); });
    imhost::Matrix4 singular{};
    expect_error(IMH_STATUS_GEOMETRY, [&] { imhost::Geometry::from_ijk_to_ras(singular); });
}

void test_callbacks_and_cancellation() {
    imhost::Context ctx;
    std::vector<int16_t> data(static_cast<size_t>(256 * 256 * 4 * 3), 7);
    const std::vector<double> times{0.0, 1.0, 2.0};
    const imhost::Span<const double> t(times.data(), times.size());
    const imhost::Shape shape{256, 256, 4, 3};
    auto view = imhost::View::four_d(data.data(), shape, imhost::nifti_strides(shape), imhost::Geometry{}, t);

    // An exception thrown by the progress callback stops the run and reaches the caller intact.
    struct Stop : std::runtime_error {
        using std::runtime_error::runtime_error;
    };
    int calls = 0;
    imhost::RunOptions throwing;
    throwing.progress = [&](double, std::string_view) -> bool {
        if (++calls == 3) throw Stop("user pressed stop");
        return true;
    };
    ++checks;
    try {
        imhost::mip(ctx, view, throwing);
        ++failures;
        std::cerr << "the callback's exception was lost\n";
    } catch (const Stop& e) {
        if (std::string(e.what()) != "user pressed stop" || calls != 3) ++failures;
    }

    // Returning false cancels.
    imhost::RunOptions stopping;
    stopping.progress = [](double fraction, std::string_view) { return fraction < 0.2; };
    expect_error(IMH_STATUS_CANCELLED, [&] { imhost::mip(ctx, view, stopping); });

    // A token cancelled from another thread while the operation waits in its callback.
    imhost::CancelToken token;
    std::atomic<int> reports{0};
    std::atomic<bool> cancelled{false};
    imhost::RunOptions watched;
    watched.cancel = &token;
    watched.progress = [&](double, std::string_view) {
        if (++reports == 2) {
            while (!cancelled.load()) std::this_thread::yield();
        }
        return true;
    };
    std::thread canceller([&] {
        while (reports.load() < 2) std::this_thread::yield();
        token.cancel();
        cancelled = true;
    });
    expect_error(IMH_STATUS_CANCELLED, [&] { imhost::mip(ctx, view, watched); });
    canceller.join();
    CHECK(reports.load() == 2);
    CHECK(token.cancelled());
    token.reset();
    CHECK(!token.cancelled());
    CHECK(imhost::mip(ctx, view, watched).data<int16_t>()[0] == 7);

    // A throwing log callback does not disturb the operation.
    ctx.set_log_callback([](imhost::LogLevel, std::string_view, std::string_view) { throw std::runtime_error("log sink broken"); },
                         imhost::LogLevel::Trace);
    CHECK(imhost::mip(ctx, view).data<int16_t>()[0] == 7);
}

}  // namespace


// The perfusion pipeline through the wrapper: a study built here (artery + tissue with gamma-variate
// enhancement) whose CBV has a closed form; outputs, report, move semantics and an error path.
void test_perfusion(const std::string& tmp) {
    constexpr int64_t ni = 20, nj = 20, nk = 2, nt = 40;
    auto gamma = [](double t, double t0) {
        const double x = (t - t0) / 4.5;
        return t <= t0 ? 0.0 : x * x * x * std::exp(3.0 * (1.0 - x));
    };
    std::vector<int16_t> data(static_cast<size_t>(ni * nj * nk * nt));
    std::vector<double> times(static_cast<size_t>(nt));
    double tissue_area = 0.0, aif_area = 0.0;
    for (int64_t t = 0; t < nt; ++t) {
        times[static_cast<size_t>(t)] = static_cast<double>(t);
        tissue_area += std::round(30.0 + 25.0 * gamma(static_cast<double>(t), 10.0)) - 30.0;
        aif_area += std::round(40.0 + 400.0 * gamma(static_cast<double>(t), 8.0)) - 40.0;
        for (int64_t n = 0; n < ni * nj * nk; ++n) {
            const int64_t i = n % ni, j = (n / ni) % nj;
            const bool artery = i >= 3 && i < 7 && j >= 3 && j < 7;
            const double hu = artery ? 40.0 + 400.0 * gamma(static_cast<double>(t), 8.0) : 30.0 + 25.0 * gamma(static_cast<double>(t), 10.0);
            data[static_cast<size_t>(n + t * ni * nj * nk)] = static_cast<int16_t>(std::lround(hu));
        }
    }
    imhost::Geometry g{};
    g.spacing[2] = 5.0;
    const auto view = imhost::View::four_d(data.data(), {ni, nj, nk, nt}, imhost::nifti_strides({ni, nj, nk, nt}), g,
                                           imhost::Span<const double>(times.data(), times.size()));
    imhost::Context ctx;
    imhost::PerfusionOptions options;
    options.method = IMH_PERFUSION_METHOD_TIKHONOV;
    options.bilateral_filter = false;
    options.age = 85.0;
    options.nihss = 12.0;
    int reports = 0;
    imhost::RunOptions run;
    run.progress = [&](double, std::string_view) { ++reports; return true; };
    imhost::PerfusionResult result = imhost::perfusion(ctx, view, options, run);
    CHECK(reports >= 1);
    const imhost::View cbv = result.view(IMH_PERFUSION_CBV);
    CHECK(cbv.dtype() == imhost::DType::F32);
    const double expected = (0.55 / 0.75) / 1.05 * 100.0 * tissue_area / aif_area;
    const double got = static_cast<const float*>(cbv.c().data)[15 + ni * 15];
    CHECK(std::fabs(got - expected) < 0.03 * expected);
    CHECK(result.view(IMH_PERFUSION_HYPOPERFUSION).dtype() == imhost::DType::U8);
    const std::string report = result.report_json();
    CHECK(report.find("\"research_use_only\": true") != std::string::npos);
    CHECK(report.find("\"method\": \"tikhonov\"") != std::string::npos);
    CHECK(report.find("age 85") != std::string::npos);
    result.write(ctx, IMH_PERFUSION_CBF, tmp + "/cpp_cbf.nii.gz");
    imhost::Volume back = ctx.read(tmp + "/cpp_cbf.nii.gz");
    CHECK(back.view().dtype() == imhost::DType::F32);
    imhost::PerfusionResult moved(std::move(result));
    CHECK(result.c() == nullptr && moved.c() != nullptr);  // NOLINT(bugprone-use-after-move)
    expect_error(IMH_STATUS_INVALID_ARGUMENT, [&] { moved.view(42); });
    // A moved-from result throws instead of handing a NULL to std::string.
    expect_error(IMH_STATUS_NULL_ARGUMENT, [&] { (void)result.report_json(); });  // NOLINT(bugprone-use-after-move)
    expect_error(IMH_STATUS_NULL_ARGUMENT, [&] { (void)result.view(IMH_PERFUSION_CBF); });  // NOLINT(bugprone-use-after-move)
    imhost::PerfusionOptions outside;
    outside.aif_voxel = std::array<uint32_t, 3>{99, 0, 0};
    expect_error(IMH_STATUS_INVALID_ARGUMENT, [&] { imhost::perfusion(ctx, view, outside); });

    // The CNN through a Model loaded once (the PyTorch-made fixture).
    imhost::Model model(ctx, IMHOST_FIXTURES "/unet-tiny", "cpu");
    CHECK(model.manifest_json().find("\"unet-tiny\"") != std::string::npos);
    imhost::PerfusionOptions cnn;
    cnn.method = IMH_PERFUSION_METHOD_CNN;
    cnn.model = &model;
    imhost::PerfusionResult r = imhost::perfusion(ctx, view, cnn);
    CHECK(r.report_json().find("\"method\": \"cnn\"") != std::string::npos);
    CHECK(r.view(IMH_PERFUSION_TTP).dtype() == imhost::DType::F32);
    expect_error(IMH_STATUS_UNSUPPORTED, [&] { r.view(IMH_PERFUSION_TMAX); });
    imhost::Model moved_model(std::move(model));
    CHECK(model.c() == nullptr && moved_model.c() != nullptr);  // NOLINT(bugprone-use-after-move)
    expect_error(IMH_STATUS_IO, [&] { imhost::Model(ctx, IMHOST_FIXTURES "/no-such-model"); });
    expect_error(IMH_STATUS_NULL_ARGUMENT, [&] { (void)model.manifest_json(); });  // NOLINT(bugprone-use-after-move)
}

// The registry through the wrapper: built-in models listed and run, results by name, threads
// and memory limits of the context.
void test_registry() {
    imhost::Context ctx;
    ctx.set_threads(2);
    imhost::Registry registry(ctx);
    CHECK(registry.list_json().find("\"perfusion-osvd\"") != std::string::npos);
    CHECK(registry.manifest_json("mip").find("\"mip\"") != std::string::npos);
    expect_error(IMH_STATUS_INVALID_ARGUMENT, [&] { (void)registry.manifest_json("no-such-model"); });
    const int64_t ni = 5, nj = 4, nk = 3, nt = 6;
    std::vector<float> data(static_cast<size_t>(ni * nj * nk * nt));
    std::vector<double> times;
    for (int64_t t = 0; t < nt; ++t) times.push_back(static_cast<double>(t));
    for (size_t n = 0; n < data.size(); ++n) data[n] = static_cast<float>((n * 37) % 101);
    const imhost::Shape shape{ni, nj, nk, nt};
    const auto view = imhost::View::four_d(data.data(), shape, imhost::nifti_strides(shape), imhost::Geometry{},
                                           imhost::Span<const double>(times.data(), times.size()));
    imhost::ModelResult result = registry.run(ctx, "mip", view);
    CHECK(result.volume_count() == 1);
    auto found = result.volume("mip");
    CHECK(found.has_value() && !result.volume("nothing").has_value());
    if (found) {
        // The maximum over time, computed here.
        bool all = true;
        for (int64_t v = 0; v < ni * nj * nk; ++v) {
            float m = data[static_cast<size_t>(v)];
            for (int64_t t = 1; t < nt; ++t) m = std::max(m, data[static_cast<size_t>(v + t * ni * nj * nk)]);
            all = all && static_cast<const float*>(found->c().data)[v] == m;
        }
        CHECK(all);
    }
    CHECK(!result.score("anything").has_value());
    CHECK(result.json().find("\"volumes\"") != std::string::npos);
    expect_error(IMH_STATUS_INVALID_ARGUMENT, [&] { registry.run(ctx, "mip", std::vector<imhost::View>{}); });
    ctx.set_memory_limit(64);
    expect_error(IMH_STATUS_TOO_LARGE, [&] { registry.run(ctx, "mip", view); });
    ctx.set_memory_limit(0);
    imhost::ModelResult moved(std::move(result));
    expect_error(IMH_STATUS_NULL_ARGUMENT, [&] { (void)result.json(); });  // NOLINT(bugprone-use-after-move)
    imhost::Registry other(std::move(registry));
    expect_error(IMH_STATUS_NULL_ARGUMENT, [&] { (void)registry.list_json(); });  // NOLINT(bugprone-use-after-move)
    CHECK(other.list_json().find("\"mip\"") != std::string::npos);
}

// DICOM from a folder and from memory (pydicom's real CT series): the same volume.
void test_dicom() {
    const std::string folder = IMHOST_PYDICOM_DATA "/dicomdirtests/98892001/CT5N";
    imhost::Context ctx;
    imhost::Volume a = ctx.read_dicom_folder(folder);
    std::vector<std::vector<char>> files;
    for (const char* name : {"2062", "2392", "2693", "3023", "3353"}) {
        std::FILE* f = std::fopen((folder + "/" + name).c_str(), "rb");
        CHECK(f != nullptr);
        if (!f) return;
        std::vector<char> bytes;
        char chunk[65536];
        for (size_t n; (n = std::fread(chunk, 1, sizeof chunk, f)) > 0;) bytes.insert(bytes.end(), chunk, chunk + n);
        std::fclose(f);
        files.push_back(std::move(bytes));
    }
    std::vector<imh_buffer> buffers;
    for (const auto& f : files) buffers.push_back(imh_buffer{f.data(), f.size()});
    imhost::Volume b = ctx.read_dicom(buffers);
    const imh_view va = a.view().c();
    const imh_view vb = b.view().c();
    CHECK(va.shape[2] == 5 && vb.shape[2] == 5 && va.dtype == vb.dtype);
    CHECK(std::equal(va.shape, va.shape + 4, vb.shape));
    buffers[2].size = 100;
    expect_error(IMH_STATUS_FORMAT, [&] { ctx.read_dicom(buffers); });
    expect_error(IMH_STATUS_INVALID_ARGUMENT, [&] { ctx.read_dicom({}); });
}

// Curves, not heads: a gamma-variate input and a 4 s box residue of flow 0.01 /s (CBF 60
// ml/100 ml/min, CBV 4 ml/100 ml) by quadrature; CBV is an area ratio, so within 0.05 + 3 %.
void test_perfusion_curves() {
    imhost::Context ctx;
    auto aif = [](double t) {
        const double s = t - 10.0;
        return s <= 0.0 ? 0.0 : 400.0 * std::pow(s / 8.0, 3) * std::exp(3.0 * (1.0 - s / 8.0));
    };
    std::vector<double> times, a, c;
    for (int m = 0; m < 60; ++m) {
        const double t = m;
        times.push_back(t);
        a.push_back(aif(t));
        double sum = 0.0;
        for (double u = std::max(0.0, t - 4.0); u < t; u += 0.01) sum += aif(u) * 0.01;
        c.push_back(0.01 * sum);
    }
    const auto r = imhost::perfusion_curves(ctx, a, {c, c}, times, IMH_PERFUSION_METHOD_NLR, false);
    CHECK(r.size() == 2);
    CHECK(std::abs(r[0].cbv - 4.0) <= 0.05 + 0.12);
    CHECK(std::abs(r[0].cbf - 60.0) <= 6.0);
    CHECK(r[0].cbf == r[1].cbf && std::abs(r[0].mtt - 60.0 * r[0].cbv / r[0].cbf) < 1e-9);
    expect_error(IMH_STATUS_INVALID_ARGUMENT, [&] { imhost::perfusion_curves(ctx, a, {{1.0, 2.0}}, times); });
    expect_error(IMH_STATUS_INVALID_ARGUMENT,
                 [&] { imhost::perfusion_curves(ctx, std::vector<double>(60, 5.0), {c}, times); });
}

// A 4×4×4 cube against itself moved one 2 mm slice along k (scored by hand as in
// rust/imhost/tests/score.rs): Dice 48/64, HD 2 mm; label 2 predicted nowhere.
void test_score_segmentation() {
    imhost::Context ctx;
    const int64_t n = 10;
    std::vector<uint8_t> pred(n * n * n, 0);
    std::vector<int16_t> truth(n * n * n, 0);
    auto in_cube = [](int64_t i, int64_t j, int64_t k, int64_t k0) {
        return i >= 2 && i < 6 && j >= 2 && j < 6 && k >= k0 && k < k0 + 4;
    };
    for (int64_t k = 0; k < n; ++k)
        for (int64_t j = 0; j < n; ++j)
            for (int64_t i = 0; i < n; ++i) {
                const int64_t at = i + n * (j + n * k);
                pred[at] = in_cube(i, j, k, 3) ? 1 : 0;
                truth[at] = in_cube(i, j, k, 2) ? 1 : 0;
            }
    truth[8 + n * (8 + n * 8)] = 2;
    imhost::Geometry g;
    g.spacing = {1.0, 1.0, 2.0};
    const imhost::Shape shape{n, n, n, 1};
    const auto p = imhost::View::three_d(pred.data(), shape, imhost::nifti_strides(shape), g);
    const auto t = imhost::View::three_d(truth.data(), shape, imhost::nifti_strides(shape), g);
    imhost::ScoreOptions one;
    one.label = 1.0;
    const auto s = imhost::score_segmentation(ctx, p, t, one);
    CHECK(s.true_positives == 48 && s.false_positives == 16 && s.false_negatives == 16);
    CHECK(s.dice == 0.75 && s.has_surface == 1 && s.hd == 2.0 && s.hd95 == 2.0);
    CHECK(std::abs(s.nsd - 80.0 / 112.0) < 1e-12);
    imhost::ScoreOptions two;
    two.label = 2.0;
    const auto e = imhost::score_segmentation(ctx, p, t, two);
    CHECK(e.empty == IMH_SCORE_EMPTY_PREDICTION && e.dice == 0.0 && std::isinf(e.hd95) && std::isnan(e.precision));
    imhost::Geometry moved = g;
    moved.origin = {0.0, 0.0, 4.0};
    const auto m = imhost::View::three_d(truth.data(), shape, imhost::nifti_strides(shape), moved);
    expect_error(IMH_STATUS_GEOMETRY, [&] { imhost::score_segmentation(ctx, p, m); });
}

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: " << argv[0] << " MUST_FAIL_DIR TMP_DIR\n";
        return 2;
    }
    try {
        CHECK(imhost::version() == std::to_string(IMH_VERSION_MAJOR) + "." + std::to_string(IMH_VERSION_MINOR) + "." +
                                       std::to_string(IMH_VERSION_PATCH));
        test_read_mip_write(argv[2]);
        test_move_semantics();
        test_errors(argv[1]);
        test_registry();
        test_callbacks_and_cancellation();
        test_perfusion(argv[2]);
        test_dicom();
        test_perfusion_curves();
        test_score_segmentation();
    } catch (const std::exception& e) {
        std::cerr << "unexpected exception: " << e.what() << "\n";
        ++failures;
    }
    std::cout << "C++ wrapper: " << checks << " checks, " << failures << " failed\n";
    return failures != 0;
}
