// MRML ↔ imhost conversion (see the header).
#include "vtkSlicerImhostConversion.h"

#include <cmath>
#include <dlfcn.h>
#include <sys/stat.h>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <sstream>

#include <vtkImageData.h>
#include <vtkIdList.h>
#include <vtkMRMLDisplayNode.h>
#include <vtkMRMLDisplayableNode.h>
#include <vtkMRMLScalarVolumeDisplayNode.h>
#include <vtkMRMLStorageNode.h>
#include <vtkMRMLStorableNode.h>
#include <vtkMRMLSubjectHierarchyNode.h>
#include <vtkMRMLScalarVolumeNode.h>
#include <vtkMRMLScene.h>
#include <vtkMRMLSequenceNode.h>
#include <vtkMatrix4x4.h>
#include <vtkNew.h>
#include <vtkPointData.h>

namespace imhost_slicer {
namespace {

std::array<double, 16> MatrixOf(vtkMRMLVolumeNode* node) {
    vtkNew<vtkMatrix4x4> m;
    node->GetIJKToRASMatrix(m);
    std::array<double, 16> out{};
    for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) out[static_cast<std::size_t>(4 * r + c)] = m->GetElement(r, c);
    return out;
}

bool SameGeometry(const std::array<double, 16>& a, const std::array<double, 16>& b) {
    for (std::size_t n = 0; n < 16; ++n)
        if (std::abs(a[n] - b[n]) > 1e-4 * (1.0 + std::abs(a[n]))) return false;
    return true;
}

std::string Dims(const int d[3]) {
    return std::to_string(d[0]) + "×" + std::to_string(d[1]) + "×" + std::to_string(d[2]);
}

/// Why a single volume node is not a 4-D CT study, or "" when it is one.
std::string NotCT(vtkMRMLVolumeNode* node, vtkImageData* image) {
    if (!image) return "'" + std::string(node->GetName() ? node->GetName() : "") + "' has no image data";
    if (node->IsA("vtkMRMLLabelMapVolumeNode")) return "'" + std::string(node->GetName()) + "' is a label map, not CT";
    const int c = image->GetNumberOfScalarComponents();
    const int type = image->GetScalarType();
    if (node->IsA("vtkMRMLVectorVolumeNode") || (c == 3 && type == VTK_UNSIGNED_CHAR) || (c == 4 && type == VTK_UNSIGNED_CHAR))
        return "'" + std::string(node->GetName()) + "' is a colour (RGB) image, not CT in Hounsfield units";
    return "";
}
}  // namespace

void Study::Copy() {
    if (frames.empty()) return;  // a 4-D volume is read in place
    const std::size_t frame_voxels =
        static_cast<std::size_t>(shape[0]) * static_cast<std::size_t>(shape[1]) * static_cast<std::size_t>(shape[2]);
    const std::size_t nt = frames.size();
    try {
        // The one copy: Sequences keep one buffer per frame, the library reads one array.
        if (short_frames) {
            i16.resize(frame_voxels * nt);
            for (std::size_t t = 0; t < nt; ++t)
                std::memcpy(i16.data() + frame_voxels * t, frames[t]->GetScalarPointer(), frame_voxels * sizeof(int16_t));
        } else {
            f32.resize(frame_voxels * nt);
            for (std::size_t t = 0; t < nt; ++t) {
                vtkDataArray* a = frames[t]->GetPointData()->GetScalars();
                float* out = f32.data() + frame_voxels * t;
                for (std::size_t n = 0; n < frame_voxels; ++n) out[n] = static_cast<float>(a->GetComponent(static_cast<vtkIdType>(n), 0));
            }
        }
    } catch (const std::bad_alloc&) {
        i16.clear(), f32.clear();
        throw imhost::Error(IMH_STATUS_TOO_LARGE, "not enough memory to hold '" + name + "' for the run");
    }
    frames.clear();  // the copy is all the run needs
}

