// Perfusion Maps logic (see the header).
#include "vtkSlicerPerfusionMapsLogic.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>
#include <thread>

#include <vtkCodedEntry.h>
#include <vtkDoubleArray.h>
#include <vtkImageData.h>
#include <vtkIdList.h>
#include <vtkIntArray.h>
#include <vtkMRMLDisplayableNode.h>
#include <vtkMRMLStorableNode.h>
#include <vtkMRMLStorageNode.h>
#include <vtkMRMLDisplayNode.h>
#include <vtkMRMLColorTableNode.h>
#include <vtkMRMLMarkupsFiducialDisplayNode.h>
#include <vtkMRMLMarkupsFiducialNode.h>
#include <vtkMRMLPlotChartNode.h>
#include <vtkMRMLPlotSeriesNode.h>
#include <vtkMRMLScalarVolumeDisplayNode.h>
#include <vtkMRMLScalarVolumeNode.h>
#include <vtkMRMLScene.h>
#include <vtkMRMLSegmentationDisplayNode.h>
#include <vtkMRMLSegmentationNode.h>
#include <vtkMRMLSubjectHierarchyNode.h>
#include <vtkMRMLTableNode.h>
#include <vtkMatrix4x4.h>
#include <vtkNew.h>
#include <vtkObjectFactory.h>
#include <vtkOrientedImageData.h>
#include <vtkOutputWindow.h>
#include <vtkSegmentation.h>
#include <vtkStringArray.h>
#include <vtkTable.h>
#include <vtk_nlohmannjson.h>
#include VTK_NLOHMANN_JSON(json.hpp)

#include "imhost_itk.hpp"
#include "vtkSlicerImhostConversion.h"
#include "vtkSlicerImhostRunController.h"

using json = nlohmann::json;

namespace {
using imhost_slicer::kResearchUseOnly;

struct MapSpec {
    imh_perfusion_output output;
    const char* label;
    const char* unit;
    const char* ucum;
    const char* quantity_code;
    const char* quantity_meaning;
    double window, level;
};
// Window/level: a stroke reading's usual display ranges (CBF 0–60, CBV 0–6, MTT 0–16, TTP
// 0–30 s of the study, Tmax 0–12 s so that the 6 s threshold sits mid-scale).
const MapSpec kMaps[] = {
    {IMH_PERFUSION_CBF, "CBF", "ml/100 g/min", "mL/(100.g.min)", "126390", "Absolute Regional Blood Flow", 60, 30},
    {IMH_PERFUSION_CBV, "CBV", "ml/100 g", "mL/(100.g)", "126391", "Absolute Regional Blood Volume", 6, 3},
    {IMH_PERFUSION_MTT, "MTT", "s", "s", "113052", "Mean Transit Time", 16, 8},
    {IMH_PERFUSION_TTP, "TTP", "s", "s", "113069", "Time To Peak", 30, 15},
    {IMH_PERFUSION_TMAX, "Tmax", "s", "s", "113084", "Time to Maximum of Residue Function", 12, 6},
};

const char* MethodLabel(const std::string& m) {
    if (m == "bsvd") return "bSVD";
    if (m == "ssvd") return "sSVD";
    if (m == "tikhonov") return "Tikhonov";
    if (m == "nlr") return "NLR";
    if (m == "cnn") return "CNN";
    return "oSVD";
}

bool MethodCode(const std::string& m, imh_perfusion_method& out) {
    if (m == "osvd" || m.empty()) out = IMH_PERFUSION_METHOD_OSVD;
    else if (m == "bsvd") out = IMH_PERFUSION_METHOD_BSVD;
    else if (m == "ssvd") out = IMH_PERFUSION_METHOD_SSVD;
    else if (m == "tikhonov") out = IMH_PERFUSION_METHOD_TIKHONOV;
    else if (m == "nlr") out = IMH_PERFUSION_METHOD_NLR;
    else if (m == "cnn") out = IMH_PERFUSION_METHOD_CNN;
    else return false;
    return true;
}

template <class Node>
void RegisterNodeClassOnce(vtkMRMLScene* scene) {
    vtkNew<Node> node;
    if (!scene->IsNodeClassRegistered(node->GetClassName())) scene->RegisterNodeClass(node);
}

std::string Number(const json& v, int digits) {
    if (!v.is_number()) return "";
    std::ostringstream s;
    s.setf(std::ios::fixed);
    s.precision(digits);
    s << v.get<double>();
    return s.str();
}
}  // namespace

