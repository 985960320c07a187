// Perfusion Maps: the module panel. It copies the form into the logic, calls StartPerfusion,
// polls ProcessRun() every 100 ms on the main thread (progress bar with stage and time left),
// and shows the logic's status line. Builds inside a Slicer build tree only.
#pragma once

#include <QScopedPointer>

#include "qSlicerAbstractModuleWidget.h"
#include "qSlicerPerfusionMapsModuleExport.h"

class qSlicerPerfusionMapsModuleWidgetPrivate;
class vtkMRMLNode;

class Q_SLICER_QTMODULES_PERFUSIONMAPS_EXPORT qSlicerPerfusionMapsModuleWidget : public qSlicerAbstractModuleWidget {
    Q_OBJECT

public:
    typedef qSlicerAbstractModuleWidget Superclass;
    qSlicerPerfusionMapsModuleWidget(QWidget* parent = nullptr);
    ~qSlicerPerfusionMapsModuleWidget() override;

public slots:
    void onGenerate();
    void onCancel();
    void onPoll();
    void onInputChanged(vtkMRMLNode* node);

protected:
    QScopedPointer<qSlicerPerfusionMapsModuleWidgetPrivate> d_ptr;
    void setup() override;

private:
    Q_DECLARE_PRIVATE(qSlicerPerfusionMapsModuleWidget);
    Q_DISABLE_COPY(qSlicerPerfusionMapsModuleWidget);
};
