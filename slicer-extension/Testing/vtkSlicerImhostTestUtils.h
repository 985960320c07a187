// Shared by the extension's C++ tests: checks, and a study as Slicer's Sequences hold it.
#pragma once

#include <iostream>
#include <sstream>
#include <string>

#include <vtkImageData.h>
#include <vtkMRMLScalarVolumeNode.h>
#include <vtkMRMLScene.h>
#include <vtkMRMLSequenceNode.h>
#include <vtkMatrix4x4.h>
#include <vtkNew.h>

#include "imhost.hpp"

inline int& TestFailures() {
    static int failures = 0;
    return failures;
}
#define CHECK(cond, what)                                                              \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            std::cerr << __FILE__ << ":" << __LINE__ << ": FAILED: " << what << "\n"; \
            ++TestFailures();                                                          \
        }                                                                              \
    } while (0)

inline std::string ExactText(double x) {
    std::ostringstream s;
    s.precision(17);
    s << x;
    return s.str();
}

/// The study as Slicer's DICOM/Sequences import gives it: one scalar volume per frame (short),
/// index = acquisition time in seconds.
inline vtkMRMLSequenceNode* AddSequence(vtkMRMLScene* scene, const imhost::View& v, vtkMatrix4x4* ijk_to_ras, const char* name) {
    if (!scene->IsNodeClassRegistered("vtkMRMLSequenceNode")) scene->RegisterNodeClass(vtkNew<vtkMRMLSequenceNode>());
    auto* seq = vtkMRMLSequenceNode::SafeDownCast(scene->AddNewNodeByClass("vtkMRMLSequenceNode", name));
    seq->SetIndexName("time");
    seq->SetIndexUnit("s");
    seq->SetIndexType(vtkMRMLSequenceNode::NumericIndex);
    const imhost::Shape s = v.shape();
    for (int64_t t = 0; t < s[3]; ++t) {
        vtkNew<vtkMRMLScalarVolumeNode> frame;
        vtkNew<vtkImageData> image;
        image->SetDimensions(static_cast<int>(s[0]), static_cast<int>(s[1]), static_cast<int>(s[2]));
        image->AllocateScalars(VTK_SHORT, 1);
        auto* out = static_cast<int16_t*>(image->GetScalarPointer());
        std::size_t n = 0;
        for (int64_t k = 0; k < s[2]; ++k)
            for (int64_t j = 0; j < s[1]; ++j)
                for (int64_t i = 0; i < s[0]; ++i) out[n++] = v.at<int16_t>(i, j, k, t);
        frame->SetAndObserveImageData(image);
        frame->SetIJKToRASMatrix(ijk_to_ras);
        frame->SetName((std::string(name) + " frame " + std::to_string(t)).c_str());
        seq->SetDataNodeAtValue(frame, ExactText(v.frame_times()[static_cast<std::size_t>(t)]));
    }
    return seq;
}

/// The view's IJK-to-RAS as a VTK matrix.
inline vtkSmartPointer<vtkMatrix4x4> MatrixOfView(const imhost::View& v) {
    const imhost::Matrix4 m = v.geometry().ijk_to_ras();
    auto out = vtkSmartPointer<vtkMatrix4x4>::New();
    for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 4; ++c) out->SetElement(r, c, m[static_cast<std::size_t>(4 * r + c)]);
    return out;
}
