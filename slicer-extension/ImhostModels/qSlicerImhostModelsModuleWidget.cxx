#include "qSlicerImhostModelsModuleWidget.h"

#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFormLayout>
#include <QLineEdit>
#include <QSettings>
#include <QSpinBox>
#include <QTimer>

#include <map>
#include <string>
#include <vector>

#include "qMRMLNodeComboBox.h"
#include "ui_qSlicerImhostModelsModuleWidget.h"
#include "vtkSlicerImhostModelsLogic.h"

class qSlicerImhostModelsModuleWidgetPrivate : public Ui_qSlicerImhostModelsModuleWidget {
public:
    QTimer timer;
    std::vector<imhost_slicer::OptionField> fields;
    std::map<std::string, QWidget*> editors;
    std::vector<qMRMLNodeComboBox*> inputs;
};

qSlicerImhostModelsModuleWidget::qSlicerImhostModelsModuleWidget(QWidget* parent)
    : Superclass(parent), d_ptr(new qSlicerImhostModelsModuleWidgetPrivate) {}
qSlicerImhostModelsModuleWidget::~qSlicerImhostModelsModuleWidget() = default;

void qSlicerImhostModelsModuleWidget::setup() {
    Q_D(qSlicerImhostModelsModuleWidget);
    d->setupUi(this);
    this->Superclass::setup();
    d->pluginFolderButton->setDirectory(QSettings().value("imhost/PluginFolder").toString());
    d->timer.setInterval(100);
    connect(&d->timer, SIGNAL(timeout()), this, SLOT(onPoll()));
    connect(d->refreshButton, SIGNAL(clicked()), this, SLOT(onRefresh()));
    connect(d->modelList, SIGNAL(itemSelectionChanged()), this, SLOT(onModelSelected()));
    connect(d->pluginFolderButton, SIGNAL(directoryChanged(QString)), this, SLOT(onPluginFolderChanged(QString)));
    connect(d->runButton, SIGNAL(clicked()), this, SLOT(onRun()));
    connect(d->cancelButton, SIGNAL(clicked()), this, SLOT(onCancel()));
    d->cancelButton->setEnabled(false);
    d->progressBar->setVisible(false);
    this->onRefresh();
}

void qSlicerImhostModelsModuleWidget::onPluginFolderChanged(const QString& folder) {
    QSettings().setValue("imhost/PluginFolder", folder);
    this->onRefresh();
}

void qSlicerImhostModelsModuleWidget::onRefresh() {
    Q_D(qSlicerImhostModelsModuleWidget);
    auto* logic = vtkSlicerImhostModelsLogic::SafeDownCast(this->logic());
    if (!logic) return;
    logic->SetPluginFolder(d->pluginFolderButton->directory().toUtf8().constData());
    logic->RefreshModels();
    d->modelList->clear();
    for (const std::string& id : logic->GetModelIDs()) {
        auto* item = new QListWidgetItem(QString::fromStdString(logic->GetModelSummary(id)), d->modelList);
        item->setData(Qt::UserRole, QString::fromStdString(id));
    }
    d->problemsList->clear();
    for (const std::string& p : logic->GetLoadProblems()) d->problemsList->addItem(QString::fromStdString(p));
    d->problemsCollapsibleButton->setVisible(!logic->GetLoadProblems().empty());
    d->statusLabel->setText(QString::fromStdString(logic->GetStatusMessage()));
}

