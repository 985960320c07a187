#include "qSlicerImhostModelsModule.h"

#include "qSlicerImhostModelsModuleWidget.h"
#include "vtkSlicerImhostModelsLogic.h"

qSlicerImhostModelsModule::qSlicerImhostModelsModule(QObject* parent) : Superclass(parent) {}
qSlicerImhostModelsModule::~qSlicerImhostModelsModule() = default;

QString qSlicerImhostModelsModule::helpText() const {
    return tr("<p>Every model of the imhost registry: the built-in ones, TorchScript model packages and C, C++ or Rust "
              "plugins from IMHOST_PLUGIN_PATH, ~/.local/share/imhost/plugins and the folder chosen below. Pick a model to "
              "see its manifest (version, licence, reference, inputs, outputs); set its options; choose its inputs; Run. "
              "Maps become volumes, label maps segmentations with the model's label names and colours, scores a table. "
              "Plugins that could not be loaded are listed with the reason.</p>"
              "<p><b>RESEARCH USE ONLY - not for diagnosis or treatment decisions.</b></p>");
}

QString qSlicerImhostModelsModule::acknowledgementText() const { return tr("imhost: a native plugin host for imaging AI."); }
QStringList qSlicerImhostModelsModule::contributors() const { return QStringList() << "imhost developers"; }
QIcon qSlicerImhostModelsModule::icon() const { return QIcon(":/Icons/ImhostModels.png"); }
QStringList qSlicerImhostModelsModule::categories() const { return QStringList() << "Segmentation" << "imhost"; }
QStringList qSlicerImhostModelsModule::dependencies() const {
    return QStringList() << "Sequences" << "Segmentations" << "Tables" << "SubjectHierarchy";
}
void qSlicerImhostModelsModule::setup() { this->Superclass::setup(); }
qSlicerAbstractModuleRepresentation* qSlicerImhostModelsModule::createWidgetRepresentation() {
    return new qSlicerImhostModelsModuleWidget;
}
vtkMRMLAbstractLogic* qSlicerImhostModelsModule::createLogic() { return vtkSlicerImhostModelsLogic::New(); }