imhost::View Study::view() const {
    const imhost::Geometry geometry = imhost::Geometry::from_ijk_to_ras(ijk_to_ras);
    const imhost::Span<const double> times(times_s.data(), times_s.size());
    if (borrowed) {
        // One component per frame, interleaved: (i, j, k, t) at ((k·nj + j)·ni + i)·nt + t.
        const int64_t nt = shape[3];
        const imhost::Strides strides{nt, shape[0] * nt, shape[0] * shape[1] * nt, 1};
        void* p = borrowed->GetScalarPointer();
        if (borrowed->GetScalarType() == VTK_SHORT)
            return imhost::View::four_d(static_cast<const int16_t*>(p), shape, strides, geometry, times);
        return imhost::View::four_d(static_cast<const float*>(p), shape, strides, geometry, times);
    }
    const imhost::Strides strides = imhost::nifti_strides(shape);
    if (!i16.empty()) return imhost::View::four_d(i16.data(), shape, strides, geometry, times);
    return imhost::View::four_d(f32.data(), shape, strides, geometry, times);
}

bool FrameTimes(const std::vector<std::string>& values, const std::string& unit, std::vector<double>& seconds,
                std::string& note, std::string& error) {
    double scale = 1.0;
    if (unit == "s" || unit == "sec" || unit == "second" || unit == "seconds") {
        note = "frame times from the sequence's index (s)";
    } else if (unit == "ms" || unit == "msec") {
        scale = 1e-3, note = "frame times from the sequence's index (ms)";
    } else if (unit == "min") {
        scale = 60.0, note = "frame times from the sequence's index (min)";
    } else if (unit.empty()) {
        note = "frame times from the sequence's index (no unit given: read as seconds)";
    } else {
        error = "the sequence's index unit '" + unit + "' is not a time (s, ms or min)";
        return false;
    }
    seconds.clear();
    for (const std::string& v : values) {
        char* end = nullptr;
        const double x = std::strtod(v.c_str(), &end);
        if (v.empty() || end == v.c_str() || *end != '\0' || !std::isfinite(x)) {
            error = "the sequence's index value '" + v + "' is not a number: it has no usable frame times";
            return false;
        }
        if (!seconds.empty() && x * scale <= seconds.back()) {
            error = "the sequence's frame times do not increase (" + v + " after " +
                    std::to_string(seconds.back() / scale) + "): sort the sequence by time";
            return false;
        }
        seconds.push_back(x * scale);
    }
    return true;
}

