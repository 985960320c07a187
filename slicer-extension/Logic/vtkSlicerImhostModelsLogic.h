/// \class vtkSlicerImhostModelsLogic
/// The imhost Models module's logic: every model of the imhost registry — built-ins, TorchScript
/// packages, C/C++/Rust plugins from IMHOST_PLUGIN_PATH and the folder chosen in the module's
/// settings — listed with its manifest; an options form model generated from the manifest's
/// option schema; inputs chosen by the manifest's declared inputs; a run on a worker thread; and
/// its outputs as Slicer nodes on the main thread: maps as scalar volumes (unit attribute), label
/// maps as segmentations with the manifest's label names and colours, scores in a table — in one
/// subject-hierarchy folder, every node marked research use only. Plugin load problems are
/// listed, not fatal. No Qt here.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "vtkSlicerImhostModuleLogicExport.h"
#include "vtkSlicerModuleLogic.h"

class vtkMRMLNode;
namespace imhost {
class Registry;
}
namespace imhost_slicer {
class RunController;

/// One field of a model's options form, from its manifest.
struct VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT OptionField {
    std::string name;
    std::string type;  ///< "number", "integer", "boolean", "enum" (a string with choices) or "string"
    std::string default_value;  ///< as text ("true"/"false" for booleans)
    bool has_minimum = false, has_maximum = false;
    double minimum = 0, maximum = 0;
    std::string unit, description;
    std::vector<std::string> choices;
};

/// One declared input of a model.
struct VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT InputField {
    std::string name;
    int dims = 3;          ///< 3: a scalar volume; 4: a sequence (or 4-D volume)
    std::string modality;  ///< "CT", "MR", "PT", "any", …
};
}  // namespace imhost_slicer

class VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT vtkSlicerImhostModelsLogic : public vtkSlicerModuleLogic {
public:
    static vtkSlicerImhostModelsLogic* New();
    vtkTypeMacro(vtkSlicerImhostModelsLogic, vtkSlicerModuleLogic);
    void PrintSelf(ostream& os, vtkIndent indent) override;

    /// The values of imhost_slicer::RunController::Outcome.
    enum RunState { Idle = 0, Running, Succeeded, Failed, Cancelled };

    /// The module setting: a folder of plugins / model packages searched besides
    /// IMHOST_PLUGIN_PATH and ~/.local/share/imhost/plugins.
    vtkSetStringMacro(PluginFolder);
    vtkGetStringMacro(PluginFolder);
    /// Search IMHOST_PLUGIN_PATH and the per-user folder (on by default).
    vtkSetMacro(StandardLocations, bool);
    vtkGetMacro(StandardLocations, bool);

    /// (Re)build the registry; false with the reason in GetStatusMessage().
    bool RefreshModels();
    std::vector<std::string> GetModelIDs() const;
    /// The model's manifest (JSON); empty for an unknown id.
    std::string GetManifestJSON(const std::string& id) const;
    /// "Name 1.0.0 — licence — reference" for the list.
    std::string GetModelSummary(const std::string& id) const;
    /// Plugins and packages that did not load: "path: why".
    std::vector<std::string> GetLoadProblems() const { return this->LoadProblems; }
    std::vector<imhost_slicer::OptionField> GetOptionFields(const std::string& id) const;
    std::vector<imhost_slicer::InputField> GetInputFields(const std::string& id) const;
    /// The options JSON from the form's values (name → text); false with a reason when a value
    /// does not fit its field (type, range, choices). Fields not given take their defaults.
    bool MakeOptionsJSON(const std::string& id, const std::map<std::string, std::string>& values, std::string& json,
                         std::string& error) const;

    /// Start model `id` on `inputs` (the manifest's order) with `optionsJSON`. False with the
    /// reason (and nothing added) when an input does not fit or a run is going.
    bool StartModel(const std::string& id, const std::vector<vtkMRMLNode*>& inputs, const std::string& optionsJSON);
    /// Main thread, periodically; adds the outputs when the run has ended.
    int ProcessRun();
    void CancelRun();
    int RunAndWait(const std::string& id, const std::vector<vtkMRMLNode*>& inputs, const std::string& optionsJSON);
    bool IsRunning() const;
    double GetRunProgress() const;
    std::string GetRunStage() const;
    double GetRunSecondsLeft() const;
    std::string GetStatusMessage() const { return this->StatusMessage; }
    /// The last run's result summary (imh_model_result_json).
    std::string GetResultJSON() const { return this->ResultJSON; }
    long long GetResultFolderItemID() const { return this->ResultFolderItemID; }
    std::vector<std::string> GetResultNodeIDs() const { return this->ResultNodeIDs; }

protected:
    vtkSlicerImhostModelsLogic();
    ~vtkSlicerImhostModelsLogic() override;
    void SetMRMLSceneInternal(vtkMRMLScene* newScene) override;
    void OnMRMLSceneStartClose() override;

private:
    struct Pending;
    void ApplyResult();

    char* PluginFolder = nullptr;
    bool StandardLocations = true;
    std::string StatusMessage;
    std::string ResultJSON;
    long long ResultFolderItemID = 0;
    std::vector<std::string> ResultNodeIDs;
    std::vector<std::string> LoadProblems;
    bool DiscardResult = false;
    std::unique_ptr<imhost_slicer::RunController> Controller;
    std::unique_ptr<imhost::Registry> Registry;
    std::string ListJSON;
    std::unique_ptr<Pending> Run;

    vtkSlicerImhostModelsLogic(const vtkSlicerImhostModelsLogic&) = delete;
    void operator=(const vtkSlicerImhostModelsLogic&) = delete;
};