/// One run: the input, then what the worker prepared from the result — the VTK images of every
/// output, built off the main thread (plain data objects, in no scene), so that the main thread
/// only creates nodes and hands them their images.
struct vtkSlicerPerfusionMapsLogic::Pending {
    imhost_slicer::Study study;
    std::string method;
    std::unique_ptr<imhost::Model> model;
    std::string name;  ///< the study's name (the Study itself is released after the run)
    std::string report_json;
    std::vector<std::pair<const MapSpec*, vtkSmartPointer<vtkImageData>>> maps;
    vtkSmartPointer<vtkMatrix4x4> ijk_to_ras;
    vtkSmartPointer<vtkOrientedImageData> core, penumbra;

    /// Worker thread: the result's outputs as VTK images.
    void Prepare(const imhost::PerfusionResult& result) {
        report_json = result.report_json();
        for (const MapSpec& spec : kMaps) {
            if (method == "cnn" && spec.output == IMH_PERFUSION_TMAX) continue;  // the CNN estimates no Tmax
            maps.emplace_back(&spec, imhost_slicer::ImageFromView(result.view(spec.output)));
        }
        const imhost::View c = result.view(IMH_PERFUSION_CORE);
        const imhost::View h = result.view(IMH_PERFUSION_HYPOPERFUSION);
        ijk_to_ras = imhost_slicer::IJKToRAS(c);
        const imhost::Shape shape = c.shape();
        auto mask = [&](bool penumbra_mask) {
            auto image = vtkSmartPointer<vtkOrientedImageData>::New();
            image->SetDimensions(static_cast<int>(shape[0]), static_cast<int>(shape[1]), static_cast<int>(shape[2]));
            image->AllocateScalars(VTK_UNSIGNED_CHAR, 1);
            image->SetImageToWorldMatrix(ijk_to_ras);
            auto* out = static_cast<uint8_t*>(image->GetScalarPointer());
            const auto* cp = static_cast<const uint8_t*>(c.c().data);
            const auto* hp = static_cast<const uint8_t*>(h.c().data);
            const imhost::Strides cs = c.strides(), hs = h.strides();
            std::size_t n = 0;
            for (int64_t k = 0; k < shape[2]; ++k)
                for (int64_t j = 0; j < shape[1]; ++j)
                    for (int64_t i = 0; i < shape[0]; ++i, ++n) {
                        const bool in_core = cp[i * cs[0] + j * cs[1] + k * cs[2]] != 0;
                        const bool hypo = hp[i * hs[0] + j * hs[1] + k * hs[2]] != 0;
                        out[n] = penumbra_mask ? (hypo && !in_core) : in_core;
                    }
            return image;
        };
        core = mask(false);
        penumbra = mask(true);
    }
};

vtkStandardNewMacro(vtkSlicerPerfusionMapsLogic);

vtkSlicerPerfusionMapsLogic::vtkSlicerPerfusionMapsLogic() {
    this->SetMethod("osvd");
    this->SetCNNModelDirectory("");
}

vtkSlicerPerfusionMapsLogic::~vtkSlicerPerfusionMapsLogic() {
    this->Controller.reset();  // cancels and joins a run still going
    this->SetMethod(nullptr);
    this->SetCNNModelDirectory(nullptr);
}

void vtkSlicerPerfusionMapsLogic::PrintSelf(ostream& os, vtkIndent indent) {
    this->Superclass::PrintSelf(os, indent);
    os << indent << "Method: " << (this->Method ? this->Method : "") << "\n";
    os << indent << "Running: " << this->IsRunning() << "\n";
}

