// The MultiResUNet nuclei model through the C ABI as Slicer's and Orthanc's plugins run it: the
// registry finds the multiresunet-nuclei model folder, runs it in imhost-model-worker on a
// phantom's one-slice NIfTI, and the nucleus label map must overlap the phantom's truth
// (Dice computed here by hand); a 4-D input is refused with a status and a message.
//
//   test_nuclei MODEL_DIR PHANTOM_DIR SERIES_4D

#include <cstdint>
#include <iostream>
#include <string>

#include "check.hpp"
#include "imhost.hpp"

namespace {

/// Voxel (i, j, 0) of a 3-D u8 view, by its strides.
std::uint8_t at(const imh_view& v, std::int64_t i, std::int64_t j) {
    return static_cast<const std::uint8_t*>(v.data)[i * v.strides[0] + j * v.strides[1]];
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::cerr << "usage: " << argv[0] << " MODEL_DIR PHANTOM_DIR SERIES_4D\n";
        return 2;
    }
    try {
        imhost::Context ctx;
        imhost::RegistryOptions options;
        options.paths.push_back(argv[1]);
        imhost::Registry registry(ctx, options);
        CHECK(registry.list_json().find("\"multiresunet-nuclei\"") != std::string::npos);
        const std::string manifest = registry.manifest_json("multiresunet-nuclei");
        CHECK(manifest.find("\"probability\"") != std::string::npos);
        CHECK(manifest.find("\"isolated\": true") != std::string::npos || manifest.find("\"isolated\":true") != std::string::npos);

        const std::string dir = argv[2];
        imhost::Volume image = ctx.read(dir + "/000.nii.gz");
        imhost::Volume truth = ctx.read(dir + "/000_mask.nii.gz");
        imhost::ModelResult result = registry.run(ctx, "multiresunet-nuclei", image.view());
        const auto mask = result.volume("mask");
        CHECK(mask.has_value());
        CHECK(result.score("objects").value_or(0) > 0);
        CHECK(result.json().find("research_use_only") != std::string::npos);
        if (mask) {
            const imh_view p = mask->c();
            const imh_view t = truth.view().c();
            CHECK(p.dtype == IMH_DTYPE_U8 && t.dtype == IMH_DTYPE_U8);
            CHECK(p.shape[0] == t.shape[0] && p.shape[1] == t.shape[1] && p.shape[2] == 1);
            double tp = 0, both = 0;
            for (std::int64_t j = 0; j < p.shape[1]; ++j) {
                for (std::int64_t i = 0; i < p.shape[0]; ++i) {
                    const bool a = at(p, i, j) != 0, b = at(t, i, j) != 0;
                    tp += (a && b) ? 1 : 0;
                    both += (a ? 1 : 0) + (b ? 1 : 0);
                }
            }
            const double dice = both > 0 ? 2 * tp / both : 0;
            std::cout << "multiresunet-nuclei through the C ABI: Dice " << dice << " against the phantom's truth\n";
            CHECK(dice > 0.7);
        }
        // A 4-D input is refused before anything runs.
        imhost::Volume series = ctx.read(argv[3]);
        expect_error(IMH_STATUS_SHAPE, [&] { registry.run(ctx, "multiresunet-nuclei", series.view()); });
    } catch (const std::exception& e) {
        std::cerr << "unexpected exception: " << e.what() << "\n";
        ++failures;
    }
    std::cout << "nuclei through the C ABI: " << checks << " checks, " << failures << " failed\n";
    return failures != 0;
}
