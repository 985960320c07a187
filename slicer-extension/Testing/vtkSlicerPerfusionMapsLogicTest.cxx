// Perfusion Maps logic against Slicer's real MRML (the slicer-core wheel): a phantom study as a
// Sequence with a rotated, anisotropic IJK-to-RAS → Generate perfusion maps → every output node
// checked against the imhost command's maps on the same study; bad inputs refused with a clear
// message and nothing added; cancel and scene close mid-run; motion corrected by Slicer's ITK.
//   vtkSlicerPerfusionMapsLogicTest IMHOST_COMMAND PHANTOM_DIR MOTION_PHANTOM_DIR WORK_DIR
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <vtkCodedEntry.h>
#include <vtkImageData.h>
#include <vtkMRMLMarkupsFiducialNode.h>
#include <vtkMRMLPlotChartNode.h>
#include <vtkMRMLPlotSeriesNode.h>
#include <vtkMRMLScalarVolumeDisplayNode.h>
#include <vtkMRMLScalarVolumeNode.h>
#include <vtkMRMLScene.h>
#include <vtkMRMLSegmentationNode.h>
#include <vtkMRMLSequenceNode.h>
#include <vtkMRMLSubjectHierarchyNode.h>
#include <vtkMRMLTableNode.h>
#include <vtkMRMLVectorVolumeNode.h>
#include <vtkMatrix4x4.h>
#include <vtkNew.h>
#include <vtkOrientedImageData.h>
#include <vtkSegment.h>
#include <vtkSegmentation.h>
#include <vtkTable.h>
#include <vtk_nlohmannjson.h>
#include VTK_NLOHMANN_JSON(json.hpp)

#include "imhost.hpp"
#include "vtkSlicerImhostTestUtils.h"
#include "vtkSlicerImhostConversion.h"
#include "vtkSlicerPerfusionMapsLogic.h"

using json = nlohmann::json;

namespace {
// A rotated (about z by 20°, about x by 10°), anisotropic grid, in Slicer's RAS.
vtkSmartPointer<vtkMatrix4x4> RotatedGrid(const double spacing[3]) {
    const double a = 20.0 * M_PI / 180, b = 10.0 * M_PI / 180;
    const double rz[3][3] = {{std::cos(a), -std::sin(a), 0}, {std::sin(a), std::cos(a), 0}, {0, 0, 1}};
    const double rx[3][3] = {{1, 0, 0}, {0, std::cos(b), -std::sin(b)}, {0, std::sin(b), std::cos(b)}};
    auto m = vtkSmartPointer<vtkMatrix4x4>::New();
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) {
            double v = 0;
            for (int k = 0; k < 3; ++k) v += rz[r][k] * rx[k][c];
            m->SetElement(r, c, v * spacing[c]);
        }
    m->SetElement(0, 3, -31.5), m->SetElement(1, 3, 12.25), m->SetElement(2, 3, -40.0);
    return m;
}

int NodeCount(vtkMRMLScene* scene) { return scene->GetNumberOfNodes(); }

bool SameMatrix(vtkMatrix4x4* a, vtkMatrix4x4* b, double tol) {
    for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c)
            if (std::abs(a->GetElement(r, c) - b->GetElement(r, c)) > tol) return false;
    return true;
}

std::string Cell(vtkMRMLTableNode* table, const std::string& measure, int column) {
    for (int r = 0; r < table->GetNumberOfRows(); ++r)
        if (table->GetCellText(r, 0) == measure) return table->GetCellText(r, column);
    return "<missing>";
}