void qSlicerImhostModelsModuleWidget::onModelSelected() {
    Q_D(qSlicerImhostModelsModuleWidget);
    auto* logic = vtkSlicerImhostModelsLogic::SafeDownCast(this->logic());
    QListWidgetItem* item = d->modelList->currentItem();
    if (!logic || !item) return;
    const std::string id = item->data(Qt::UserRole).toString().toStdString();
    d->manifestBrowser->setPlainText(QString::fromStdString(logic->GetManifestJSON(id)));
    // The options form, generated from the manifest's schema.
    while (QLayoutItem* child = d->optionsLayout->takeAt(0)) {
        delete child->widget();
        delete child;
    }
    d->editors.clear();
    d->fields = logic->GetOptionFields(id);
    for (const auto& f : d->fields) {
        QWidget* editor = nullptr;
        if (f.type == "boolean") {
            auto* box = new QCheckBox;
            box->setChecked(f.default_value == "true");
            editor = box;
        } else if (f.type == "integer") {
            auto* box = new QSpinBox;
            box->setRange(f.has_minimum ? static_cast<int>(f.minimum) : -1000000, f.has_maximum ? static_cast<int>(f.maximum) : 1000000);
            box->setValue(std::stoi(f.default_value));
            if (!f.unit.empty()) box->setSuffix(QString(" ") + QString::fromStdString(f.unit));
            editor = box;
        } else if (f.type == "number") {
            auto* box = new QDoubleSpinBox;
            box->setDecimals(3);
            box->setRange(f.has_minimum ? f.minimum : -1e9, f.has_maximum ? f.maximum : 1e9);
            box->setValue(std::stod(f.default_value));
            if (!f.unit.empty()) box->setSuffix(QString(" ") + QString::fromStdString(f.unit));
            editor = box;
        } else if (f.type == "enum") {
            auto* box = new QComboBox;
            for (const auto& c : f.choices) box->addItem(QString::fromStdString(c));
            box->setCurrentText(QString::fromStdString(f.default_value));
            editor = box;
        } else {
            editor = new QLineEdit(QString::fromStdString(f.default_value));
        }
        editor->setToolTip(QString::fromStdString(f.description));
        d->optionsLayout->addRow(QString::fromStdString(f.name), editor);
        d->editors[f.name] = editor;
    }
    // One input selector per declared input.
    while (QLayoutItem* child = d->inputsLayout->takeAt(0)) {
        delete child->widget();
        delete child;
    }
    d->inputs.clear();
    for (const auto& in : logic->GetInputFields(id)) {
        auto* combo = new qMRMLNodeComboBox;
        combo->setNodeTypes(in.dims == 4 ? QStringList() << "vtkMRMLSequenceNode" << "vtkMRMLScalarVolumeNode"
                                         : QStringList() << "vtkMRMLScalarVolumeNode");
        combo->setNoneEnabled(true);
        combo->setAddEnabled(false);
        combo->setMRMLScene(this->mrmlScene());
        d->inputsLayout->addRow(QString::fromStdString(in.name + " (" + in.modality + ")"), combo);
        d->inputs.push_back(combo);
    }
}

void qSlicerImhostModelsModuleWidget::onRun() {
    Q_D(qSlicerImhostModelsModuleWidget);
    auto* logic = vtkSlicerImhostModelsLogic::SafeDownCast(this->logic());
    QListWidgetItem* item = d->modelList->currentItem();
    if (!logic || !item) return;
    const std::string id = item->data(Qt::UserRole).toString().toStdString();
    std::map<std::string, std::string> values;
    for (const auto& f : d->fields) {
        QWidget* e = d->editors[f.name];
        if (auto* b = qobject_cast<QCheckBox*>(e)) values[f.name] = b->isChecked() ? "true" : "false";
        else if (auto* i = qobject_cast<QSpinBox*>(e)) values[f.name] = std::to_string(i->value());
        else if (auto* n = qobject_cast<QDoubleSpinBox*>(e)) values[f.name] = QString::number(n->value(), 'g', 15).toStdString();
        else if (auto* c = qobject_cast<QComboBox*>(e)) values[f.name] = c->currentText().toStdString();
        else if (auto* l = qobject_cast<QLineEdit*>(e)) values[f.name] = l->text().toStdString();
    }
    std::string options, error;
    if (!logic->MakeOptionsJSON(id, values, options, error)) {
        d->statusLabel->setText(QString::fromStdString(error));
        return;
    }
    std::vector<vtkMRMLNode*> inputs;
    for (auto* combo : d->inputs) inputs.push_back(combo->currentNode());
    const bool started = logic->StartModel(id, inputs, options);
    d->statusLabel->setText(QString::fromStdString(logic->GetStatusMessage()));
    if (!started) return;
    d->runButton->setEnabled(false);
    d->cancelButton->setEnabled(true);
    d->progressBar->setValue(0);
    d->progressBar->setVisible(true);
    d->timer.start();
}

void qSlicerImhostModelsModuleWidget::onCancel() {
    if (auto* logic = vtkSlicerImhostModelsLogic::SafeDownCast(this->logic())) logic->CancelRun();
}

void qSlicerImhostModelsModuleWidget::onPoll() {
    Q_D(qSlicerImhostModelsModuleWidget);
    auto* logic = vtkSlicerImhostModelsLogic::SafeDownCast(this->logic());
    if (!logic) return;
    const int state = logic->ProcessRun();
    if (state == vtkSlicerImhostModelsLogic::Running) {
        d->progressBar->setValue(static_cast<int>(100 * logic->GetRunProgress()));
        const double left = logic->GetRunSecondsLeft();
        QString format = QString::fromStdString(logic->GetRunStage()) + " %p%";
        if (left >= 0) format += tr(" (about %1 s left)").arg(static_cast<int>(left + 0.5));
        d->progressBar->setFormat(format);
        return;
    }
    d->timer.stop();
    d->progressBar->setVisible(false);
    d->runButton->setEnabled(true);
    d->cancelButton->setEnabled(false);
    d->statusLabel->setText(QString::fromStdString(logic->GetStatusMessage()));
}