void vtkSlicerPerfusionMapsLogic::SetMRMLSceneInternal(vtkMRMLScene* newScene) {
    vtkNew<vtkIntArray> events;
    events->InsertNextValue(vtkMRMLScene::StartCloseEvent);
    this->SetAndObserveMRMLSceneEventsInternal(newScene, events);
    if (newScene) {
        RegisterNodeClassOnce<vtkMRMLMarkupsFiducialNode>(newScene);
        RegisterNodeClassOnce<vtkMRMLMarkupsFiducialDisplayNode>(newScene);
        RegisterNodeClassOnce<vtkMRMLSegmentationNode>(newScene);
        RegisterNodeClassOnce<vtkMRMLSegmentationDisplayNode>(newScene);
        RegisterNodeClassOnce<vtkMRMLPlotSeriesNode>(newScene);
        RegisterNodeClassOnce<vtkMRMLPlotChartNode>(newScene);
    }
}

void vtkSlicerPerfusionMapsLogic::OnMRMLSceneStartClose() {
    // The scene is going away: stop the run; its results must not land in the next scene.
    if (this->Run) {  // running, or finished but not yet applied
        this->DiscardResult = true;
        this->CancelRun();
    }
}

bool vtkSlicerPerfusionMapsLogic::IsRunning() const {
    return this->Controller && this->Controller->state() == imhost_slicer::RunController::State::Running;
}

double vtkSlicerPerfusionMapsLogic::GetRunProgress() const { return this->Controller ? this->Controller->fraction() : 0.0; }
std::string vtkSlicerPerfusionMapsLogic::GetRunStage() const { return this->Controller ? this->Controller->stage() : ""; }
double vtkSlicerPerfusionMapsLogic::GetRunSecondsLeft() const {
    return this->Controller ? this->Controller->seconds_left() : -1.0;
}

void vtkSlicerPerfusionMapsLogic::CancelRun() {
    if (this->Controller) this->Controller->Cancel();
}

bool vtkSlicerPerfusionMapsLogic::StartPerfusion(vtkMRMLNode* input) {
    if (!this->GetMRMLScene()) {
        this->StatusMessage = "no scene";
        return false;
    }
    if (this->IsRunning()) {
        this->StatusMessage = "a run is still going: wait for it or cancel it";
        return false;
    }
    const std::string method = this->Method ? this->Method : "osvd";
    imh_perfusion_method code{};
    if (!MethodCode(method, code)) {
        this->StatusMessage = "unknown method '" + method + "' (osvd, bsvd, ssvd, tikhonov, nlr or cnn)";
        return false;
    }
    auto run = std::make_unique<Pending>();
    run->method = method;
    std::string error;
    if (!imhost_slicer::ReadStudy(input, run->study, error)) {
        this->StatusMessage = error;
        return false;
    }
    run->name = run->study.name;
    imhost::PerfusionOptions options;
    options.method = code;
    if (!this->AutomaticAIF) {
        std::array<uint32_t, 3> voxel{};
        if (!imhost_slicer::RASToVoxel(run->study.ijk_to_ras, run->study.shape, this->AIFPointRAS, voxel)) {
            this->StatusMessage = "the AIF point lies outside the study";
            return false;
        }
        options.aif_voxel = voxel;
    }
    if (this->Age >= 0) options.age = this->Age;
    if (this->NIHSS >= 0) options.nihss = this->NIHSS;
    options.motion_correction = this->MotionCorrection;
    if (this->MotionCorrection) {
        // Slicer's own ITK (the one this library was built against), never a second one.
        options.registration = &imhost::itk::registration_callback;
        options.registration_name = imhost::itk::description().c_str();
    }
    if (!this->Controller) this->Controller = std::make_unique<imhost_slicer::RunController>();
    if (code == IMH_PERFUSION_METHOD_CNN) {
        std::string dir = this->CNNModelDirectory ? this->CNNModelDirectory : "";
        if (dir.empty()) dir = imhost_slicer::InstalledModelDirectory("perfusion-cnn");
        if (dir.empty()) {
            this->StatusMessage = "the CNN's model folder was not found next to libimhost (choose it: manifest.json and weights)";
            return false;
        }
        try {
            run->model = std::make_unique<imhost::Model>(this->Controller->context(), dir);
        } catch (const std::exception& e) {
            this->StatusMessage = std::string("cannot load the CNN: ") + e.what();
            return false;
        }
        options.model = run->model.get();
    }
    this->InputCopyBytes = run->study.copied_bytes;
    this->DiscardResult = false;
    this->LogLines.clear();
    Pending* p = run.get();
    this->Run = std::move(run);
    this->Controller->Start([p, options](const imhost::Context& context, const imhost::RunOptions& run_options) {
        p->study.Copy();  // the one copy of a Sequence's frames, off the main thread
        const imhost::PerfusionResult result = imhost::perfusion(context, p->study.view(), options, run_options);
        p->study = imhost_slicer::Study{};  // the copy is not needed any more
        p->Prepare(result);
    });
    this->StatusMessage = "running " + std::string(MethodLabel(method)) + " on '" + this->Run->name + "'";
    return true;
}

