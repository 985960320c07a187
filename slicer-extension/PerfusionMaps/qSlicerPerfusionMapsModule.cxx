#include "qSlicerPerfusionMapsModule.h"

#include "qSlicerPerfusionMapsModuleWidget.h"
#include "vtkSlicerPerfusionMapsLogic.h"

qSlicerPerfusionMapsModule::qSlicerPerfusionMapsModule(QObject* parent) : Superclass(parent) {}
qSlicerPerfusionMapsModule::~qSlicerPerfusionMapsModule() = default;

QString qSlicerPerfusionMapsModule::helpText() const {
    return tr("<p><b>Generate perfusion maps</b> from a 4-D CT perfusion study (a sequence of volumes over time): CBF, CBV, "
              "MTT, TTP and Tmax maps, the ischemic core and penumbra as a segmentation, their volumes with mismatch, "
              "hypoperfusion intensity ratio and the DEFUSE-3/DAWN imaging criteria in a table, and the arterial input and "
              "venous output curves as a plot. QC flags (no plausible AIF, truncated bolus, too much motion) withhold the "
              "volumes instead of printing untrustworthy numbers.</p>"
              "<p><b>RESEARCH USE ONLY - not for diagnosis or treatment decisions.</b></p>");
}

QString qSlicerPerfusionMapsModule::acknowledgementText() const {
    return tr("imhost: a native plugin host for imaging AI. Deconvolution methods after Østergaard, Wu (oSVD), Bennink (NLR); "
              "the perfusion CNN after Gava et al. 2023.");
}

QStringList qSlicerPerfusionMapsModule::contributors() const { return QStringList() << "imhost developers"; }
QIcon qSlicerPerfusionMapsModule::icon() const { return QIcon(":/Icons/PerfusionMaps.png"); }
QStringList qSlicerPerfusionMapsModule::categories() const { return QStringList() << "Quantification" << "imhost"; }
QStringList qSlicerPerfusionMapsModule::dependencies() const {
    return QStringList() << "Sequences" << "Segmentations" << "Markups" << "Tables" << "Plots" << "SubjectHierarchy";
}

void qSlicerPerfusionMapsModule::setup() { this->Superclass::setup(); }

qSlicerAbstractModuleRepresentation* qSlicerPerfusionMapsModule::createWidgetRepresentation() {
    return new qSlicerPerfusionMapsModuleWidget;
}

vtkMRMLAbstractLogic* qSlicerPerfusionMapsModule::createLogic() { return vtkSlicerPerfusionMapsLogic::New(); }
