// imhost Models: the module panel. The model list, manifest, load problems and settings come
// from the logic; the options form and the input selectors are generated from the manifest
// (vtkSlicerImhostModelsLogic::GetOptionFields / GetInputFields). Builds inside a Slicer build
// tree only.
#pragma once

#include <QScopedPointer>

#include "qSlicerAbstractModuleWidget.h"
#include "qSlicerImhostModelsModuleExport.h"

class qSlicerImhostModelsModuleWidgetPrivate;

class Q_SLICER_QTMODULES_IMHOSTMODELS_EXPORT qSlicerImhostModelsModuleWidget : public qSlicerAbstractModuleWidget {
    Q_OBJECT

public:
    typedef qSlicerAbstractModuleWidget Superclass;
    qSlicerImhostModelsModuleWidget(QWidget* parent = nullptr);
    ~qSlicerImhostModelsModuleWidget() override;

public slots:
    void onRefresh();
    void onModelSelected();
    void onPluginFolderChanged(const QString& folder);
    void onRun();
    void onCancel();
    void onPoll();

protected:
    QScopedPointer<qSlicerImhostModelsModuleWidgetPrivate> d_ptr;
    void setup() override;

private:
    Q_DECLARE_PRIVATE(qSlicerImhostModelsModuleWidget);
    Q_DISABLE_COPY(qSlicerImhostModelsModuleWidget);
};
