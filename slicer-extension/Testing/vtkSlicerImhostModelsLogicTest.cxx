// imhost Models logic against real MRML: the registry from a plugin folder (the C threshold
// example next to broken test plugins) and a TorchScript package folder; the options form from
// the manifest; the C plugin and the TorchScript package run on a CT volume node, their label
// maps as segmentations equal to the imhost command's outputs (and, for the threshold, to a hand
// computation), scores in a table; bad input refused with nothing added.
// A registry perfusion model on a moving phantom corrects motion with Slicer's ITK.
//   vtkSlicerImhostModelsLogicTest IMHOST_COMMAND PHANTOM_DIR MOVING_PHANTOM_DIR PLUGIN_DIR PACKAGES_DIR WORK_DIR
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <string>

#include <vtkImageData.h>
#include <vtkMRMLScalarVolumeNode.h>
#include <vtkMRMLScene.h>
#include <vtkMRMLSegmentationNode.h>
#include <vtkMRMLTableNode.h>
#include <vtkMRMLVectorVolumeNode.h>
#include <vtkMatrix4x4.h>
#include <vtkNew.h>
#include <vtkOrientedImageData.h>
#include <vtkSegment.h>
#include <vtkSegmentation.h>
#include <vtk_nlohmannjson.h>
#include VTK_NLOHMANN_JSON(json.hpp)

#include "imhost.hpp"
#include "vtkSlicerImhostTestUtils.h"
#include "vtkSlicerImhostConversion.h"
#include "vtkSlicerImhostModelsLogic.h"

using json = nlohmann::json;
namespace {
/// Voxels of segment `id` that differ from `want(i, j, k)`, and how many are set.
template <class F>
std::pair<std::size_t, std::size_t> Compare(vtkMRMLSegmentationNode* seg, const std::string& id, const int64_t shape[3], F want) {
    vtkNew<vtkOrientedImageData> labelmap;
    seg->GetBinaryLabelmapRepresentation(id, labelmap);
    int e[6];
    labelmap->GetExtent(e);
    std::size_t differ = 0, count = 0;
    for (int k = 0; k < shape[2]; ++k)
        for (int j = 0; j < shape[1]; ++j)
            for (int i = 0; i < shape[0]; ++i) {
                bool got = false;
                if (i >= e[0] && i <= e[1] && j >= e[2] && j <= e[3] && k >= e[4] && k <= e[5])
                    got = labelmap->GetScalarComponentAsDouble(i, j, k, 0) != 0;
                const bool w = want(i, j, k);
                differ += got != w;
                count += w;
            }
    return {differ, count};
}
}  // namespace

