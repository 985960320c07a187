// Benchmark (not a test): Generate perfusion maps on a study held as Slicer holds it — a
// Sequence of one scalar volume per frame — from Apply to every node in the scene, with the
// longest time the main thread was held, the input copy and the peak memory. Compare with the
// command on the same file (scripts/bench-slicer.sh does both and prints one table row).
//   benchPerfusionMaps CTP.nii.gz [METHOD]
#include <sys/resource.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include <vtkMRMLScene.h>
#include <vtkNew.h>
#include <vtk_nlohmannjson.h>
#include VTK_NLOHMANN_JSON(json.hpp)

#include "imhost.hpp"
#include "vtkSlicerImhostTestUtils.h"
#include "vtkSlicerPerfusionMapsLogic.h"

namespace {
/// The process's peak resident set (VmHWM) and current (VmRSS) in MiB.
double Status(const char* key) {
    std::ifstream f("/proc/self/status");
    for (std::string line; std::getline(f, line);)
        if (line.rfind(key, 0) == 0) return std::stod(line.substr(std::string(key).size())) / 1024.0;
    return -1;
}
/// Reset VmHWM to the current RSS (Linux ≥ 4.0: write 5 to clear_refs).
void ResetPeak() { std::ofstream("/proc/self/clear_refs") << "5"; }
}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::cerr << "usage: " << argv[0] << " CTP.nii.gz [METHOD]\n";
        return 2;
    }
    vtkNew<vtkMRMLScene> scene;
    vtkNew<vtkSlicerPerfusionMapsLogic> logic;
    logic->SetMRMLScene(scene);
    logic->SetMethod(argc > 2 ? argv[2] : "osvd");
    vtkMRMLSequenceNode* seq = nullptr;
    {
        imhost::Context context;
        imhost::Volume ctp = context.read(argv[1]);
        const imhost::View v = ctp.view();
        seq = AddSequence(scene, v, MatrixOfView(v), "study");
    }  // only the Sequence holds the study now, as in Slicer
    const double before = Status("VmRSS:");
    ResetPeak();
    // As the module's QTimer does: start, then process every 100 ms on this (the main) thread.
    const auto t0 = std::chrono::steady_clock::now();
    const bool started = logic->StartPerfusion(seq);
    const double start_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int state = started ? vtkSlicerPerfusionMapsLogic::Running : vtkSlicerPerfusionMapsLogic::Failed;
    while (state == vtkSlicerPerfusionMapsLogic::Running) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        state = logic->ProcessRun();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (state != vtkSlicerPerfusionMapsLogic::Succeeded) {
        std::cerr << "run failed: " << logic->GetStatusMessage() << "\n";
        return 1;
    }
    const auto report = nlohmann::json::parse(logic->GetReportJSON());
    double pipeline = 0;
    for (const auto& t : report["timings"]) pipeline += t["seconds"].get<double>();
    nlohmann::json out{{"apply_to_nodes_s", seconds},
                       {"pipeline_s", pipeline},
                       {"longest_main_thread_update_s", logic->GetLongestMainThreadUpdate()},
                       {"start_s", start_s},
                       {"input_copy_mib", logic->GetInputCopyBytes() / 1048576.0},
                       {"rss_before_mib", before},
                       {"peak_during_run_mib", Status("VmHWM:")},
                       {"timings", report["timings"]},
                       {"status", logic->GetStatusMessage()}};
    std::cout << out.dump() << "\n";
    return 0;
}
