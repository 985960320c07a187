// DICOM results through the C++ wrapper and the C ABI, under valgrind: a perfusion phantom's
// DICOM series read from a folder, perfusion and a registry model run on it, their results as
// DICOM instances (counts, JSON, same bytes for the same UIDs), a Parametric Map read back by
// the library from memory equal to the map bit for bit, and the error paths.
//
//   test_dicom_results PHANTOM_DICOM_DIR TMP_DIR

#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "check.hpp"
#include "imhost.hpp"

namespace {

const char* FIXED = R"({"uid_seed": "cpp", "content_date": "20260101", "content_time": "120000"})";

std::vector<uint8_t> bytes_of(const imhost::DicomResults::Instance& instance) {
    return {instance.bytes.begin(), instance.bytes.end()};
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: " << argv[0] << " PHANTOM_DICOM_DIR TMP_DIR\n";
        return 2;
    }
    try {
        imhost::Context ctx;
        imhost::Volume study = ctx.read_dicom_folder(argv[1]);
        imhost::PerfusionResult perfusion = imhost::perfusion(ctx, study.view());
        imhost::DicomResults a = imhost::to_dicom(ctx, perfusion, study, FIXED);
        imhost::DicomResults b = imhost::to_dicom(ctx, perfusion, study, FIXED);
        // oSVD: six maps, three label maps (lesions, hypoperfusion, brain), the report, the
        // run's own preview, and the CTP average as a CT series of one image per slice.
        const auto slices = static_cast<std::size_t>(study.view().shape()[2]);
        CHECK(a.size() == 11 + slices);
        CHECK(a.json().find("\"sc_preview.dcm\"") != std::string::npos);
        CHECK(a.json().find("\"reference_image\"") != std::string::npos);
        CHECK(a.json().find("\"ct_average_001.dcm\"") != std::string::npos);
        CHECK(a.json().find("\"sr_report.dcm\"") != std::string::npos);
        CHECK(a.json().find("\"segmentation\"") != std::string::npos);
        for (std::size_t n = 0; n < a.size() && n < b.size(); ++n) {
            CHECK(a[n].file_name == b[n].file_name);
            CHECK(bytes_of(a[n]) == bytes_of(b[n]));
            CHECK(a[n].bytes.size() > 132 && std::memcmp(a[n].bytes.data() + 128, "DICM", 4) == 0);
        }
        // The CBF map, read back by the library from memory, equals the result's map.
        std::size_t cbf = a.size();
        for (std::size_t n = 0; n < a.size(); ++n)
            if (a[n].file_name == "pm_cbf.dcm") cbf = n;
        CHECK(cbf < a.size());
        if (cbf < a.size()) {
            imhost::Volume back = ctx.read_dicom({imh_buffer{a[cbf].bytes.data(), a[cbf].bytes.size()}});
            const imh_view got = back.view().c();
            const imh_view want = perfusion.view(IMH_PERFUSION_CBF).c();
            CHECK(got.dtype == IMH_DTYPE_F32 && want.dtype == IMH_DTYPE_F32);
            CHECK(std::equal(got.shape, got.shape + 3, want.shape));
            const std::size_t count = static_cast<std::size_t>(want.shape[0] * want.shape[1] * want.shape[2]);
            CHECK(std::memcmp(got.data, want.data, count * sizeof(float)) == 0);
        }
        a.write(ctx, std::string(argv[2]) + "/dicom-results");
        // A registry model's result: the MIP as a Parametric Map, the report and the CTP average.
        imhost::Registry registry(ctx);
        imhost::ModelResult mip = registry.run(ctx, "mip", study.view());
        imhost::DicomResults m = imhost::to_dicom(ctx, mip, study);
        CHECK(m.size() == 2 + slices);
        // Errors: options, index, moved-from objects, NULL handles.
        expect_error(IMH_STATUS_INVALID_ARGUMENT, [&] { imhost::to_dicom(ctx, mip, study, "{\"uid_root\": \"1.02\"}"); });
        expect_error(IMH_STATUS_INVALID_ARGUMENT, [&] { imhost::to_dicom(ctx, mip, study, "{\"colour\": 1}"); });
        expect_error(IMH_STATUS_INVALID_ARGUMENT, [&] { imhost::to_dicom(ctx, mip, study, "not json"); });
        expect_error(IMH_STATUS_FORMAT, [&] { imhost::to_dicom(ctx, mip, study, {}, std::vector<uint8_t>{1, 2, 3}); });
        expect_error(IMH_STATUS_INVALID_ARGUMENT, [&] { (void)m[2 + slices]; });
        imhost::DicomResults moved(std::move(m));
        expect_error(IMH_STATUS_NULL_ARGUMENT, [&] { (void)m.size(); });  // NOLINT(bugprone-use-after-move)
        CHECK(moved.size() == 2 + slices);
        imh_dicom_results* out = nullptr;
        CHECK(imh_perfusion_result_to_dicom(ctx.c(), nullptr, study.c(), nullptr, nullptr, &out) == IMH_STATUS_NULL_ARGUMENT);
        CHECK(imh_model_result_to_dicom(ctx.c(), mip.c(), study.c(), nullptr, nullptr, nullptr) == IMH_STATUS_NULL_ARGUMENT);
        CHECK(out == nullptr);
        CHECK(imh_dicom_results_count(nullptr) == 0);
        CHECK(imh_dicom_results_json(nullptr) == nullptr);
        imh_dicom_results_free(nullptr);
    } catch (const std::exception& e) {
        std::cerr << "unexpected exception: " << e.what() << "\n";
        ++failures;
    }
    std::cout << "DICOM results: " << checks << " checks, " << failures << " failed\n";
    return failures != 0;
}
