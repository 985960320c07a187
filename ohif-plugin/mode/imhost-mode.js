// imhost perfusion mode for OHIF v3 (3.13), loaded at run time by the prebuilt viewer
// (app-config `modes: ['/ext/imhost-mode.js']`). Route `/imhost-perfusion?StudyInstanceUIDs=…`:
// the series list on the left, the imhost panel on the right, a "Generate perfusion maps" toolbar
// button, and the viewports that show Parametric Maps and Segmentations over the CT.
//
// 3.13 loads every non-built-in key of a mode's `extensions` map with import(key), so the imhost
// extension is named by its URL (next to this file), not by its id.
const EXTENSION_URL = new URL('../extension/imhost-extension.js', import.meta.url).href;
const PANEL = 'imhost.panelModule.imhost';

const ohif = {
  layout: '@ohif/extension-default.layoutTemplateModule.viewerLayout',
  sopClassHandler: '@ohif/extension-default.sopClassHandlerModule.stack',
  thumbnailList: '@ohif/extension-default.panelModule.seriesList',
};
const cornerstone = { viewport: '@ohif/extension-cornerstone.viewportModule.cornerstone' };
const seg = {
  sopClassHandler: '@ohif/extension-cornerstone-dicom-seg.sopClassHandlerModule.dicom-seg',
  viewport: '@ohif/extension-cornerstone-dicom-seg.viewportModule.dicom-seg',
};
const pmap = {
  sopClassHandler: '@ohif/extension-cornerstone-dicom-pmap.sopClassHandlerModule.dicom-pmap',
  viewport: '@ohif/extension-cornerstone-dicom-pmap.viewportModule.dicom-pmap',
};
const sr = {
  sopClassHandler: '@ohif/extension-cornerstone-dicom-sr.sopClassHandlerModule.dicom-sr',
  viewport: '@ohif/extension-cornerstone-dicom-sr.viewportModule.dicom-sr',
};

const extensionDependencies = {
  '@ohif/extension-default': '^3.0.0',
  '@ohif/extension-cornerstone': '^3.0.0',
  '@ohif/extension-cornerstone-dicom-seg': '^3.0.0',
  '@ohif/extension-cornerstone-dicom-pmap': '^3.0.0',
  '@ohif/extension-cornerstone-dicom-sr': '^3.0.0',
  [EXTENSION_URL]: '^0.1.0',
};

const toolbarButtons = [
  {
    id: 'imhostGeneratePerfusionMaps',
    uiType: 'ohif.toolButton',
    props: {
      icon: 'tool-create-threshold',
      label: 'Generate perfusion maps',
      tooltip: 'Generate perfusion maps (imhost; research use only)',
      commands: 'imhostGeneratePerfusionMaps',
      evaluate: 'evaluate.action',
    },
  },
];

function setUpTools(extensionManager, toolGroupService) {
  const utility = extensionManager.getModuleEntry('@ohif/extension-cornerstone.utilityModule.tools');
  const { toolNames, Enums } = utility.exports;
  const tools = {
    active: [
      { toolName: toolNames.WindowLevel, bindings: [{ mouseButton: Enums.MouseBindings.Primary }] },
      { toolName: toolNames.Pan, bindings: [{ mouseButton: Enums.MouseBindings.Auxiliary }] },
      { toolName: toolNames.Zoom, bindings: [{ mouseButton: Enums.MouseBindings.Secondary }] },
      { toolName: toolNames.StackScroll, bindings: [{ mouseButton: Enums.MouseBindings.Wheel }] },
    ],
    passive: [{ toolName: toolNames.Length }, { toolName: toolNames.Probe }],
  };
  toolGroupService.createToolGroupAndAddTools('default', tools);
}

function modeFactory() {
  return {
    id: 'imhost-perfusion',
    routeName: 'imhost-perfusion',
    displayName: 'imhost perfusion (research use only)',
    onModeEnter({ servicesManager, extensionManager }) {
      const { toolbarService, toolGroupService } = servicesManager.services;
      setUpTools(extensionManager, toolGroupService);
      toolbarService.register(toolbarButtons);
      toolbarService.updateSection('primary', ['imhostGeneratePerfusionMaps']);
    },
    onModeExit({ servicesManager }) {
      const { toolGroupService, segmentationService, cornerstoneViewportService } = servicesManager.services;
      toolGroupService.destroy();
      if (segmentationService) segmentationService.destroy();
      if (cornerstoneViewportService) cornerstoneViewportService.destroy();
    },
    validationTags: { study: [], series: [] },
    isValidMode: ({ modalities }) => {
      const valid = String(modalities || '').split('\\').includes('CT');
      return { valid, description: valid ? 'CT perfusion' : 'imhost perfusion needs a CT study' };
    },
    routes: [
      {
        path: 'imhost-perfusion',
        layoutTemplate: () => ({
          id: ohif.layout,
          props: {
            leftPanels: [ohif.thumbnailList],
            rightPanels: [PANEL],
            rightPanelClosed: false,
            viewports: [
              { namespace: cornerstone.viewport, displaySetsToDisplay: [ohif.sopClassHandler] },
              { namespace: pmap.viewport, displaySetsToDisplay: [pmap.sopClassHandler] },
              { namespace: seg.viewport, displaySetsToDisplay: [seg.sopClassHandler] },
              { namespace: sr.viewport, displaySetsToDisplay: [sr.sopClassHandler] },
            ],
          },
        }),
      },
    ],
    extensions: extensionDependencies,
    hangingProtocol: 'default',
    sopClassHandlers: [seg.sopClassHandler, pmap.sopClassHandler, ohif.sopClassHandler, sr.sopClassHandler],
  };
}

export default { id: 'imhost-perfusion', modeFactory, extensionDependencies };
