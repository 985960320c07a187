// A C++ host built against the installed imhost::cpp target.
#include <iostream>
#include <vector>

#include "imhost.hpp"

int main(int argc, char** argv) {
    imhost::Context ctx;
    imhost::Registry registry(ctx);
    std::vector<float> data{1, 5, 2, 4, 3, 6};
    std::vector<double> times{0, 1};
    const imhost::Shape shape{3, 1, 1, 2};
    auto view = imhost::View::four_d(data.data(), shape, imhost::nifti_strides(shape), imhost::Geometry{},
                                     imhost::Span<const double>(times.data(), times.size()));
    imhost::ModelResult result = registry.run(ctx, "mip", view);
    auto mip = result.volume("mip");
    const float* m = mip ? static_cast<const float*>(mip->c().data) : nullptr;
    if (!m || m[0] != 4 || m[1] != 5 || m[2] != 6) {
        std::cerr << "consumer_cpp: wrong MIP\n";
        return 1;
    }
    // The installed default CNN through the installed model worker (bin/imhost-model-worker,
    // which finds LibTorch through its rpath; this program never loads it).
    if (argc > 1) {
        imhost::Model cnn(ctx, argv[1], "cpu");
        if (cnn.manifest_json().find("perfusion-cnn-phantom") == std::string::npos) {
            std::cerr << "consumer_cpp: unexpected CNN manifest\n";
            return 1;
        }
    }
    std::cout << "consumer_cpp: imhost " << imhost::version() << " through imhost::cpp ok\n";
    return 0;
}
