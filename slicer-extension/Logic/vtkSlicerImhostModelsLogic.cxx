// imhost Models logic (see the header).
#include "vtkSlicerImhostModelsLogic.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <sstream>
#include <thread>

#include <vtkIntArray.h>
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
#include <vtkStringArray.h>
#include <vtk_nlohmannjson.h>
#include VTK_NLOHMANN_JSON(json.hpp)

#include "imhost.hpp"
#include "imhost_itk.hpp"
#include "vtkSlicerImhostConversion.h"
#include "vtkSlicerImhostRunController.h"

using json = nlohmann::json;

namespace {
using imhost_slicer::kResearchUseOnly;

std::string Text(const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
    if (v.is_number_integer()) return std::to_string(v.get<long long>());
    if (v.is_number()) {
        std::ostringstream s;
        s.precision(15);
        s << v.get<double>();
        return s.str();
    }
    return v.dump();
}
}  // namespace

struct vtkSlicerImhostModelsLogic::Pending {
    std::string id, name, input_name;
    std::vector<imhost_slicer::Image3D> images;
    std::vector<imhost_slicer::Study> studies;
    std::vector<std::pair<bool, std::size_t>> order;  ///< per input: (a 4-D study?, its index)
    std::string options;
    std::unique_ptr<imhost::ModelResult> result;
};

vtkStandardNewMacro(vtkSlicerImhostModelsLogic);

vtkSlicerImhostModelsLogic::vtkSlicerImhostModelsLogic() { this->SetPluginFolder(""); }

vtkSlicerImhostModelsLogic::~vtkSlicerImhostModelsLogic() {
    this->Controller.reset();  // cancels and joins a run still going, before the registry goes
    this->Run.reset();
    this->Registry.reset();
    this->SetPluginFolder(nullptr);
}

void vtkSlicerImhostModelsLogic::PrintSelf(ostream& os, vtkIndent indent) {
    this->Superclass::PrintSelf(os, indent);
    os << indent << "PluginFolder: " << (this->PluginFolder ? this->PluginFolder : "") << "\n";
}

void vtkSlicerImhostModelsLogic::SetMRMLSceneInternal(vtkMRMLScene* newScene) {
    vtkNew<vtkIntArray> events;
    events->InsertNextValue(vtkMRMLScene::StartCloseEvent);
    this->SetAndObserveMRMLSceneEventsInternal(newScene, events);
    if (newScene) {
        if (!newScene->IsNodeClassRegistered("vtkMRMLSegmentationNode")) newScene->RegisterNodeClass(vtkNew<vtkMRMLSegmentationNode>());
        if (!newScene->IsNodeClassRegistered("vtkMRMLSegmentationDisplayNode"))
            newScene->RegisterNodeClass(vtkNew<vtkMRMLSegmentationDisplayNode>());
    }
}

void vtkSlicerImhostModelsLogic::OnMRMLSceneStartClose() {
    if (this->Run) {
        this->DiscardResult = true;
        this->CancelRun();
    }
}

bool vtkSlicerImhostModelsLogic::RefreshModels() {
    if (this->IsRunning()) {
        this->StatusMessage = "a run is still going: wait for it or cancel it";
        return false;
    }
    if (!this->Controller) this->Controller = std::make_unique<imhost_slicer::RunController>();
    imhost::RegistryOptions options;
    options.standard_locations = this->StandardLocations;
    if (this->PluginFolder && *this->PluginFolder) options.paths.push_back(this->PluginFolder);
    // The perfusion models correct motion with Slicer's own ITK.
    options.registration = &imhost::itk::registration_callback;
    options.registration_name = imhost::itk::description().c_str();
    try {
        this->Registry = std::make_unique<imhost::Registry>(this->Controller->context(), options);
        this->ListJSON = this->Registry->list_json();
    } catch (const std::exception& e) {
        this->Registry.reset();
        this->StatusMessage = std::string("cannot open the model registry: ") + e.what();
        return false;
    }
    this->LoadProblems.clear();
    const json list = json::parse(this->ListJSON);
    for (const json& p : list["problems"]) this->LoadProblems.push_back(p.value("path", "") + ": " + p.value("message", ""));
    this->Controller->ForwardLog();
    std::ostringstream status;
    status << list["models"].size() << " models";
    if (!this->LoadProblems.empty()) status << "; " << this->LoadProblems.size() << " could not be loaded (see the list)";
    this->StatusMessage = status.str();
    return true;
}

