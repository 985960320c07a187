// Perfusion Maps: the module class (help, categories, logic, widget). Thin: every behaviour is
// in vtkSlicerPerfusionMapsLogic. Builds inside a Slicer build tree only.
#pragma once

#include "qSlicerLoadableModule.h"
#include "qSlicerPerfusionMapsModuleExport.h"

class qSlicerPerfusionMapsModulePrivate;

class Q_SLICER_QTMODULES_PERFUSIONMAPS_EXPORT qSlicerPerfusionMapsModule : public qSlicerLoadableModule {
    Q_OBJECT
    Q_PLUGIN_METADATA(IID "org.slicer.modules.loadable.qSlicerLoadableModule/1.0");
    Q_INTERFACES(qSlicerLoadableModule);

public:
    typedef qSlicerLoadableModule Superclass;
    explicit qSlicerPerfusionMapsModule(QObject* parent = nullptr);
    ~qSlicerPerfusionMapsModule() override;

    qSlicerGetTitleMacro(tr("Perfusion Maps"));

    QString helpText() const override;
    QString acknowledgementText() const override;
    QStringList contributors() const override;
    QIcon icon() const override;
    QStringList categories() const override;
    QStringList dependencies() const override;

protected:
    void setup() override;
    qSlicerAbstractModuleRepresentation* createWidgetRepresentation() override;
    vtkMRMLAbstractLogic* createLogic() override;

private:
    Q_DISABLE_COPY(qSlicerPerfusionMapsModule);
};