bool ReadStudy(vtkMRMLNode* input, Study& study, std::string& error) {
    study = Study{};
    if (!input) {
        error = "choose a CT perfusion study (a sequence of volumes over time)";
        return false;
    }
    study.name = input->GetName() ? input->GetName() : "study";
    if (auto* sequence = vtkMRMLSequenceNode::SafeDownCast(input)) {
        const int nt = sequence->GetNumberOfDataNodes();
        if (nt < 2) {
            error = "'" + study.name + "' has " + std::to_string(nt) + " frame" + (nt == 1 ? "" : "s") +
                    ": perfusion needs a series of frames over time";
            return false;
        }
        std::vector<vtkMRMLScalarVolumeNode*> frames;
        std::vector<std::string> values;
        for (int t = 0; t < nt; ++t) {
            auto* frame = vtkMRMLScalarVolumeNode::SafeDownCast(sequence->GetNthDataNode(t));
            if (!frame) {
                error = "frame " + std::to_string(t + 1) + " of '" + study.name + "' is not a scalar volume";
                return false;
            }
            std::string why = NotCT(frame, frame->GetImageData());
            if (!why.empty()) {
                error = "frame " + std::to_string(t + 1) + ": " + why;
                return false;
            }
            if (frame->GetImageData()->GetNumberOfScalarComponents() != 1) {
                error = "frame " + std::to_string(t + 1) + " of '" + study.name + "' has " +
                        std::to_string(frame->GetImageData()->GetNumberOfScalarComponents()) + " components, not one";
                return false;
            }
            frames.push_back(frame);
            values.push_back(sequence->GetNthIndexValue(t));
        }
        if (sequence->GetIndexType() != vtkMRMLSequenceNode::NumericIndex) {
            error = "'" + study.name + "' is indexed by text, not time: it has no usable frame times";
            return false;
        }
        if (!FrameTimes(values, sequence->GetIndexUnit(), study.times_s, study.time_note, error)) return false;
        int dims[3];
        frames[0]->GetImageData()->GetDimensions(dims);
        study.ijk_to_ras = MatrixOf(frames[0]);
        const int type = frames[0]->GetImageData()->GetScalarType();
        bool all_short = true;
        for (int t = 0; t < nt; ++t) {
            int d[3];
            frames[static_cast<std::size_t>(t)]->GetImageData()->GetDimensions(d);
            if (d[0] != dims[0] || d[1] != dims[1] || d[2] != dims[2]) {
                error = "frame " + std::to_string(t + 1) + " is " + Dims(d) + " voxels, frame 1 " + Dims(dims) +
                        ": every frame must share one grid";
                return false;
            }
            if (!SameGeometry(MatrixOf(frames[static_cast<std::size_t>(t)]), study.ijk_to_ras)) {
                error = "frame " + std::to_string(t + 1) +
                        " lies elsewhere in space than frame 1 (its IJK-to-RAS differs): every frame must share one grid";
                return false;
            }
            all_short = all_short && frames[static_cast<std::size_t>(t)]->GetImageData()->GetScalarType() == VTK_SHORT;
        }
        (void)type;
        study.shape = {dims[0], dims[1], dims[2], nt};
        const std::size_t frame_voxels = static_cast<std::size_t>(dims[0]) * static_cast<std::size_t>(dims[1]) *
                                         static_cast<std::size_t>(dims[2]);
        if (frame_voxels == 0 || frame_voxels > std::numeric_limits<std::size_t>::max() / 8 / static_cast<std::size_t>(nt)) {
            error = "'" + study.name + "' has an empty or impossibly large grid (" + Dims(dims) + ")";
            return false;
        }
        // The frames' buffers, kept alive; Copy() makes the one copy (on the worker thread).
        for (auto* f : frames) study.frames.push_back(f->GetImageData());
        study.short_frames = all_short;
        study.copied_bytes = frame_voxels * static_cast<std::size_t>(nt) * (all_short ? sizeof(int16_t) : sizeof(float));
        return true;
    }
    auto* volume = vtkMRMLScalarVolumeNode::SafeDownCast(input);
    if (!volume) {
        error = "'" + study.name + "' is a " + input->GetClassName() + ", not a CT perfusion study";
        return false;
    }
    vtkImageData* image = volume->GetImageData();
    std::string why = NotCT(volume, image);
    if (!why.empty()) {
        error = why;
        return false;
    }
    const int nt = image->GetNumberOfScalarComponents();
    const char* labels = volume->GetAttribute("MultiVolume.FrameLabels");
    if (nt < 2 || !labels) {
        error = "'" + study.name +
                "' is a 3-D volume: Generate perfusion maps needs a 4-D CT perfusion study (a sequence of volumes over time)";
        return false;
    }
    if (image->GetScalarType() != VTK_SHORT && image->GetScalarType() != VTK_FLOAT) {
        error = "'" + study.name + "' holds " + image->GetScalarTypeAsString() + " frames; 4-D volumes must be short or float";
        return false;
    }
    std::vector<std::string> values;
    std::stringstream list(labels);
    for (std::string item; std::getline(list, item, ',');) values.push_back(item);
    if (static_cast<int>(values.size()) != nt) {
        error = "'" + study.name + "' has " + std::to_string(nt) + " frames but " + std::to_string(values.size()) + " frame labels";
        return false;
    }
    const char* unit = volume->GetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits");
    if (!FrameTimes(values, unit ? unit : "", study.times_s, study.time_note, error)) return false;
    int dims[3];
    image->GetDimensions(dims);
    study.shape = {dims[0], dims[1], dims[2], nt};
    study.ijk_to_ras = MatrixOf(volume);
    study.borrowed = image;  // read in place: no copy
    return true;
}

imhost::View Image3D::view() const {
    int d[3];
    image->GetDimensions(d);
    const imhost::Shape shape{d[0], d[1], d[2], 1};
    const imhost::Strides strides = imhost::nifti_strides(shape);
    const imhost::Geometry g = imhost::Geometry::from_ijk_to_ras(ijk_to_ras);
    void* p = image->GetScalarPointer();
    switch (dtype) {
        case imhost::DType::U8: return imhost::View::three_d(static_cast<const uint8_t*>(p), shape, strides, g);
        case imhost::DType::I16: return imhost::View::three_d(static_cast<const int16_t*>(p), shape, strides, g);
        case imhost::DType::U16: return imhost::View::three_d(static_cast<const uint16_t*>(p), shape, strides, g);
        case imhost::DType::I32: return imhost::View::three_d(static_cast<const int32_t*>(p), shape, strides, g);
        case imhost::DType::F64: return imhost::View::three_d(static_cast<const double*>(p), shape, strides, g);
        default: return imhost::View::three_d(static_cast<const float*>(p), shape, strides, g);
    }
}