std::vector<std::string> vtkSlicerImhostModelsLogic::GetModelIDs() const {
    std::vector<std::string> out;
    if (this->ListJSON.empty()) return out;
    const json list = json::parse(this->ListJSON);  // kept alive for the loop
    for (const json& m : list["models"]) out.push_back(m.value("id", ""));
    return out;
}

std::string vtkSlicerImhostModelsLogic::GetManifestJSON(const std::string& id) const {
    if (!this->Registry) return "";
    try {
        return this->Registry->manifest_json(id);
    } catch (const std::exception&) {
        return "";
    }
}

std::string vtkSlicerImhostModelsLogic::GetModelSummary(const std::string& id) const {
    const std::string text = this->GetManifestJSON(id);
    if (text.empty()) return "";
    const json m = json::parse(text);
    std::string s = m.value("name", id) + " " + m.value("version", "") + " - " + m.value("licence", "licence not stated");
    if (m.contains("reference") && m["reference"].is_string()) s += " - " + m["reference"].get<std::string>();
    return s;
}

std::vector<imhost_slicer::OptionField> vtkSlicerImhostModelsLogic::GetOptionFields(const std::string& id) const {
    std::vector<imhost_slicer::OptionField> out;
    const std::string text = this->GetManifestJSON(id);
    if (text.empty()) return out;
    const json m = json::parse(text);
    if (!m.contains("options") || !m["options"].is_object()) return out;
    for (const auto& [name, spec] : m["options"].items()) {
        imhost_slicer::OptionField f;
        f.name = name;
        f.type = spec.value("type", "string");
        if (f.type == "string" && spec.contains("enum")) {
            f.type = "enum";
            for (const json& c : spec["enum"]) f.choices.push_back(c.get<std::string>());
        }
        f.default_value = spec.contains("default") ? Text(spec["default"]) : "";
        if (spec.contains("minimum") && spec["minimum"].is_number()) f.has_minimum = true, f.minimum = spec["minimum"].get<double>();
        if (spec.contains("maximum") && spec["maximum"].is_number()) f.has_maximum = true, f.maximum = spec["maximum"].get<double>();
        f.unit = spec.value("unit", "");
        f.description = spec.value("description", "");
        out.push_back(f);
    }
    return out;
}

std::vector<imhost_slicer::InputField> vtkSlicerImhostModelsLogic::GetInputFields(const std::string& id) const {
    std::vector<imhost_slicer::InputField> out;
    const std::string text = this->GetManifestJSON(id);
    if (text.empty()) return out;
    const json manifest = json::parse(text);  // kept alive for the loop
    for (const json& i : manifest["inputs"]) out.push_back({i.value("name", ""), i.value("dims", 3), i.value("modality", "any")});
    return out;
}

bool vtkSlicerImhostModelsLogic::MakeOptionsJSON(const std::string& id, const std::map<std::string, std::string>& values,
                                                 std::string& out, std::string& error) const {
    json options = json::object();
    const auto fields = this->GetOptionFields(id);
    for (const auto& [name, text] : values) {
        auto f = std::find_if(fields.begin(), fields.end(), [&](const imhost_slicer::OptionField& x) { return x.name == name; });
        if (f == fields.end()) {
            error = "'" + id + "' has no option '" + name + "'";
            return false;
        }
        if (f->type == "boolean") {
            if (text != "true" && text != "false") {
                error = name + " must be true or false";
                return false;
            }
            options[name] = text == "true";
        } else if (f->type == "number" || f->type == "integer") {
            char* end = nullptr;
            const double x = std::strtod(text.c_str(), &end);
            if (text.empty() || *end != '\0' || !std::isfinite(x) || (f->type == "integer" && x != std::floor(x))) {
                error = name + " must be " + (f->type == "integer" ? "a whole number" : "a number") + ", not '" + text + "'";
                return false;
            }
            if ((f->has_minimum && x < f->minimum) || (f->has_maximum && x > f->maximum)) {
                std::ostringstream s;
                s << name << " must be";
                if (f->has_minimum) s << " >= " << f->minimum;
                if (f->has_minimum && f->has_maximum) s << " and";
                if (f->has_maximum) s << " <= " << f->maximum;
                if (!f->unit.empty()) s << " " << f->unit;
                error = s.str();
                return false;
            }
            if (f->type == "integer") options[name] = static_cast<long long>(x);
            else options[name] = x;
        } else {
            if (f->type == "enum" && std::find(f->choices.begin(), f->choices.end(), text) == f->choices.end()) {
                std::string list;
                for (const auto& c : f->choices) list += (list.empty() ? "" : ", ") + c;
                error = name + " must be one of " + list;
                return false;
            }
            options[name] = text;
        }
    }
    out = options.dump();
    return true;
}

