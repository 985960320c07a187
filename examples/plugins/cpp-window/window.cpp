// Example imhost plugin in C++17 with the helper header cpp/include/imhost_plugin.hpp:
// intensity windowing (the display window of a CT as a [0, 1] map).
//
// Build: c++ -std=c++17 -O2 -shared -fPIC -fvisibility=hidden -I<imhost>/include
//            -I<imhost>/cpp/include window.cpp -o libexample_cpp_window.so
#include <algorithm>

#include "imhost_plugin.hpp"

namespace {

const char MANIFEST[] = R"json({
  "format": "imhost-manifest/1",
  "id": "example.cpp-window", "name": "Window (C++ example)", "version": "1.0.0", "licence": "Apache-2.0",
  "description": "clamp((x - (level - width/2)) / width, 0, 1): a CT display window as a map.",
  "inputs": [{"name": "image", "modality": "any", "dims": 3, "dtypes": ["f32"]}],
  "options": {
    "level": {"type": "number", "default": 40, "unit": "as input", "description": "window centre"},
    "width": {"type": "number", "default": 80, "minimum": 0.001, "unit": "as input", "description": "window width"}
  },
  "outputs": [
    {"name": "windowed", "kind": "map", "unit": "1"},
    {"name": "fraction_in_window", "kind": "score", "unit": "1", "description": "share of voxels inside the window"}
  ],
  "device": {"requires": "cpu"}
})json";

struct Window : imhost::plugin::Model {
    void run(imhost::plugin::Run &run) override {
        imhost::plugin::Tensor<float> in(run.input(0));
        const double level = run.number("level"), width = run.number("width");
        const double low = level - width / 2;
        auto out = run.output<float>("windowed", {in.size(0), in.size(1), in.size(2), 1});
        std::size_t inside = 0, total = 0;
        for (std::size_t k = 0; k < in.size(2); ++k) {
            run.progress(static_cast<double>(k) / static_cast<double>(in.size(2)), "windowing");
            for (std::size_t j = 0; j < in.size(1); ++j)
                for (std::size_t i = 0; i < in.size(0); ++i) {
                    const double v = (in(i, j, k) - low) / width;
                    out(i, j, k) = static_cast<float>(std::clamp(v, 0.0, 1.0));
                    inside += (v >= 0.0 && v <= 1.0);
                    ++total;
                }
        }
        run.score("fraction_in_window", static_cast<double>(inside) / static_cast<double>(total));
    }
};

const imhp_model MODELS[] = {imhost::plugin::model<Window>(MANIFEST)};

}  // namespace

IMHOST_PLUGIN("example-cpp-window", "1.0.0", MODELS)
