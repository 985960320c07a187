// The coronary-calcium model through the C ABI as Slicer's and Orthanc's plugins run it: the
// registry finds the cac-agatston model folder, runs the ensemble in imhost-model-worker on a
// phantom's DICOM series, and the result — the calcium label map, the Agatston, volume and
// category scores, the report and preview — becomes DICOM (SEG, SR, Secondary Capture). The
// scores must equal the command line's on the same series (one code path), and a contrast CT
// must come back without any score.
//
//   test_cac MODEL_DIR PHANTOM_DIR CLI_REPORT CONTRAST_PHANTOM_DIR

#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "check.hpp"
#include "imhost.hpp"

namespace {

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

/// The number after the first `"key": ` of a JSON text (serde_json writes an object's keys in
/// sorted order, so in report.json the first "agatston" is the total).
double first_number(const std::string& json, const std::string& key) {
    const std::size_t at = json.find("\"" + key + "\": ");
    if (at == std::string::npos) return NAN;
    return std::stod(json.substr(at + key.size() + 4));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) {
        std::cerr << "usage: " << argv[0] << " MODEL_DIR PHANTOM_DIR CLI_REPORT CONTRAST_PHANTOM_DIR\n";
        return 2;
    }
    try {
        imhost::Context ctx;
        imhost::RegistryOptions options;
        options.paths.push_back(argv[1]);
        imhost::Registry registry(ctx, options);
        CHECK(registry.list_json().find("\"cac-agatston\"") != std::string::npos);
        const std::string manifest = registry.manifest_json("cac-agatston");
        CHECK(manifest.find("\"calcium\"") != std::string::npos);
        CHECK(manifest.find("\"isolated\": true") != std::string::npos || manifest.find("\"isolated\":true") != std::string::npos);

        imhost::Volume study = ctx.read_dicom_folder(std::string(argv[2]) + "/dicom");
        imhost::ModelResult result = registry.run(ctx, "cac-agatston", study.view());
        const auto agatston = result.score("agatston");
        const auto category = result.score("category");
        CHECK(agatston.has_value() && category.has_value());
        const double cli = first_number(read_file(argv[3]), "agatston");
        CHECK(std::isfinite(cli));
        if (agatston) {
            CHECK(std::fabs(*agatston - cli) <= 1e-9 * std::max(1.0, cli));
            std::cout << "cac-agatston through the C ABI: Agatston " << *agatston << " (command line " << cli
                      << "), category index " << category.value_or(-1) << "\n";
        }
        const auto calcium = result.volume("calcium");
        CHECK(calcium.has_value());
        if (calcium) {
            const imh_view v = calcium->c();
            CHECK(v.dtype == IMH_DTYPE_U8);
            CHECK(v.shape[0] == study.view().c().shape[0] && v.shape[2] == study.view().c().shape[2]);
        }
        CHECK(result.json().find("research_use_only") != std::string::npos);
        imhost::DicomResults dicom = imhost::to_dicom(ctx, result, study);
        const std::string listing = dicom.json();
        CHECK(listing.find("\"sr_report.dcm\"") != std::string::npos);
        CHECK(listing.find("\"sc_preview.dcm\"") != std::string::npos);
        CHECK(listing.find("\"segmentation\"") != std::string::npos);

        // A contrast-enhanced CT: the run succeeds, the report says why, and no score is given.
        imhost::Volume contrast = ctx.read(std::string(argv[4]) + "/ct.nii.gz");
        imhost::ModelResult blocked = registry.run(ctx, "cac-agatston", contrast.view());
        CHECK(!blocked.score("agatston").has_value());
        CHECK(!blocked.score("category").has_value());
        CHECK(blocked.json().find("contrast medium") != std::string::npos);
        CHECK(blocked.json().find("\"valid\":false") != std::string::npos || blocked.json().find("\"valid\": false") != std::string::npos);

        // A run without its input is refused with a status and a message.
        expect_error(IMH_STATUS_INVALID_ARGUMENT, [&] { registry.run(ctx, "cac-agatston", std::vector<imhost::View>{}); });
    } catch (const std::exception& e) {
        std::cerr << "unexpected exception: " << e.what() << "\n";
        ++failures;
    }
    std::cout << "CAC through the C ABI: " << checks << " checks, " << failures << " failed\n";
    return failures != 0;
}