bool vtkSlicerImhostModelsLogic::IsRunning() const {
    return this->Controller && this->Controller->state() == imhost_slicer::RunController::State::Running;
}
double vtkSlicerImhostModelsLogic::GetRunProgress() const { return this->Controller ? this->Controller->fraction() : 0.0; }
std::string vtkSlicerImhostModelsLogic::GetRunStage() const { return this->Controller ? this->Controller->stage() : ""; }
double vtkSlicerImhostModelsLogic::GetRunSecondsLeft() const { return this->Controller ? this->Controller->seconds_left() : -1.0; }
void vtkSlicerImhostModelsLogic::CancelRun() {
    if (this->Controller) this->Controller->Cancel();
}

bool vtkSlicerImhostModelsLogic::StartModel(const std::string& id, const std::vector<vtkMRMLNode*>& inputs,
                                            const std::string& optionsJSON) {
    if (!this->GetMRMLScene()) return this->StatusMessage = "no scene", false;
    if (this->IsRunning()) return this->StatusMessage = "a run is still going: wait for it or cancel it", false;
    if (!this->Registry && !this->RefreshModels()) return false;
    const std::string manifest = this->GetManifestJSON(id);
    if (manifest.empty()) return this->StatusMessage = "no model '" + id + "' (refresh the list)", false;
    const auto fields = this->GetInputFields(id);
    if (inputs.size() != fields.size())
        return this->StatusMessage = "'" + id + "' takes " + std::to_string(fields.size()) + " input(s), " +
                                     std::to_string(inputs.size()) + " given", false;
    auto run = std::make_unique<Pending>();
    run->id = id;
    run->name = json::parse(manifest).value("name", id);
    run->options = optionsJSON;
    run->images.reserve(inputs.size());
    run->studies.reserve(inputs.size());
    for (std::size_t n = 0; n < inputs.size(); ++n) {
        std::string error;
        if (fields[n].dims == 4) {
            run->studies.emplace_back();
            if (!imhost_slicer::ReadStudy(inputs[n], run->studies.back(), error))
                return this->StatusMessage = fields[n].name + ": " + error, false;
            run->order.emplace_back(true, run->studies.size() - 1);
        } else {
            run->images.emplace_back();
            if (!imhost_slicer::ReadImage(inputs[n], run->images.back(), error))
                return this->StatusMessage = fields[n].name + ": " + error, false;
            run->order.emplace_back(false, run->images.size() - 1);
        }
        if (n == 0) run->input_name = inputs[n]->GetName() ? inputs[n]->GetName() : "input";
    }
    this->DiscardResult = false;
    Pending* p = run.get();
    const imhost::Registry* registry = this->Registry.get();
    this->Run = std::move(run);
    this->Controller->Start([p, registry](const imhost::Context& context, const imhost::RunOptions& options) {
        std::vector<imhost::View> views;  // a Sequence is copied here, off the main thread
        for (const auto& [study, index] : p->order) {
            if (study) p->studies[index].Copy();
            views.push_back(study ? p->studies[index].view() : p->images[index].view());
        }
        imhost::ModelResult result = registry->run(context, p->id, views, p->options, options);
        p->result = std::make_unique<imhost::ModelResult>(std::move(result));
    });
    this->StatusMessage = "running " + this->Run->name + " on '" + this->Run->input_name + "'";
    return true;
}

int vtkSlicerImhostModelsLogic::ProcessRun() {
    if (!this->Controller) return Idle;
    this->Controller->ForwardLog();
    const bool keep = !this->DiscardResult && this->GetMRMLScene();
    const int state = this->Controller->Process(!keep, [this] { this->ApplyResult(); }, this->StatusMessage);
    if (state != Running && state != Idle) this->Run.reset();
    return state;
}

int vtkSlicerImhostModelsLogic::RunAndWait(const std::string& id, const std::vector<vtkMRMLNode*>& inputs,
                                           const std::string& optionsJSON) {
    if (!this->StartModel(id, inputs, optionsJSON)) return Failed;
    return imhost_slicer::RunController::WaitFor([this] { return this->ProcessRun(); });
}