int main(int argc, char** argv) {
    if (argc != 7) {
        std::cerr << "usage: " << argv[0] << " IMHOST_COMMAND PHANTOM_DIR MOVING_PHANTOM_DIR PLUGIN_DIR PACKAGES_DIR WORK_DIR\n";
        return 2;
    }
    const std::string command = argv[1], phantom = argv[2], moving = argv[3], plugins = argv[4], packages = argv[5],
                      work = argv[6];
    imhost::Context context;
    // A CT volume: the phantom's first frame, written and read back so both paths see one file.
    imhost::Volume ctp = context.read(phantom + "/ctp.nii.gz");
    const imhost::View v4 = ctp.view();
    const imhost::View frame = imhost::View::three_d(static_cast<const int16_t*>(v4.c().data), v4.shape(), v4.strides(), v4.geometry());
    imhost::write(context, frame, work + "/ct.nii.gz");
    imhost::Volume ct = context.read(work + "/ct.nii.gz");
    const imhost::View cv = ct.view();
    const int64_t shape[3] = {cv.shape()[0], cv.shape()[1], cv.shape()[2]};

    vtkNew<vtkMRMLScene> scene;
    vtkNew<vtkSlicerImhostModelsLogic> logic;
    logic->SetMRMLScene(scene);
    logic->SetStandardLocations(false);
    logic->SetPluginFolder(plugins.c_str());
    CHECK(logic->RefreshModels(), "registry opened: " << logic->GetStatusMessage());
    std::cout << "registry: " << logic->GetStatusMessage() << "\n";
    const auto ids = logic->GetModelIDs();
    auto has = [&](const std::string& id) { return std::find(ids.begin(), ids.end(), id) != ids.end(); };
    CHECK(has("example.c-threshold") && has("perfusion-osvd") && has("mip"), "built-ins and the C plugin are listed");
    CHECK(!logic->GetLoadProblems().empty(), "the broken plugins of the folder are listed as problems");
    bool major = false;
    for (const auto& p : logic->GetLoadProblems()) major = major || p.find("test_bad_major") != std::string::npos;
    CHECK(major, "the wrong-ABI plugin is named among the problems");
    CHECK(logic->GetModelSummary("example.c-threshold").find("Threshold (C example) 1.0.0 - Apache-2.0") == 0,
          "summary: " << logic->GetModelSummary("example.c-threshold"));

    // The options form.
    const auto fields = logic->GetOptionFields("example.c-threshold");
    std::map<std::string, imhost_slicer::OptionField> byName;
    for (const auto& f : fields) byName[f.name] = f;
    CHECK(byName.size() == 3 && byName["lower"].type == "number" && byName["min_voxels"].type == "integer" &&
              byName["min_voxels"].has_minimum && byName["min_voxels"].minimum == 1 && byName["lower"].default_value == "130",
          "option fields from the manifest");
    const auto pf = logic->GetOptionFields("perfusion-osvd");
    bool boolean = false;
    for (const auto& f : pf) boolean = boolean || (f.name == "motion_correction" && f.type == "boolean" && f.default_value == "true");
    CHECK(boolean, "boolean option field");
    std::string options, error;
    CHECK(!logic->MakeOptionsJSON("example.c-threshold", {{"min_voxels", "0"}}, options, error) && error.find(">= 1") != std::string::npos,
          "range checked: " << error);
    CHECK(!logic->MakeOptionsJSON("example.c-threshold", {{"lower", "abc"}}, options, error), "type checked");
    CHECK(!logic->MakeOptionsJSON("example.c-threshold", {{"lowr", "1"}}, options, error) && error.find("no option") != std::string::npos,
          "unknown option refused");
    CHECK(logic->MakeOptionsJSON("example.c-threshold", {{"lower", "40"}, {"upper", "80"}, {"min_voxels", "3"}}, options, error),
          "valid options: " << error);
    const auto inputs = logic->GetInputFields("example.c-threshold");
    CHECK(inputs.size() == 1 && inputs[0].dims == 3, "declared inputs");

    auto* node = vtkMRMLScalarVolumeNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT"));
    node->SetAndObserveImageData(imhost_slicer::ImageFromView(cv));  // float copy of the CT
    node->SetIJKToRASMatrix(imhost_slicer::IJKToRAS(cv));

    // The C plugin, against the command and a hand computation.
    const std::string cli = command + " run example.c-threshold --input '" + work + "/ct.nii.gz' --out '" + work +
                            "/threshold' --plugin '" + plugins + "/libexample_c_threshold.so' -o lower=40 -o upper=80 -o min_voxels=1 --overwrite -q";
    CHECK(std::system(cli.c_str()) == 0, "command: " << cli);
    CHECK(logic->MakeOptionsJSON("example.c-threshold", {{"lower", "40"}, {"upper", "80"}, {"min_voxels", "1"}}, options, error), error);
    CHECK(logic->RunAndWait("example.c-threshold", {node}, options) == vtkSlicerImhostModelsLogic::Succeeded,
          "threshold ran: " << logic->GetStatusMessage());
    auto* seg = vtkMRMLSegmentationNode::SafeDownCast(scene->GetFirstNodeByName("CT mask"));
    CHECK(seg && seg->GetSegmentation()->GetNumberOfSegments() == 1, "mask as a segmentation");
    if (seg) {
        vtkSegment* s = seg->GetSegmentation()->GetSegment("mask_1");
        CHECK(s && s->GetName() == std::string("in range"), "label name from the manifest");
        if (s) CHECK(std::abs(s->GetColor()[0] - 230.0 / 255) < 1e-9 && std::abs(s->GetColor()[1] - 80.0 / 255) < 1e-9, "label colour");
        auto [differ, count] = Compare(seg, "mask_1", shape, [&](int i, int j, int k) {
            const int16_t x = cv.at<int16_t>(i, j, k);
            return x >= 40 && x <= 80;
        });
        CHECK(differ == 0 && count > 0, differ << " voxels differ from 40 <= HU <= 80 (" << count << " set)");
        imhost::Volume expected = context.read(work + "/threshold/mask.nii.gz");
        const imhost::View ev = expected.view();
        auto [d2, c2] = Compare(seg, "mask_1", shape, [&](int i, int j, int k) { return ev.at<uint8_t>(i, j, k) == 1; });
        CHECK(d2 == 0, d2 << " voxels differ from the command's mask");
    }
    auto* table = vtkMRMLTableNode::SafeDownCast(scene->GetFirstNodeByName("CT Threshold (C example) scores"));
    CHECK(table, "scores table");
    if (table) {
        std::ifstream f(work + "/threshold/result.json");
        const json cli_result = json::parse(f);
        for (int r = 0; r < table->GetNumberOfRows(); ++r) {
            const std::string name = table->GetCellText(r, 0);
            const double got = std::stod(table->GetCellText(r, 1));
            const double want = cli_result["scores"][name].get<double>();
            CHECK(std::abs(got - want) <= 1e-9 * std::max(1.0, std::abs(want)), name << ": " << got << " vs " << want);
        }
        CHECK(table->GetNumberOfRows() == 2, "two scores");
    }
    for (const std::string& id : logic->GetResultNodeIDs())
        CHECK(scene->GetNodeByID(id)->GetAttribute("imhost.ResearchUseOnly"), id << " says research use only");

    // A TorchScript package from the registry (run by imhost-model-worker).
    logic->SetPluginFolder(packages.c_str());
    CHECK(logic->RefreshModels(), "registry with the package folder: " << logic->GetStatusMessage());
    const std::string cli2 = command + " run test.ts-lesion --input '" + work + "/ct.nii.gz' --out '" + work + "/lesion' --plugin '" +
                             packages + "' --overwrite -q";
    CHECK(std::system(cli2.c_str()) == 0, "command: " << cli2);
    CHECK(logic->RunAndWait("test.ts-lesion", {node}, "") == vtkSlicerImhostModelsLogic::Succeeded,
          "TorchScript package ran: " << logic->GetStatusMessage());
    auto* lesion = vtkMRMLSegmentationNode::SafeDownCast(scene->GetFirstNodeByName("CT lesion"));
    CHECK(lesion, "lesion segmentation");
    if (lesion) {
        imhost::Volume expected = context.read(work + "/lesion/lesion.nii.gz");
        const imhost::View ev = expected.view();
        auto [differ, count] = Compare(lesion, "lesion_1", shape, [&](int i, int j, int k) { return ev.at<uint8_t>(i, j, k) == 1; });
        CHECK(differ == 0 && count > 0, differ << " voxels differ from the command's lesion (" << count << " set)");
    }
    CHECK(scene->GetFirstNodeByName("CT probability") != nullptr, "maps as volumes");

    // A registry perfusion model on a 4-D input (a Sequence), motion corrected by Slicer's ITK.
    {
        imhost::Volume mv = context.read(moving + "/ctp.nii.gz");
        const imhost::View v = mv.view();
        vtkMRMLSequenceNode* seq = AddSequence(scene, v, MatrixOfView(v), "Moving phantom");
        const auto fields4 = logic->GetInputFields("perfusion-bsvd");
        CHECK(fields4.size() == 1 && fields4[0].dims == 4, "perfusion takes one 4-D input");
        CHECK(logic->RunAndWait("perfusion-bsvd", {seq}, "") == vtkSlicerImhostModelsLogic::Succeeded,
              "perfusion-bsvd ran: " << logic->GetStatusMessage());
        const json r = json::parse(logic->GetResultJSON());
        const json& motion = r["report"]["motion"];
        CHECK(motion["corrected"] == true && motion["backend"].is_string() &&
                  motion["backend"].get<std::string>().find("ITK 5.4") == 0,
              "the registry's perfusion model corrected motion with Slicer's ITK: " << motion.dump().substr(0, 200));
        auto* lesions = vtkMRMLSegmentationNode::SafeDownCast(scene->GetFirstNodeByName("Moving phantom lesions"));
        CHECK(lesions && lesions->GetSegmentation()->GetNumberOfSegments() >= 2, "the lesion label map as segments");
        CHECK(scene->GetFirstNodeByName("Moving phantom cbf") != nullptr, "the CBF map as a volume");
    }

    // Bad input: nothing added.
    const int before = scene->GetNumberOfNodes();
    auto* rgb = vtkMRMLVectorVolumeNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLVectorVolumeNode", "photo"));
    vtkNew<vtkImageData> img;
    img->SetDimensions(4, 4, 1);
    img->AllocateScalars(VTK_UNSIGNED_CHAR, 3);
    rgb->SetAndObserveImageData(img);
    const int with_rgb = scene->GetNumberOfNodes();
    CHECK(!logic->StartModel("test.ts-lesion", {rgb}, ""), "RGB refused");
    CHECK(logic->GetStatusMessage().find("colour (RGB)") != std::string::npos, "message: " << logic->GetStatusMessage());
    CHECK(!logic->StartModel("test.ts-lesion", {}, ""), "missing input refused");
    CHECK(!logic->StartModel("no.such-model", {node}, ""), "unknown model refused");
    CHECK(scene->GetNumberOfNodes() == with_rgb && with_rgb == before + 1, "nothing added");

    if (TestFailures()) std::cerr << TestFailures() << " check(s) failed\n";
    else std::cout << "all imhost Models logic checks passed\n";
    return TestFailures() ? 1 : 0;
}