bool ReadImage(vtkMRMLNode* input, Image3D& out, std::string& error) {
    out = Image3D{};
    auto* volume = vtkMRMLScalarVolumeNode::SafeDownCast(input);
    if (!volume) {
        error = input ? "'" + std::string(input->GetName() ? input->GetName() : "") + "' is not a volume" : "choose an input volume";
        return false;
    }
    out.name = volume->GetName() ? volume->GetName() : "volume";
    vtkImageData* image = volume->GetImageData();
    if (!image) {
        error = "'" + out.name + "' has no image data";
        return false;
    }
    std::string why = NotCT(volume, image);
    if (!why.empty() && !volume->IsA("vtkMRMLLabelMapVolumeNode")) {
        error = why;
        return false;
    }
    if (image->GetNumberOfScalarComponents() != 1) {
        error = "'" + out.name + "' has " + std::to_string(image->GetNumberOfScalarComponents()) + " components; the model reads one";
        return false;
    }
    switch (image->GetScalarType()) {
        case VTK_UNSIGNED_CHAR: out.dtype = imhost::DType::U8; break;
        case VTK_SHORT: out.dtype = imhost::DType::I16; break;
        case VTK_UNSIGNED_SHORT: out.dtype = imhost::DType::U16; break;
        case VTK_INT: out.dtype = imhost::DType::I32; break;
        case VTK_FLOAT: out.dtype = imhost::DType::F32; break;
        case VTK_DOUBLE: out.dtype = imhost::DType::F64; break;
        default:
            error = "'" + out.name + "' holds " + image->GetScalarTypeAsString() + " voxels (u8, i16, u16, i32, f32 or f64 are read)";
            return false;
    }
    out.image = image;
    out.ijk_to_ras = MatrixOf(volume);
    return true;
}

vtkSmartPointer<vtkImageData> ImageFromView(const imhost::View& view) {
    const imhost::Shape s = view.shape();
    auto image = vtkSmartPointer<vtkImageData>::New();
    image->SetDimensions(static_cast<int>(s[0]), static_cast<int>(s[1]), static_cast<int>(s[2]));
    const bool u8 = view.dtype() == imhost::DType::U8;
    image->AllocateScalars(u8 ? VTK_UNSIGNED_CHAR : VTK_FLOAT, 1);
    const imhost::Strides st = view.strides();
    const std::size_t count = static_cast<std::size_t>(s[0] * s[1] * s[2]);
    const bool contiguous = st[0] == 1 && st[1] == s[0] && st[2] == s[0] * s[1];
    if (contiguous && (u8 || view.dtype() == imhost::DType::F32)) {
        std::memcpy(image->GetScalarPointer(), view.c().data, count * (u8 ? 1 : sizeof(float)));
        return image;
    }
    std::size_t n = 0;
    for (int64_t k = 0; k < s[2]; ++k)
        for (int64_t j = 0; j < s[1]; ++j)
            for (int64_t i = 0; i < s[0]; ++i, ++n) {
                const int64_t offset = i * st[0] + j * st[1] + k * st[2];
                if (u8)
                    static_cast<uint8_t*>(image->GetScalarPointer())[n] = static_cast<const uint8_t*>(view.c().data)[offset];
                else if (view.dtype() == imhost::DType::F32)
                    static_cast<float*>(image->GetScalarPointer())[n] = static_cast<const float*>(view.c().data)[offset];
                else
                    static_cast<float*>(image->GetScalarPointer())[n] = static_cast<float>(view.at<int16_t>(i, j, k));
            }
    return image;
}

