/// \class vtkSlicerPerfusionMapsLogic
/// The Perfusion Maps module's logic: "Generate perfusion maps" on a 4-D CT perfusion study
/// (a vtkMRMLSequenceNode of scalar volumes, or a 4-D volume node) through imhost's C ABI.
///
/// StartPerfusion() validates and converts the input on the main thread (one copy of a
/// Sequence's frames) and runs the pipeline on a worker thread; ProcessRun(), called
/// periodically on the main thread (a QTimer in the widget), reports progress and, when the run
/// has finished, adds every result node in one batch: a subject-hierarchy folder named after
/// the study and method holding CBF, CBV, MTT, TTP, Tmax volumes (colour table, window/level,
/// units, the input's exact IJK-to-RAS), a segmentation (core; penumbra = hypoperfusion minus
/// core), a table (volumes, mismatch, HIR, DEFUSE-3/DAWN, QC flags, withheld reasons), a plot
/// of the AIF/VOF curves and the AIF/VOF locations as markups — every node marked research use
/// only. A cancelled or failed run adds nothing. Motion is corrected with Slicer's own ITK
/// (imhost_itk.hpp), never a second one. No Qt here: the logic is tested against real MRML.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "vtkSlicerImhostModuleLogicExport.h"
#include "vtkSlicerModuleLogic.h"

class vtkMRMLNode;
namespace imhost_slicer {
class RunController;
struct Study;
}  // namespace imhost_slicer

class VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT vtkSlicerPerfusionMapsLogic : public vtkSlicerModuleLogic {
public:
    static vtkSlicerPerfusionMapsLogic* New();
    vtkTypeMacro(vtkSlicerPerfusionMapsLogic, vtkSlicerModuleLogic);
    void PrintSelf(ostream& os, vtkIndent indent) override;

    /// The values of imhost_slicer::RunController::Outcome.
    enum RunState { Idle = 0, Running, Succeeded, Failed, Cancelled };

    /// Method: "osvd" (default), "bsvd", "ssvd", "tikhonov", "nlr" or "cnn".
    vtkSetStringMacro(Method);
    vtkGetStringMacro(Method);
    /// The CNN's model folder (manifest + weights); empty: the installed default.
    vtkSetStringMacro(CNNModelDirectory);
    vtkGetStringMacro(CNNModelDirectory);
    /// AIF: automatic (1) or at AIFPointRAS (0), e.g. from a markups fiducial the user placed.
    vtkSetMacro(AutomaticAIF, bool);
    vtkGetMacro(AutomaticAIF, bool);
    vtkSetVector3Macro(AIFPointRAS, double);
    vtkGetVector3Macro(AIFPointRAS, double);
    /// Patient age (years) and NIHSS for the DAWN criteria; < 0: unknown.
    vtkSetMacro(Age, double);
    vtkGetMacro(Age, double);
    vtkSetMacro(NIHSS, double);
    vtkGetMacro(NIHSS, double);
    /// Motion correction (on by default) with Slicer's ITK.
    vtkSetMacro(MotionCorrection, bool);
    vtkGetMacro(MotionCorrection, bool);
    /// Re-running on the same study and method replaces its earlier folder (1) or adds another (0).
    vtkSetMacro(ReplaceResults, bool);
    vtkGetMacro(ReplaceResults, bool);

    /// Start a run on `input`. Returns false, with the reason in GetStatusMessage() and nothing
    /// added to the scene, when the input is not a usable CT perfusion study or a run is going.
    bool StartPerfusion(vtkMRMLNode* input);
    /// Main thread, periodically: progress, and when the run ended its results go into the scene.
    /// Returns the state (Succeeded/Failed/Cancelled once per run, then Idle).
    int ProcessRun();
    /// Ask the run to stop; it ends within a second and adds nothing.
    void CancelRun();
    /// Start and wait, processing on this thread; the final state (scripts and tests).
    int RunAndWait(vtkMRMLNode* input);

    bool IsRunning() const;
    double GetRunProgress() const;
    std::string GetRunStage() const;
    /// Estimated seconds left; < 0 when not yet known.
    double GetRunSecondsLeft() const;
    /// One line for the module's status line (what went wrong, or what was made).
    std::string GetStatusMessage() const { return this->StatusMessage; }
    /// The last run's report.json.
    std::string GetReportJSON() const { return this->ReportJSON; }
    /// The subject-hierarchy folder of the last successful run (0 when none).
    long long GetResultFolderItemID() const { return this->ResultFolderItemID; }
    /// The IDs of every node the last successful run added.
    std::vector<std::string> GetResultNodeIDs() const { return this->ResultNodeIDs; }
    /// The longest time ProcessRun() held the main thread (s), for the benchmark.
    double GetLongestMainThreadUpdate() const { return this->LongestMainThreadUpdate; }
    /// Bytes the input conversion copied (a Sequence: one copy of its frames; a 4-D volume: 0).
    unsigned long long GetInputCopyBytes() const { return this->InputCopyBytes; }
    /// Library log records of the last run ("LEVEL target: message"), also sent to VTK's output
    /// window (Slicer's log).
    std::vector<std::string> GetLogLines() const { return this->LogLines; }

protected:
    vtkSlicerPerfusionMapsLogic();
    ~vtkSlicerPerfusionMapsLogic() override;
    void SetMRMLSceneInternal(vtkMRMLScene* newScene) override;
    void OnMRMLSceneStartClose() override;

private:
    struct Pending;
    void ApplyResult();
    void DrainLog();

    char* Method = nullptr;
    char* CNNModelDirectory = nullptr;
    bool AutomaticAIF = true;
    double AIFPointRAS[3] = {0.0, 0.0, 0.0};
    double Age = -1.0;
    double NIHSS = -1.0;
    bool MotionCorrection = true;
    bool ReplaceResults = true;
    std::string StatusMessage;
    std::string ReportJSON;
    long long ResultFolderItemID = 0;
    std::vector<std::string> ResultNodeIDs;
    double LongestMainThreadUpdate = 0.0;
    unsigned long long InputCopyBytes = 0;
    std::vector<std::string> LogLines;
    bool DiscardResult = false;
    std::unique_ptr<imhost_slicer::RunController> Controller;
    std::unique_ptr<Pending> Run;

    vtkSlicerPerfusionMapsLogic(const vtkSlicerPerfusionMapsLogic&) = delete;
    void operator=(const vtkSlicerPerfusionMapsLogic&) = delete;
};
