// LibTorch next to another PyTorch: a Slicer with SlicerPyTorch has a PyTorch of its own version
// in its process. This test loads LibTorch 2.10 (the CPU libraries of the PyTorch 2.10 wheel,
// what `import torch` maps) into the process with RTLD_GLOBAL first, then runs the perfusion CNN
// through the Perfusion Maps logic with the installed default weights. The CNN must run and
// give the command's maps (the library never loads LibTorch: the model runs in
// imhost-model-worker), and this process must still hold only the other LibTorch.
//   vtkSlicerPerfusionMapsCNNTest OTHER_LIBTORCH_CPU IMHOST_COMMAND PHANTOM_DIR WORK_DIR
#include <dlfcn.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <set>
#include <string>

#include <vtkImageData.h>
#include <vtkMRMLScalarVolumeNode.h>
#include <vtkMRMLScene.h>
#include <vtkNew.h>
#include <vtk_nlohmannjson.h>
#include VTK_NLOHMANN_JSON(json.hpp)

#include "imhost.hpp"
#include "vtkSlicerImhostTestUtils.h"
#include "vtkSlicerPerfusionMapsLogic.h"

using json = nlohmann::json;

namespace {
/// Every mapped file whose name contains `part`.
std::set<std::string> Mapped(const std::string& part) {
    std::ifstream maps("/proc/self/maps");
    std::set<std::string> out;
    for (std::string line; std::getline(maps, line);) {
        const std::size_t slash = line.find('/');
        if (slash != std::string::npos && line.find(part, slash) != std::string::npos) out.insert(line.substr(slash));
    }
    return out;
}
}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) {
        std::cerr << "usage: " << argv[0] << " OTHER_LIBTORCH_CPU IMHOST_COMMAND PHANTOM_DIR WORK_DIR\n";
        return 2;
    }
    const std::string other = argv[1], command = argv[2], phantom = argv[3], work = argv[4];
    void* torch = dlopen(other.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!torch) {
        std::cerr << "cannot load the other LibTorch: " << dlerror() << "\n";
        return 1;
    }
    CHECK(dlsym(torch, "_ZN3c1019UndefinedTensorImpl10_singletonE") != nullptr, "the other LibTorch's c10 symbols are global");
    std::cout << "loaded " << other << "\n";

    imhost::Context context;
    imhost::Volume ctp = context.read(phantom + "/ctp.nii.gz");
    const imhost::View v = ctp.view();
    vtkNew<vtkMRMLScene> scene;
    vtkNew<vtkSlicerPerfusionMapsLogic> logic;
    logic->SetMRMLScene(scene);
    vtkMRMLSequenceNode* seq = AddSequence(scene, v, MatrixOfView(v), "CTP phantom");
    logic->SetMethod("cnn");  // the installed default weights (share/imhost/models/perfusion-cnn)
    const int state = logic->RunAndWait(seq);
    CHECK(state == vtkSlicerPerfusionMapsLogic::Succeeded, "the CNN ran next to another LibTorch: " << logic->GetStatusMessage());
    std::cout << "status: " << logic->GetStatusMessage() << "\n";

    const std::string cli = command + " perfusion '" + phantom + "/ctp.nii.gz' --method cnn --device cpu --out '" + work +
                            "/cnn' --overwrite -q";
    CHECK(std::system(cli.c_str()) == 0, "command: " << cli);
    for (const auto& [file, label] : {std::pair<const char*, const char*>{"cbf", "CBF"}, {"cbv", "CBV"}, {"ttp", "TTP"}}) {
        auto* node = vtkMRMLScalarVolumeNode::SafeDownCast(scene->GetFirstNodeByName((std::string("CTP phantom ") + label).c_str()));
        CHECK(node, label << " volume");
        if (!node) continue;
        imhost::Volume expected = context.read(work + "/cnn/" + file + ".nii.gz");
        const imhost::View ev = expected.view();
        const float* px = static_cast<const float*>(node->GetImageData()->GetScalarPointer());
        double worst = 0, scale = 0;
        std::size_t n = 0;
        for (int64_t k = 0; k < ev.shape()[2]; ++k)
            for (int64_t j = 0; j < ev.shape()[1]; ++j)
                for (int64_t i = 0; i < ev.shape()[0]; ++i, ++n) {
                    worst = std::max(worst, std::abs(static_cast<double>(px[n]) - ev.at<float>(i, j, k)));
                    scale = std::max(scale, std::abs(static_cast<double>(ev.at<float>(i, j, k))));
                }
        // The worker and the command run the same weights on the same LibTorch (2.11): equal up to
        // float reordering across thread counts.
        CHECK(worst <= 1e-4 * std::max(1.0, scale), label << ": worst difference " << worst << " (scale " << scale << ")");
    }
    CHECK(scene->GetFirstNodeByName("CTP phantom Tmax") == nullptr, "the CNN makes no Tmax");
    const auto loaded = Mapped("libtorch_cpu.so");
    CHECK(loaded.size() == 1 && *loaded.begin() == other, "only the other LibTorch is in this process (" << loaded.size() << " mapped)");
    for (const auto& l : loaded) std::cout << "mapped: " << l << "\n";

    if (TestFailures()) std::cerr << TestFailures() << " check(s) failed\n";
    else std::cout << "the CNN runs next to another LibTorch\n";
    return TestFailures() ? 1 : 0;
}