vtkSmartPointer<vtkMatrix4x4> IJKToRAS(const imhost::View& view) {
    const imhost::Matrix4 m = view.geometry().ijk_to_ras();
    auto out = vtkSmartPointer<vtkMatrix4x4>::New();
    for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) out->SetElement(r, c, m[static_cast<std::size_t>(4 * r + c)]);
    return out;
}

vtkMRMLScalarVolumeNode* AddVolume(vtkMRMLScene* scene, const std::string& name, const imhost::View& view) {
    auto* node = vtkMRMLScalarVolumeNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLScalarVolumeNode", name));
    node->SetIJKToRASMatrix(IJKToRAS(view));
    node->SetAndObserveImageData(ImageFromView(view));
    node->CreateDefaultDisplayNodes();
    return node;
}

bool RASToVoxel(const std::array<double, 16>& ijk_to_ras, const std::array<int64_t, 4>& shape, const double ras[3],
                std::array<uint32_t, 3>& voxel) {
    vtkNew<vtkMatrix4x4> m;
    for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) m->SetElement(r, c, ijk_to_ras[static_cast<std::size_t>(4 * r + c)]);
    m->Invert();
    const double p[4] = {ras[0], ras[1], ras[2], 1.0};
    double ijk[4];
    m->MultiplyPoint(p, ijk);
    for (int a = 0; a < 3; ++a) {
        const double x = std::floor(ijk[a] + 0.5);
        if (!(x >= 0 && x < static_cast<double>(shape[static_cast<std::size_t>(a)]))) return false;
        voxel[static_cast<std::size_t>(a)] = static_cast<uint32_t>(x);
    }
    return true;
}

long long FileInFolder(vtkMRMLScene* scene, const std::string& name, const std::vector<vtkMRMLNode*>& nodes) {
    vtkMRMLSubjectHierarchyNode* sh = vtkMRMLSubjectHierarchyNode::GetSubjectHierarchyNode(scene);
    if (!sh) return 0;
    const vtkIdType folder = sh->CreateFolderItem(sh->GetSceneItemID(), name);
    sh->SetItemAttribute(folder, "imhost.ResearchUseOnly", kResearchUseOnly);
    for (vtkMRMLNode* node : nodes) {
        const vtkIdType item = sh->GetItemByDataNode(node);
        if (!item) sh->CreateItem(folder, node);
        else sh->SetItemParent(item, folder);
    }
    return folder;
}

void RemoveFolder(vtkMRMLScene* scene, const std::string& name) {
    vtkMRMLSubjectHierarchyNode* sh = vtkMRMLSubjectHierarchyNode::GetSubjectHierarchyNode(scene);
    const vtkIdType previous = sh ? sh->GetItemChildWithName(sh->GetSceneItemID(), name) : 0;
    if (!previous) return;
    vtkNew<vtkIdList> children;
    sh->GetItemChildren(previous, children, true);
    std::vector<vtkMRMLNode*> remove;
    for (vtkIdType n = 0; n < children->GetNumberOfIds(); ++n) {
        vtkMRMLNode* node = sh->GetItemDataNode(children->GetId(n));
        if (auto* d = vtkMRMLDisplayableNode::SafeDownCast(node))
            for (int i = 0; i < d->GetNumberOfDisplayNodes(); ++i) remove.push_back(d->GetNthDisplayNode(i));
        if (auto* st = vtkMRMLStorableNode::SafeDownCast(node))
            for (int i = 0; i < st->GetNumberOfStorageNodes(); ++i) remove.push_back(st->GetNthStorageNode(i));
        if (node) remove.push_back(node);
    }
    for (vtkMRMLNode* node : remove)
        if (node && scene->IsNodePresent(node)) scene->RemoveNode(node);
    sh->RemoveItem(previous, false, true);
}

std::string InstalledModelDirectory(const std::string& name) {
    Dl_info info{};
    if (!dladdr(reinterpret_cast<void*>(&imh_version), &info) || !info.dli_fname) return "";
    std::string lib = info.dli_fname;
    const std::size_t slash = lib.rfind('/');
    if (slash == std::string::npos) return "";
    const std::string dir = lib.substr(0, slash) + "/../share/imhost/models/" + name;
    struct stat st {};
    return stat((dir + "/manifest.json").c_str(), &st) == 0 ? dir : "";
}

}  // namespace imhost_slicer