void vtkSlicerPerfusionMapsLogic::DrainLog() {
    if (!this->Controller) return;
    for (std::string& line : this->Controller->ForwardLog()) this->LogLines.push_back(std::move(line));
}

int vtkSlicerPerfusionMapsLogic::ProcessRun() {
    const auto start = std::chrono::steady_clock::now();
    this->DrainLog();
    if (!this->Controller) return Idle;
    const bool keep = !this->DiscardResult && this->GetMRMLScene();
    const int state = this->Controller->Process(!keep, [this] { this->ApplyResult(); }, this->StatusMessage);
    if (state != Running && state != Idle) {
        this->DrainLog();
        this->Run.reset();
    }
    const double held = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    this->LongestMainThreadUpdate = std::max(this->LongestMainThreadUpdate, held);
    return state;
}

int vtkSlicerPerfusionMapsLogic::RunAndWait(vtkMRMLNode* input) {
    this->LongestMainThreadUpdate = 0.0;
    if (!this->StartPerfusion(input)) return Failed;
    return imhost_slicer::RunController::WaitFor([this] { return this->ProcessRun(); });
}

void vtkSlicerPerfusionMapsLogic::ApplyResult() {
    vtkMRMLScene* scene = this->GetMRMLScene();
    Pending& run = *this->Run;
    this->ReportJSON = run.report_json;
    const json report = json::parse(this->ReportJSON);
    const std::string study = run.name;
    const std::string label = MethodLabel(run.method);
    std::vector<vtkMRMLNode*> added;
    auto mark = [&](vtkMRMLNode* node) {
        node->SetAttribute("imhost.ResearchUseOnly", kResearchUseOnly);
        node->SetDescription(kResearchUseOnly);
        added.push_back(node);
    };

    const std::string folderName = study + " - imhost " + label + " (research use only)";
    if (this->ReplaceResults) imhost_slicer::RemoveFolder(scene, folderName);
    // Subject-hierarchy items are filed after the batch, when the hierarchy has seen the nodes.
    scene->StartState(vtkMRMLScene::BatchProcessState);

    // Maps: one volume each, a shared colour table, the stroke window/level, coded units.
    vtkMRMLColorTableNode* colors = vtkMRMLColorTableNode::SafeDownCast(scene->GetFirstNodeByName("imhost perfusion"));
    if (!colors) {
        colors = vtkMRMLColorTableNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLColorTableNode", "imhost perfusion"));
        colors->SetTypeToRainbow();
        colors->SetAttribute("Category", "imhost");
    }
    for (const auto& [spec, image] : run.maps) {
        auto* node = vtkMRMLScalarVolumeNode::SafeDownCast(
            scene->AddNewNodeByClass("vtkMRMLScalarVolumeNode", study + " " + spec->label));
        // The display first, with automatic window/level off: else attaching the image makes
        // the display node compute a histogram of every voxel on this thread.
        auto* display = vtkMRMLScalarVolumeDisplayNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode"));
        display->AutoWindowLevelOff();
        display->AutoThresholdOff();
        display->SetWindowLevel(spec->window, spec->level);
        display->SetAndObserveColorNodeID(colors->GetID());
        node->SetAndObserveDisplayNodeID(display->GetID());
        node->SetIJKToRASMatrix(run.ijk_to_ras);
        node->SetAndObserveImageData(image);  // prepared by the worker: no copy here
        vtkNew<vtkCodedEntry> quantity, units;
        quantity->SetValueSchemeMeaning(spec->quantity_code, "DCM", spec->quantity_meaning);
        units->SetValueSchemeMeaning(spec->ucum, "UCUM", spec->unit);
        node->SetVoxelValueQuantity(quantity);
        node->SetVoxelValueUnits(units);
        node->SetAttribute("imhost.Map", spec->label);
        node->SetAttribute("imhost.Unit", spec->unit);
        node->SetAttribute("imhost.Method", label.c_str());
        mark(node);
    }

    // Core and penumbra (hypoperfusion minus core) as one segmentation.
    auto* segmentation =
        vtkMRMLSegmentationNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLSegmentationNode", study + " core and penumbra"));
    segmentation->CreateDefaultDisplayNodes();
    double red[3] = {0.85, 0.1, 0.1}, yellow[3] = {0.95, 0.8, 0.1};
    segmentation->AddSegmentFromBinaryLabelmapRepresentation(run.core, "Ischemic core", red, "core");
    segmentation->AddSegmentFromBinaryLabelmapRepresentation(run.penumbra, "Penumbra", yellow, "penumbra");
    mark(segmentation);

    // The read-out table.
    auto* table = vtkMRMLTableNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLTableNode", study + " perfusion read-out"));
    for (const char* column : {"Measure", "Value", "Unit"}) {
        vtkNew<vtkStringArray> a;
        a->SetName(column);
        table->AddColumn(a);
    }
    auto row = [&](const std::string& measure, const std::string& value, const std::string& unit) {
        const int r = table->AddEmptyRow();
        table->SetCellText(r, 0, measure.c_str());
        table->SetCellText(r, 1, value.c_str());
        table->SetCellText(r, 2, unit.c_str());
    };
    const json& readout = report["readout"];
    const json& volumes = readout["volumes"];
    if (volumes.is_object()) {
        row("Ischemic core", Number(volumes["core_ml"], 1), "ml");
        row("Hypoperfusion (Tmax > 6 s)", Number(volumes["hypoperfusion_ml"], 1), "ml");
        row("Penumbra (mismatch)", Number(volumes["mismatch_ml"], 1), "ml");
        row("Mismatch ratio", Number(volumes["mismatch_ratio"], 2), "");
        row("Hypoperfusion intensity ratio", Number(volumes["hypoperfusion_intensity_ratio"], 2), "");
        row("Severe hypoperfusion (Tmax > 10 s)", Number(volumes["severe_hypoperfusion_ml"], 1), "ml");
    }
    if (readout["withheld"].is_string()) row("Volumes withheld", readout["withheld"].get<std::string>(), "");
    const json& criteria = readout["criteria"];
    for (const auto& [key, name] : {std::pair<const char*, const char*>{"defuse3", "DEFUSE-3"}, {"dawn", "DAWN"}}) {
        if (!criteria.is_object() || !criteria[key].is_object()) continue;
        const json& c = criteria[key];
        const std::string met = !c.value("evaluated", false) ? "not evaluated" : (c["met"].is_boolean() && c["met"].get<bool>() ? "met" : "not met");
        row(std::string(name) + " imaging criteria", met, c.value("detail", ""));
    }
    for (const json& flag : report["qc_flags"]) row("QC flag: " + flag.value("flag", ""), "raised", flag.value("message", ""));
    row("Method", label, report.value("software", ""));
    row("Motion", report["motion"].value("corrected", false) ? "corrected" : "not corrected",
        report["motion"]["backend"].is_string() ? report["motion"]["backend"].get<std::string>() : "");
    row("Research use only", "yes", kResearchUseOnly);
    mark(table);

    // AIF/VOF curves: a table of the analysis grid and a chart.
    const json& times = report["analysis_times_s"];
    auto* curves = vtkMRMLTableNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLTableNode", study + " AIF and VOF curves"));
    vtkNew<vtkDoubleArray> t;
    t->SetName("Time (s)");
    for (const json& x : times) t->InsertNextValue(x.get<double>());
    curves->AddColumn(t);
    auto* chart = vtkMRMLPlotChartNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLPlotChartNode", study + " AIF and VOF"));
    chart->SetTitle("Arterial input and venous output (research use only)");
    chart->SetXAxisTitle("Time (s)");
    chart->SetYAxisTitle("Enhancement (HU)");
    for (const auto& [key, name] : {std::pair<const char*, const char*>{"aif", "AIF"}, {"vof", "VOF"}}) {
        const json& vessel = report[key];
        if (!vessel.is_object()) continue;
        vtkNew<vtkDoubleArray> y;
        const std::string column = std::string(name) + " (HU)";
        y->SetName(column.c_str());
        for (const json& v : vessel["curve_hu"]) y->InsertNextValue(v.get<double>());
        curves->AddColumn(y);
        auto* series = vtkMRMLPlotSeriesNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLPlotSeriesNode", study + " " + name));
        series->SetAndObserveTableNodeID(curves->GetID());
        series->SetXColumnName("Time (s)");
        series->SetYColumnName(column.c_str());
        series->SetPlotType(vtkMRMLPlotSeriesNode::PlotTypeScatter);
        const double color[3] = {std::string(key) == "aif" ? 0.85 : 0.1, 0.1, std::string(key) == "aif" ? 0.1 : 0.85};
        series->SetColor(const_cast<double*>(color));
        chart->AddAndObservePlotSeriesNodeID(series->GetID());
        mark(series);
    }
    mark(curves);
    mark(chart);

    // Where the AIF and VOF were taken.
    auto* points = vtkMRMLMarkupsFiducialNode::SafeDownCast(
        scene->AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", study + " AIF and VOF locations"));
    points->CreateDefaultDisplayNodes();
    for (const auto& [key, name] : {std::pair<const char*, const char*>{"aif", "AIF"}, {"vof", "VOF"}}) {
        const json& vessel = report[key];
        if (!vessel.is_object()) continue;
        double lps[3], ras[3];
        for (int a = 0; a < 3; ++a) lps[a] = vessel["position_lps_mm"][static_cast<std::size_t>(a)].get<double>();
        imhost_slicer::LPSToRAS(lps, ras);
        points->AddControlPoint(ras, name);
    }
    points->SetLocked(true);
    mark(points);
    scene->EndState(vtkMRMLScene::BatchProcessState);

    const long long folder = imhost_slicer::FileInFolder(scene, folderName, added);
    this->ResultFolderItemID = folder;
    this->ResultNodeIDs.clear();
    for (vtkMRMLNode* n : added) this->ResultNodeIDs.push_back(n->GetID());
    std::ostringstream status;
    status << label << " on '" << study << "': ";
    if (volumes.is_object())
        status << "core " << Number(volumes["core_ml"], 1) << " ml, penumbra " << Number(volumes["mismatch_ml"], 1) << " ml";
    else
        status << "volumes withheld (" << (readout["withheld"].is_string() ? readout["withheld"].get<std::string>() : "QC")
               << ")";
    status << " (research use only)";
    this->StatusMessage = status.str();
}