double Num(const json& v) { return v.get<double>(); }
}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) {
        std::cerr << "usage: " << argv[0] << " IMHOST_COMMAND PHANTOM_DIR MOTION_PHANTOM_DIR WORK_DIR\n";
        return 2;
    }
    const std::string command = argv[1], phantom = argv[2], motion_phantom = argv[3], work = argv[4];
    imhost::Context context;

    // --- The study on a rotated anisotropic grid, written for the command as well ------------
    imhost::Volume source = context.read(phantom + "/ctp.nii.gz");
    const double spacing[3] = {1.8, 2.1, 5.5};
    vtkSmartPointer<vtkMatrix4x4> grid = RotatedGrid(spacing);
    imhost::Matrix4 m{};
    for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) m[static_cast<std::size_t>(4 * r + c)] = grid->GetElement(r, c);
    const imhost::View sv = source.view();
    const imhost::View rotated = imhost::View::four_d(static_cast<const int16_t*>(sv.c().data), sv.shape(), sv.strides(),
                                                      imhost::Geometry::from_ijk_to_ras(m), sv.frame_times());
    imhost::write(context, rotated, work + "/study.nii.gz");
    // The command reads the file (NIfTI keeps spacing as float32): both must see the same study.
    imhost::Volume written = context.read(work + "/study.nii.gz");
    const imhost::View study = written.view();
    {
        const imhost::Matrix4 w = study.geometry().ijk_to_ras();
        for (int r = 0; r < 4; ++r)
            for (int c = 0; c < 4; ++c) grid->SetElement(r, c, w[static_cast<std::size_t>(4 * r + c)]);
    }
    const std::string cli = command + " perfusion '" + work + "/study.nii.gz' --out '" + work + "/cli' --overwrite -q";
    CHECK(std::system(cli.c_str()) == 0, "the imhost command ran: " << cli);

    vtkNew<vtkMRMLScene> scene;
    vtkNew<vtkSlicerPerfusionMapsLogic> logic;
    logic->SetMRMLScene(scene);
    vtkMRMLSequenceNode* seq = AddSequence(scene, study, grid, "CTP phantom");

    // --- Generate perfusion maps --------------------------------------------------------------
    const int before = NodeCount(scene);
    const int state = logic->RunAndWait(seq);
    CHECK(state == vtkSlicerPerfusionMapsLogic::Succeeded, "run succeeded: " << logic->GetStatusMessage());
    std::cout << "status: " << logic->GetStatusMessage() << "\n";
    std::cout << "input copy: " << logic->GetInputCopyBytes() << " bytes; longest main-thread update "
              << logic->GetLongestMainThreadUpdate() * 1000 << " ms\n";
    CHECK(logic->GetInputCopyBytes() == static_cast<unsigned long long>(sv.shape()[0] * sv.shape()[1] * sv.shape()[2] * sv.shape()[3]) * 2,
          "exactly one copy of the input");
    const json report = json::parse(logic->GetReportJSON());
    std::ifstream cli_report_file(work + "/cli/report.json");
    const json cli_report = json::parse(cli_report_file);
    CHECK(report["readout"] == cli_report["readout"], "read-out equals the command's");
    CHECK(report["aif"]["curve_hu"] == cli_report["aif"]["curve_hu"], "AIF equals the command's");

    const char* maps[] = {"CBF", "CBV", "MTT", "TTP", "Tmax"};
    const char* files[] = {"cbf", "cbv", "mtt", "ttp", "tmax"};
    const char* units[] = {"ml/100 g/min", "ml/100 g", "s", "s", "s"};
    vtkMRMLSubjectHierarchyNode* sh = vtkMRMLSubjectHierarchyNode::GetSubjectHierarchyNode(scene);
    const vtkIdType folder = logic->GetResultFolderItemID();
    CHECK(folder != 0 && sh->GetItemName(folder).find("CTP phantom - imhost oSVD") == 0, "one folder named after study and method");
    for (int n = 0; n < 5; ++n) {
        auto* node = vtkMRMLScalarVolumeNode::SafeDownCast(scene->GetFirstNodeByName((std::string("CTP phantom ") + maps[n]).c_str()));
        CHECK(node, maps[n] << " volume exists");
        if (!node) continue;
        vtkNew<vtkMatrix4x4> got;
        node->GetIJKToRASMatrix(got);
        CHECK(SameMatrix(got, grid, 1e-9), maps[n] << " has the input's IJK-to-RAS");
        imhost::Volume expected = context.read(work + "/cli/" + files[n] + ".nii.gz");
        const imhost::View ev = expected.view();
        vtkImageData* image = node->GetImageData();
        int dims[3];
        image->GetDimensions(dims);
        CHECK(dims[0] == ev.shape()[0] && dims[1] == ev.shape()[1] && dims[2] == ev.shape()[2], maps[n] << " dimensions");
        std::size_t differ = 0, idx = 0;
        const float* px = static_cast<const float*>(image->GetScalarPointer());
        for (int64_t k = 0; k < ev.shape()[2]; ++k)
            for (int64_t j = 0; j < ev.shape()[1]; ++j)
                for (int64_t i = 0; i < ev.shape()[0]; ++i, ++idx)
                    if (px[idx] != ev.at<float>(i, j, k)) ++differ;
        CHECK(differ == 0, maps[n] << ": " << differ << " voxels differ from the command's map");
        CHECK(node->GetVoxelValueUnits() && node->GetVoxelValueUnits()->GetCodeMeaning() == std::string(units[n]),
              maps[n] << " units");
        CHECK(std::string(node->GetAttribute("imhost.ResearchUseOnly")).find("RESEARCH USE ONLY") == 0, maps[n] << " research use only");
        auto* display = node->GetScalarVolumeDisplayNode();
        CHECK(display && !display->GetAutoWindowLevel() && display->GetColorNode() &&
                  std::string(display->GetColorNode()->GetName()) == "imhost perfusion",
              maps[n] << " colour table and window/level");
        CHECK(sh->GetItemParent(sh->GetItemByDataNode(node)) == folder, maps[n] << " in the run's folder");
    }

    // Segmentation: core and penumbra = hypoperfusion minus core, voxel for voxel.
    auto* seg = vtkMRMLSegmentationNode::SafeDownCast(scene->GetFirstNodeByName("CTP phantom core and penumbra"));
    CHECK(seg && seg->GetSegmentation()->GetNumberOfSegments() == 2, "segmentation with two segments");
    if (seg) {
        vtkSegment* core = seg->GetSegmentation()->GetSegment("core");
        vtkSegment* pen = seg->GetSegmentation()->GetSegment("penumbra");
        CHECK(core && core->GetName() == std::string("Ischemic core"), "core segment name");
        CHECK(pen && pen->GetName() == std::string("Penumbra"), "penumbra segment name");
        if (core && pen) {
            CHECK(std::abs(core->GetColor()[0] - 0.85) < 1e-9 && std::abs(pen->GetColor()[1] - 0.8) < 1e-9, "segment colours");
            imhost::Volume ec = context.read(work + "/cli/core.nii.gz");
            imhost::Volume eh = context.read(work + "/cli/hypoperfusion.nii.gz");
            for (const char* id : {"core", "penumbra"}) {
                vtkNew<vtkOrientedImageData> labelmap;
                seg->GetBinaryLabelmapRepresentation(id, labelmap);
                vtkNew<vtkMatrix4x4> w;
                labelmap->GetImageToWorldMatrix(w);
                int extent[6];
                labelmap->GetExtent(extent);
                std::size_t differ = 0, count = 0;
                const imhost::View cv = ec.view(), hv = eh.view();
                for (int64_t k = 0; k < cv.shape()[2]; ++k)
                    for (int64_t j = 0; j < cv.shape()[1]; ++j)
                        for (int64_t i = 0; i < cv.shape()[0]; ++i) {
                            const bool c = cv.at<uint8_t>(i, j, k) != 0, h = hv.at<uint8_t>(i, j, k) != 0;
                            const bool want = std::string(id) == "core" ? c : (h && !c);
                            bool got = false;
                            if (i >= extent[0] && i <= extent[1] && j >= extent[2] && j <= extent[3] && k >= extent[4] && k <= extent[5])
                                got = labelmap->GetScalarComponentAsDouble(static_cast<int>(i), static_cast<int>(j), static_cast<int>(k), 0) != 0;
                            differ += want != got;
                            count += want;
                        }
                CHECK(differ == 0, id << ": " << differ << " voxels differ from the command's masks");
                CHECK(count > 0, id << " is not empty");
                if (count > 0) CHECK(SameMatrix(w, grid, 1e-6), id << " labelmap geometry is the input's");
            }
        }
    }

    // Table rows equal the report.
    auto* table = vtkMRMLTableNode::SafeDownCast(scene->GetFirstNodeByName("CTP phantom perfusion read-out"));
    CHECK(table, "read-out table");
    if (table) {
        const json& v = cli_report["readout"]["volumes"];
        CHECK(std::abs(std::stod(Cell(table, "Ischemic core", 1)) - Num(v["core_ml"])) <= 0.05 + 1e-9, "core volume row");
        CHECK(std::abs(std::stod(Cell(table, "Penumbra (mismatch)", 1)) - Num(v["mismatch_ml"])) <= 0.05 + 1e-9, "penumbra row");
        CHECK(std::abs(std::stod(Cell(table, "Mismatch ratio", 1)) - Num(v["mismatch_ratio"])) <= 0.005 + 1e-9, "ratio row");
        CHECK(std::abs(std::stod(Cell(table, "Hypoperfusion intensity ratio", 1)) - Num(v["hypoperfusion_intensity_ratio"])) <= 0.005 + 1e-9,
              "HIR row");
        const bool met = cli_report["readout"]["criteria"]["defuse3"]["met"].get<bool>();
        CHECK(Cell(table, "DEFUSE-3 imaging criteria", 1) == (met ? "met" : "not met"), "DEFUSE-3 row");
        CHECK(Cell(table, "DAWN imaging criteria", 1) == "not evaluated", "DAWN row without age/NIHSS");
        CHECK(Cell(table, "Research use only", 1) == "yes", "research-use row");
    }

    // Plot series equal the report's curves.
    auto* chart = vtkMRMLPlotChartNode::SafeDownCast(scene->GetFirstNodeByName("CTP phantom AIF and VOF"));
    auto* curves = vtkMRMLTableNode::SafeDownCast(scene->GetFirstNodeByName("CTP phantom AIF and VOF curves"));
    CHECK(chart && curves, "plot chart and its table");
    if (chart && curves) {
        const std::size_t series = cli_report["vof"].is_object() ? 2 : 1;
        CHECK(static_cast<std::size_t>(chart->GetNumberOfPlotSeriesNodes()) == series, "one series per vessel curve");
        vtkTable* t = curves->GetTable();
        const json& aif = cli_report["aif"]["curve_hu"];
        CHECK(static_cast<std::size_t>(t->GetNumberOfRows()) == aif.size(), "curve length");
        double worst = 0;
        for (std::size_t r = 0; r < aif.size(); ++r) {
            worst = std::max(worst, std::abs(t->GetValueByName(static_cast<vtkIdType>(r), "AIF (HU)").ToDouble() - Num(aif[r])));
            worst = std::max(worst, std::abs(t->GetValueByName(static_cast<vtkIdType>(r), "Time (s)").ToDouble() -
                                             Num(cli_report["analysis_times_s"][r])));
        }
        CHECK(worst < 1e-6, "AIF curve equals the report's (worst " << worst << ")");
    }

    // AIF location as a markup (LPS → RAS).
    auto* points = vtkMRMLMarkupsFiducialNode::SafeDownCast(scene->GetFirstNodeByName("CTP phantom AIF and VOF locations"));
    CHECK(points && points->GetNumberOfControlPoints() >= 1, "AIF/VOF markups");
    if (points && points->GetNumberOfControlPoints() >= 1) {
        double ras[3];
        points->GetNthControlPointPosition(0, ras);
        const json& lps = cli_report["aif"]["position_lps_mm"];
        CHECK(std::abs(ras[0] + Num(lps[0])) < 1e-9 && std::abs(ras[1] + Num(lps[1])) < 1e-9 && std::abs(ras[2] - Num(lps[2])) < 1e-9,
              "AIF markup at the report's position");
        CHECK(points->GetNthControlPointLabel(0) == "AIF", "AIF label");
    }
    for (const std::string& id : logic->GetResultNodeIDs()) {
        vtkMRMLNode* node = scene->GetNodeByID(id);
        CHECK(node && node->GetAttribute("imhost.ResearchUseOnly"), id << " says research use only");
        CHECK(node && sh->GetItemParent(sh->GetItemByDataNode(node)) == folder, id << " is in the run's folder");
    }
    bool logged = false;
    for (const std::string& line : logic->GetLogLines()) logged = logged || line.find("perfusion done") != std::string::npos;
    CHECK(logged, "library log records reached the logic");

    // --- A 4-D volume node (one component per frame, MultiVolume frame labels): read in place ---
    {
        const imhost::Shape s = study.shape();
        auto* mv = vtkMRMLScalarVolumeNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CTP as 4-D volume"));
        vtkNew<vtkImageData> image;
        image->SetDimensions(static_cast<int>(s[0]), static_cast<int>(s[1]), static_cast<int>(s[2]));
        image->AllocateScalars(VTK_SHORT, static_cast<int>(s[3]));
        auto* px = static_cast<int16_t*>(image->GetScalarPointer());
        std::size_t n = 0;
        for (int64_t k = 0; k < s[2]; ++k)
            for (int64_t j = 0; j < s[1]; ++j)
                for (int64_t i = 0; i < s[0]; ++i)
                    for (int64_t t = 0; t < s[3]; ++t) px[n++] = study.at<int16_t>(i, j, k, t);
        mv->SetAndObserveImageData(image);
        mv->SetIJKToRASMatrix(grid);
        std::string labels;
        for (int64_t t = 0; t < s[3]; ++t)
            labels += (t ? "," : "") + ExactText(study.frame_times()[static_cast<std::size_t>(t)] * 1000.0);
        mv->SetAttribute("MultiVolume.FrameLabels", labels.c_str());
        mv->SetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits", "ms");
        CHECK(logic->RunAndWait(mv) == vtkSlicerPerfusionMapsLogic::Succeeded, "4-D volume run: " << logic->GetStatusMessage());
        CHECK(logic->GetInputCopyBytes() == 0, "a 4-D volume is read in place");
        const json r4 = json::parse(logic->GetReportJSON());
        CHECK(r4["readout"] == cli_report["readout"], "the 4-D volume gives the command's read-out");
        auto* cbf = vtkMRMLScalarVolumeNode::SafeDownCast(scene->GetFirstNodeByName("CTP as 4-D volume CBF"));
        imhost::Volume expected = context.read(work + "/cli/cbf.nii.gz");
        const imhost::View ev = expected.view();
        std::size_t differ = 0, idx = 0;
        if (cbf) {
            const float* m = static_cast<const float*>(cbf->GetImageData()->GetScalarPointer());
            for (int64_t k = 0; k < s[2]; ++k)
                for (int64_t j = 0; j < s[1]; ++j)
                    for (int64_t i = 0; i < s[0]; ++i, ++idx) differ += m[idx] != ev.at<float>(i, j, k);
        }
        CHECK(cbf && differ == 0, "the 4-D volume's CBF equals the command's (" << differ << " differ)");
    }

    // --- A manual AIF (a point placed in an artery) and age/NIHSS for DAWN ----------------------
    {
        const json& voxel = cli_report["aif"]["voxels"][0];
        const double ijk[4] = {voxel[0].get<double>(), voxel[1].get<double>(), voxel[2].get<double>(), 1.0};
        double ras[4];
        grid->MultiplyPoint(ijk, ras);
        ras[0] += 0.2;  // a click a little off the voxel's centre rounds to it
        logic->SetAutomaticAIF(false);
        logic->SetAIFPointRAS(ras);
        logic->SetAge(72);
        logic->SetNIHSS(14);
        CHECK(logic->RunAndWait(seq) == vtkSlicerPerfusionMapsLogic::Succeeded, "manual AIF run: " << logic->GetStatusMessage());
        const json r = json::parse(logic->GetReportJSON());
        CHECK(r["aif"]["source"] == "manual", "the AIF is the user's: " << r["aif"]["source"]);
        CHECK(r["aif"]["voxels"][0] == voxel, "at the placed voxel: " << r["aif"]["voxels"][0] << " vs " << voxel);
        CHECK(r["readout"]["criteria"]["dawn"]["evaluated"] == true, "DAWN evaluated with age and NIHSS");
        auto* t = vtkMRMLTableNode::SafeDownCast(scene->GetFirstNodeByName("CTP phantom perfusion read-out"));
        CHECK(t && Cell(t, "DAWN imaging criteria", 1) != "not evaluated", "DAWN row filled");
        const double outside[3] = {1e4, 0, 0};
        logic->SetAIFPointRAS(const_cast<double*>(outside));
        const int n = NodeCount(scene);
        CHECK(!logic->StartPerfusion(seq) && logic->GetStatusMessage().find("outside the study") != std::string::npos,
              "an AIF point outside the study is refused: " << logic->GetStatusMessage());
        CHECK(NodeCount(scene) == n, "nothing added");
        logic->SetAutomaticAIF(true);
        logic->SetAge(-1);
        logic->SetNIHSS(-1);
    }

    // --- Re-running: replace, or add ------------------------------------------------------------
    const int after_first = NodeCount(scene);
    CHECK(after_first > before, "nodes were added");
    CHECK(logic->RunAndWait(seq) == vtkSlicerPerfusionMapsLogic::Succeeded, "second run");
    CHECK(NodeCount(scene) == after_first, "replacing keeps one set of results (" << NodeCount(scene) << " vs " << after_first << ")");
    logic->SetReplaceResults(false);
    CHECK(logic->RunAndWait(seq) == vtkSlicerPerfusionMapsLogic::Succeeded, "third run");
    CHECK(NodeCount(scene) > after_first, "adding keeps both");
    logic->SetReplaceResults(true);

    // --- Bad input: a clear message, nothing added -----------------------------------------------
    auto refused = [&](vtkMRMLNode* input, const std::string& expect) {
        const int n = NodeCount(scene);
        const bool started = logic->StartPerfusion(input);
        CHECK(!started, "refused: " << expect);
        CHECK(logic->GetStatusMessage().find(expect) != std::string::npos,
              "message '" << logic->GetStatusMessage() << "' says '" << expect << "'");
        CHECK(NodeCount(scene) == n, "nothing added for: " << expect);
    };
    auto* frame0 = vtkMRMLScalarVolumeNode::SafeDownCast(seq->GetNthDataNode(0));
    auto* single = vtkMRMLScalarVolumeNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLScalarVolumeNode", "one frame"));
    single->SetAndObserveImageData(frame0->GetImageData());
    refused(single, "is a 3-D volume");
    auto* rgb = vtkMRMLVectorVolumeNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLVectorVolumeNode", "photo"));
    vtkNew<vtkImageData> rgb_image;
    rgb_image->SetDimensions(8, 8, 1);
    rgb_image->AllocateScalars(VTK_UNSIGNED_CHAR, 3);
    rgb->SetAndObserveImageData(rgb_image);
    refused(rgb, "colour (RGB)");
    {
        auto* bad = vtkMRMLSequenceNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLSequenceNode", "moved frames"));
        bad->SetIndexUnit("s");
        for (int t = 0; t < 3; ++t) {
            vtkNew<vtkMRMLScalarVolumeNode> f;
            f->SetAndObserveImageData(frame0->GetImageData());
            vtkNew<vtkMatrix4x4> g;
            g->DeepCopy(grid);
            if (t == 2) g->SetElement(0, 3, g->GetElement(0, 3) + 3.0);
            f->SetIJKToRASMatrix(g);
            bad->SetDataNodeAtValue(f, std::to_string(t));
        }
        refused(bad, "lies elsewhere in space");
        auto* sized = vtkMRMLSequenceNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLSequenceNode", "sized frames"));
        for (int t = 0; t < 3; ++t) {
            vtkNew<vtkMRMLScalarVolumeNode> f;
            vtkNew<vtkImageData> img;
            img->SetDimensions(8 + (t == 1), 8, 2);
            img->AllocateScalars(VTK_SHORT, 1);
            f->SetAndObserveImageData(img);
            sized->SetDataNodeAtValue(f, std::to_string(t));
        }
        refused(sized, "every frame must share one grid");
        auto* text = vtkMRMLSequenceNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLSequenceNode", "named frames"));
        text->SetIndexType(vtkMRMLSequenceNode::TextIndex);
        for (const char* label : {"arterial", "venous"}) {
            vtkNew<vtkMRMLScalarVolumeNode> f;
            f->SetAndObserveImageData(frame0->GetImageData());
            text->SetDataNodeAtValue(f, label);
        }
        refused(text, "no usable frame times");
        auto* one = vtkMRMLSequenceNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLSequenceNode", "single frame"));
        vtkNew<vtkMRMLScalarVolumeNode> f;
        f->SetAndObserveImageData(frame0->GetImageData());
        one->SetDataNodeAtValue(f, "0");
        refused(one, "has 1 frame");
    }
    refused(nullptr, "choose a CT perfusion study");

    // --- Cancel mid-run: within a second, nothing added -----------------------------------------
    {
        // Cancelled as soon as the worker thread runs: the phantom is small enough that NLR ends
        // within a few tens of ms on a fast machine, so waiting for some progress first raced
        // the end of the run (CI saw it finish before the cancel).
        logic->SetMethod("nlr");
        const int n = NodeCount(scene);
        CHECK(logic->StartPerfusion(seq), "started for cancel: " << logic->GetStatusMessage());
        CHECK(logic->ProcessRun() == vtkSlicerPerfusionMapsLogic::Running, "running when cancelled");
        const auto t0 = std::chrono::steady_clock::now();
        logic->CancelRun();
        int s = vtkSlicerPerfusionMapsLogic::Running;
        while ((s = logic->ProcessRun()) == vtkSlicerPerfusionMapsLogic::Running) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::cout << "cancel took " << took * 1000 << " ms\n";
        CHECK(s == vtkSlicerPerfusionMapsLogic::Cancelled, "cancelled (state " << s << ")");
        CHECK(took < 1.0, "cancel within a second (" << took << " s)");
        CHECK(NodeCount(scene) == n, "cancel added nothing");
        logic->SetMethod("osvd");
    }

    // --- Motion corrected by Slicer's ITK --------------------------------------------------------
    {
        imhost::Volume moved = context.read(motion_phantom + "/ctp.nii.gz");
        const imhost::View mv = moved.view();
        vtkNew<vtkMatrix4x4> mgrid;
        const imhost::Matrix4 mm = mv.geometry().ijk_to_ras();
        for (int r = 0; r < 4; ++r)
            for (int c = 0; c < 4; ++c) mgrid->SetElement(r, c, mm[static_cast<std::size_t>(4 * r + c)]);
        vtkMRMLSequenceNode* mseq = AddSequence(scene, mv, mgrid, "Moving phantom");
        CHECK(logic->RunAndWait(mseq) == vtkSlicerPerfusionMapsLogic::Succeeded, "motion run: " << logic->GetStatusMessage());
        const json r = json::parse(logic->GetReportJSON());
        CHECK(r["motion"]["corrected"] == true, "motion corrected: " << r["motion"].dump());
        CHECK(r["motion"]["backend"].is_string() && r["motion"]["backend"].get<std::string>().find("ITK 5.4") == 0,
              "by Slicer's ITK 5.4: " << r["motion"]["backend"]);
        CHECK(r["qc_flags"].empty(), "no QC flag after correction: " << r["qc_flags"].dump());
        logic->SetMotionCorrection(false);
        CHECK(logic->RunAndWait(mseq) == vtkSlicerPerfusionMapsLogic::Succeeded, "uncorrected run");
        const json u = json::parse(logic->GetReportJSON());
        CHECK(u["motion"]["corrected"] == false, "motion correction off");
        logic->SetMotionCorrection(true);
    }

    // --- Scene close during a run: no crash, nothing lands in the new scene ----------------------
    {
        logic->SetMethod("nlr");
        CHECK(logic->StartPerfusion(seq), "started for close");
        while (logic->IsRunning() && logic->GetRunProgress() < 0.2) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        std::cout << "closing the scene at " << logic->GetRunProgress() * 100 << " % (running: " << logic->IsRunning() << ")\n";
        scene->Clear(false);
        int s = vtkSlicerPerfusionMapsLogic::Running;
        while ((s = logic->ProcessRun()) == vtkSlicerPerfusionMapsLogic::Running) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        CHECK(s == vtkSlicerPerfusionMapsLogic::Cancelled, "closing the scene cancelled the run (state " << s << ")");
        CHECK(scene->GetFirstNodeByName("CTP phantom CBF") == nullptr, "nothing added to the closed scene");
    }

    if (TestFailures()) std::cerr << TestFailures() << " check(s) failed\n";
    else std::cout << "all Perfusion Maps logic checks passed\n";
    return TestFailures() ? 1 : 0;
}
