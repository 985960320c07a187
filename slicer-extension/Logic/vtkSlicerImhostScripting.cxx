// C entry points of the Logic (see the header). No exception leaves them.
#include "vtkSlicerImhostScripting.h"

#include <cstring>
#include <string>

#include <vtkMRMLScene.h>
#include <vtkNew.h>
#include <vtk_nlohmannjson.h>
#include VTK_NLOHMANN_JSON(json.hpp)

#include "vtkSlicerPerfusionMapsLogic.h"

using json = nlohmann::json;

namespace {
size_t Emit(const json& value, char* out, size_t out_size) {
    const std::string text = value.dump();
    if (out && out_size > 0) {
        const size_t n = std::min(text.size(), out_size - 1);
        std::memcpy(out, text.data(), n);
        out[n] = '\0';
    }
    return text.size();
}
}  // namespace

size_t imhost_slicer_generate_perfusion_maps(void* scene_ptr, const char* input_id, const char* options_json, char* out,
                                             size_t out_size) {
    try {
        auto* scene = static_cast<vtkMRMLScene*>(scene_ptr);
        if (!scene || !input_id) return Emit({{"state", "failed"}, {"status", "scene and input are required"}}, out, out_size);
        const json o = options_json && *options_json ? json::parse(options_json) : json::object();
        vtkNew<vtkSlicerPerfusionMapsLogic> logic;
        logic->SetMRMLScene(scene);
        logic->SetMethod(o.value("method", std::string("osvd")).c_str());
        if (o.contains("cnn_model")) logic->SetCNNModelDirectory(o["cnn_model"].get<std::string>().c_str());
        if (o.contains("age")) logic->SetAge(o["age"].get<double>());
        if (o.contains("nihss")) logic->SetNIHSS(o["nihss"].get<double>());
        logic->SetMotionCorrection(o.value("motion_correction", true));
        logic->SetReplaceResults(o.value("replace", true));
        if (o.contains("aif_ras")) {
            double ras[3];
            for (int a = 0; a < 3; ++a) ras[a] = o["aif_ras"][static_cast<size_t>(a)].get<double>();
            logic->SetAutomaticAIF(false);
            logic->SetAIFPointRAS(ras);
        }
        const int state = logic->RunAndWait(scene->GetNodeByID(input_id));
        static const char* const names[] = {"idle", "running", "succeeded", "failed", "cancelled"};
        json result{{"state", names[state]},
                    {"status", logic->GetStatusMessage()},
                    {"nodes", logic->GetResultNodeIDs()},
                    {"folder", logic->GetResultFolderItemID()},
                    {"input_copy_bytes", logic->GetInputCopyBytes()},
                    {"longest_main_thread_update_s", logic->GetLongestMainThreadUpdate()}};
        if (state == vtkSlicerPerfusionMapsLogic::Succeeded) result["report"] = json::parse(logic->GetReportJSON());
        logic->SetMRMLScene(nullptr);
        return Emit(result, out, out_size);
    } catch (const std::exception& e) {
        return Emit({{"state", "failed"}, {"status", std::string("internal error: ") + e.what()}}, out, out_size);
    } catch (...) {
        return Emit({{"state", "failed"}, {"status", "internal error"}}, out, out_size);
    }
}