void vtkSlicerImhostModelsLogic::ApplyResult() {
    vtkMRMLScene* scene = this->GetMRMLScene();
    Pending& run = *this->Run;
    const imhost::ModelResult& result = *run.result;
    this->ResultJSON = result.json();
    const json summary = json::parse(this->ResultJSON);
    std::map<std::string, json> outputs;
    for (const json& o : summary["outputs"]) outputs[o.value("name", "")] = o;
    std::vector<vtkMRMLNode*> added;
    auto mark = [&](vtkMRMLNode* node) {
        node->SetAttribute("imhost.ResearchUseOnly", kResearchUseOnly);
        node->SetAttribute("imhost.Model", run.id.c_str());
        node->SetDescription(kResearchUseOnly);
        added.push_back(node);
    };
    scene->StartState(vtkMRMLScene::BatchProcessState);
    for (std::size_t n = 0; n < result.volume_count(); ++n) {
        const auto [name, view] = result.volume(n);
        const json& spec = outputs[name];
        const std::string title = run.input_name + " " + name;
        if (spec.value("kind", "") == "labelmap" && view.dtype() == imhost::DType::U8) {
            auto* seg = vtkMRMLSegmentationNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLSegmentationNode", title));
            seg->CreateDefaultDisplayNodes();
            const imhost::Shape shape = view.shape();
            for (const json& label : spec["labels"]) {
                const int value = label.value("value", 0);
                vtkNew<vtkOrientedImageData> image;
                image->SetDimensions(static_cast<int>(shape[0]), static_cast<int>(shape[1]), static_cast<int>(shape[2]));
                image->AllocateScalars(VTK_UNSIGNED_CHAR, 1);
                image->SetImageToWorldMatrix(imhost_slicer::IJKToRAS(view));
                auto* out = static_cast<uint8_t*>(image->GetScalarPointer());
                std::size_t i = 0;
                for (int64_t k = 0; k < shape[2]; ++k)
                    for (int64_t j = 0; j < shape[1]; ++j)
                        for (int64_t x = 0; x < shape[0]; ++x, ++i) out[i] = view.at<uint8_t>(x, j, k) == value;
                double color[3] = {0.5, 0.5, 0.5};
                if (label.contains("color") && label["color"].size() == 3)
                    for (int c = 0; c < 3; ++c) color[c] = label["color"][static_cast<std::size_t>(c)].get<double>() / 255.0;
                seg->AddSegmentFromBinaryLabelmapRepresentation(image, label.value("name", std::to_string(value)), color,
                                                                name + "_" + std::to_string(value));
            }
            mark(seg);
        } else {
            auto* node = imhost_slicer::AddVolume(scene, title, view);
            if (spec.contains("unit")) node->SetAttribute("imhost.Unit", spec.value("unit", "").c_str());
            mark(node);
        }
    }
    bool any_score = false;
    for (const auto& [name, spec] : outputs) any_score = any_score || spec.value("kind", "") == "score";
    if (any_score) {
        auto* table = vtkMRMLTableNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLTableNode", run.input_name + " " + run.name + " scores"));
        for (const char* column : {"Score", "Value", "Unit", "Description"}) {
            vtkNew<vtkStringArray> a;
            a->SetName(column);
            table->AddColumn(a);
        }
        for (const auto& [name, spec] : outputs) {
            if (spec.value("kind", "") != "score") continue;
            const int r = table->AddEmptyRow();
            table->SetCellText(r, 0, name.c_str());
            const std::optional<double> value = result.score(name);
            std::ostringstream s;
            s.precision(10);
            if (value) s << *value;
            table->SetCellText(r, 1, value ? s.str().c_str() : "withheld");
            table->SetCellText(r, 2, spec.value("unit", "").c_str());
            table->SetCellText(r, 3, spec.value("description", "").c_str());
        }
        mark(table);
    }
    scene->EndState(vtkMRMLScene::BatchProcessState);
    const long long folder = imhost_slicer::FileInFolder(scene, run.input_name + " - " + run.name + " (research use only)", added);
    this->ResultFolderItemID = folder;
    this->ResultNodeIDs.clear();
    for (vtkMRMLNode* node : added) this->ResultNodeIDs.push_back(node->GetID());
    this->StatusMessage = run.name + " on '" + run.input_name + "': " + std::to_string(added.size()) + " result node(s) (research use only)";
}
