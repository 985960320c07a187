// MRML ↔ imhost: a CT perfusion study as Slicer holds it → one imh_view; imhost volumes →
// Slicer volume nodes with the input's exact IJK-to-RAS. Qt-free; main thread only (MRML is not
// thread-safe). Research use only.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <vtkSmartPointer.h>

#include "imhost.hpp"
#include "vtkSlicerImhostModuleLogicExport.h"

class vtkImageData;
class vtkMatrix4x4;
class vtkMRMLNode;
class vtkMRMLScene;
class vtkMRMLScalarVolumeNode;

namespace imhost_slicer {

/// A 4-D study ready for the library: pixels (copied once from a Sequence's frames, or borrowed
/// from a 4-D volume node's interleaved image), frame times in seconds, geometry in LPS.
struct VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT Study {
    std::string name;                   ///< the input node's name
    std::array<int64_t, 4> shape{};      ///< i, j, k, t
    std::vector<int16_t> i16;            ///< the copy (short CT), or
    std::vector<float> f32;              ///< the copy (any other scalar type)
    vtkSmartPointer<vtkImageData> borrowed;  ///< the 4-D volume's image (no copy), kept alive
    std::vector<vtkSmartPointer<vtkImageData>> frames;  ///< a Sequence's frames until Copy()
    bool short_frames = true;                ///< every frame holds short voxels
    std::vector<double> times_s;
    std::array<double, 16> ijk_to_ras{};  ///< the input's IJK-to-RAS, row-major
    std::string time_note;                ///< how the frame times were read
    std::size_t copied_bytes = 0;         ///< what the conversion copies

    /// Make the one copy of a Sequence's frames (worker thread: the main thread is not held
    /// for it; the frames' buffers are kept alive by `frames`). Throws imhost::Error when memory
    /// runs out.
    void Copy();
    /// The view over the pixels, after Copy() (valid while this Study lives and is not moved).
    imhost::View view() const;
};

/// A 3-D scalar volume read in place (no copy): the node's image, kept alive for the run.
struct VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT Image3D {
    std::string name;
    vtkSmartPointer<vtkImageData> image;
    std::array<double, 16> ijk_to_ras{};
    imhost::DType dtype = imhost::DType::F32;

    /// The view over the node's pixels (valid while this Image3D lives).
    imhost::View view() const;
};

/// Read a 3-D scalar volume node (u8, i16, u16, i32, f32 or f64 voxels, one component) in place;
/// false with a reason otherwise.
VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT bool ReadImage(vtkMRMLNode* input, Image3D& image, std::string& error);

/// Check `input` (a vtkMRMLSequenceNode of scalar volumes, or a scalar volume whose image has one
/// component per frame with MultiVolume frame labels) and describe it in `study` (main thread;
/// nothing is copied yet: see Study::Copy). On failure returns false and a one-line reason a
/// user can act on in `error`.
VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT bool ReadStudy(vtkMRMLNode* input, Study& study, std::string& error);

/// The frame times (s) from a Sequence's index values and unit; false with a reason otherwise.
VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT bool FrameTimes(const std::vector<std::string>& values, const std::string& unit,
                                                      std::vector<double>& seconds, std::string& note, std::string& error);

/// A new image (origin 0, spacing 1: geometry lives in the node) holding a copy of a 3-D view.
VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT vtkSmartPointer<vtkImageData> ImageFromView(const imhost::View& view);

/// The view's IJK-to-RAS (Slicer's RAS from imhost's LPS).
VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT vtkSmartPointer<vtkMatrix4x4> IJKToRAS(const imhost::View& view);

/// A new scalar volume node in `scene` named `name` showing `view` (copied), with display node.
VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT vtkMRMLScalarVolumeNode* AddVolume(vtkMRMLScene* scene, const std::string& name,
                                                                         const imhost::View& view);

/// Voxel index (rounded) of an RAS point on the grid `ijk_to_ras`; false when outside `shape`.
VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT bool RASToVoxel(const std::array<double, 16>& ijk_to_ras,
                                                      const std::array<int64_t, 4>& shape, const double ras[3],
                                                      std::array<uint32_t, 3>& voxel);

/// What every result node and folder says.
constexpr const char* kResearchUseOnly = "RESEARCH USE ONLY - not for diagnosis or treatment decisions.";

/// A new subject-hierarchy folder `name` under the scene item (marked research use only) holding
/// `nodes`; 0 when the scene has no hierarchy. Call after a batch, when the hierarchy has seen them.
VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT long long FileInFolder(vtkMRMLScene* scene, const std::string& name,
                                                             const std::vector<vtkMRMLNode*>& nodes);

/// Remove the top-level folder `name` (if any) with every node in it and their display and
/// storage nodes (the hierarchy itself removes only the data nodes).
VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT void RemoveFolder(vtkMRMLScene* scene, const std::string& name);

/// `<prefix>/share/imhost/models/<name>` of the libimhost this process loaded, or "" when absent.
VTK_SLICER_IMHOST_MODULE_LOGIC_EXPORT std::string InstalledModelDirectory(const std::string& name);

/// LPS (mm) → RAS (mm).
inline void LPSToRAS(const double lps[3], double ras[3]) {
    ras[0] = -lps[0];
    ras[1] = -lps[1];
    ras[2] = lps[2];
}

}  // namespace imhost_slicer
