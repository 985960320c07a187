#include "qSlicerPerfusionMapsModuleWidget.h"

#include <QTimer>

#include "ui_qSlicerPerfusionMapsModuleWidget.h"
#include "vtkMRMLMarkupsFiducialNode.h"
#include "vtkSlicerPerfusionMapsLogic.h"

class qSlicerPerfusionMapsModuleWidgetPrivate : public Ui_qSlicerPerfusionMapsModuleWidget {
public:
    QTimer timer;
};

qSlicerPerfusionMapsModuleWidget::qSlicerPerfusionMapsModuleWidget(QWidget* parent)
    : Superclass(parent), d_ptr(new qSlicerPerfusionMapsModuleWidgetPrivate) {}

qSlicerPerfusionMapsModuleWidget::~qSlicerPerfusionMapsModuleWidget() = default;

void qSlicerPerfusionMapsModuleWidget::setup() {
    Q_D(qSlicerPerfusionMapsModuleWidget);
    d->setupUi(this);
    this->Superclass::setup();
    d->methodComboBox->addItem("oSVD (default)", "osvd");
    d->methodComboBox->addItem("bSVD", "bsvd");
    d->methodComboBox->addItem("sSVD", "ssvd");
    d->methodComboBox->addItem("Tikhonov", "tikhonov");
    d->methodComboBox->addItem("NLR (Bennink)", "nlr");
    d->methodComboBox->addItem("CNN (phantom-trained)", "cnn");
    d->timer.setInterval(100);
    connect(&d->timer, SIGNAL(timeout()), this, SLOT(onPoll()));
    connect(d->generateButton, SIGNAL(clicked()), this, SLOT(onGenerate()));
    connect(d->cancelButton, SIGNAL(clicked()), this, SLOT(onCancel()));
    connect(d->inputSelector, SIGNAL(currentNodeChanged(vtkMRMLNode*)), this, SLOT(onInputChanged(vtkMRMLNode*)));
    d->cancelButton->setEnabled(false);
    d->progressBar->setVisible(false);
}

void qSlicerPerfusionMapsModuleWidget::onInputChanged(vtkMRMLNode* node) {
    Q_D(qSlicerPerfusionMapsModuleWidget);
    d->generateButton->setEnabled(node != nullptr);
}

void qSlicerPerfusionMapsModuleWidget::onGenerate() {
    Q_D(qSlicerPerfusionMapsModuleWidget);
    auto* logic = vtkSlicerPerfusionMapsLogic::SafeDownCast(this->logic());
    if (!logic) return;
    logic->SetMethod(d->methodComboBox->currentData().toString().toUtf8().constData());
    logic->SetAutomaticAIF(d->automaticAIFCheckBox->isChecked());
    if (auto* points = vtkMRMLMarkupsFiducialNode::SafeDownCast(d->aifPointSelector->currentNode())) {
        if (!d->automaticAIFCheckBox->isChecked() && points->GetNumberOfControlPoints() > 0) {
            double ras[3];
            points->GetNthControlPointPositionWorld(0, ras);
            logic->SetAIFPointRAS(ras);
        }
    }
    logic->SetAge(d->ageSpinBox->value() == d->ageSpinBox->minimum() ? -1.0 : d->ageSpinBox->value());
    logic->SetNIHSS(d->nihssSpinBox->value() == d->nihssSpinBox->minimum() ? -1.0 : d->nihssSpinBox->value());
    logic->SetMotionCorrection(d->motionCheckBox->isChecked());
    logic->SetReplaceResults(d->replaceCheckBox->isChecked());
    if (!logic->StartPerfusion(d->inputSelector->currentNode())) {
        d->statusLabel->setText(QString::fromStdString(logic->GetStatusMessage()));
        return;
    }
    d->statusLabel->setText(QString::fromStdString(logic->GetStatusMessage()));
    d->generateButton->setEnabled(false);
    d->cancelButton->setEnabled(true);
    d->progressBar->setValue(0);
    d->progressBar->setVisible(true);
    d->timer.start();
}

void qSlicerPerfusionMapsModuleWidget::onCancel() {
    if (auto* logic = vtkSlicerPerfusionMapsLogic::SafeDownCast(this->logic())) logic->CancelRun();
}

void qSlicerPerfusionMapsModuleWidget::onPoll() {
    Q_D(qSlicerPerfusionMapsModuleWidget);
    auto* logic = vtkSlicerPerfusionMapsLogic::SafeDownCast(this->logic());
    if (!logic) return;
    const int state = logic->ProcessRun();  // adds the results on this (the main) thread when done
    if (state == vtkSlicerPerfusionMapsLogic::Running) {
        d->progressBar->setValue(static_cast<int>(100 * logic->GetRunProgress()));
        const double left = logic->GetRunSecondsLeft();
        QString format = QString::fromStdString(logic->GetRunStage()) + " %p%";
        if (left >= 0) format += tr(" (about %1 s left)").arg(static_cast<int>(left + 0.5));
        d->progressBar->setFormat(format);
        return;
    }
    d->timer.stop();
    d->progressBar->setVisible(false);
    d->generateButton->setEnabled(true);
    d->cancelButton->setEnabled(false);
    d->statusLabel->setText(QString::fromStdString(logic->GetStatusMessage()));
}
