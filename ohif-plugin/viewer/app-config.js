/** OHIF 3.13 app-config for a deployment with the imhost Orthanc plugin. The viewer, Orthanc's
 * DICOMweb (/dicom-web, /wado) and imhost's routes (/imhost/, /jobs/, /tools/lookup) are served
 * from one origin, e.g. by the reverse proxy that also authenticates users (see README.md). */
window.config = {
  name: 'imhost',
  routerBasename: null,
  showStudyList: true,
  // imhost's extension and mode, loaded at run time (no rebuild of the viewer).
  extensions: ['/ext/extension/imhost-extension.js'],
  modes: ['/ext/mode/imhost-mode.js'],
  customizationService: {},
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'Orthanc with imhost',
        name: 'orthanc',
        wadoUriRoot: '/wado',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: { enabled: true },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
