// imhost for OHIF v3 (3.13): an extension loaded at run time by the prebuilt viewer
// (app-config `extensions: ['/ext/imhost-extension.js']`). It adds
//   - the panel `imhost.panelModule.imhost`: model list, options form from the manifest's schema,
//     progress with stage and Cancel, the results table (volumes, mismatch, criteria, QC flags);
//   - the command `imhostGeneratePerfusionMaps` (the mode's toolbar button "Generate perfusion maps").
// When a job ends, the new series are fetched into the study browser and the CBF map is shown as an
// overlay on the CTP. The viewer exposes no React to extensions loaded this way, so the panel is
// plain DOM mounted through a ref of one element built by hand.
import {
  ImhostClient,
  RESEARCH_USE_ONLY,
  buildOptions,
  isPerfusionModel,
  optionFields,
  overlayOutput,
  overlayWindow,
  resultRows,
} from './imhost-logic.js';

export const EXTENSION_ID = 'imhost';
export const PANEL_ID = `${EXTENSION_ID}.panelModule.imhost`;

// A React 18 element without React (the production build checks only these fields).
const REACT_ELEMENT = Symbol.for('react.element');
function element(type, props, ref) {
  return { $$typeof: REACT_ELEMENT, type, key: null, ref: ref || null, props: props || {}, _owner: null };
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'style') Object.assign(node.style, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

const css = {
  panel: { padding: '8px', color: '#d8e4ee', fontSize: '13px', fontFamily: 'inherit', overflowY: 'auto', height: '100%' },
  h: { fontSize: '15px', margin: '4px 0 6px', color: '#5acce6' },
  note: { fontSize: '11px', color: '#f0c060', margin: '4px 0 8px' },
  label: { display: 'block', margin: '6px 0 2px', color: '#9fb4c4' },
  input: { width: '100%', background: '#0b1a2a', color: '#fff', border: '1px solid #3a4f63', padding: '3px' },
  button: { margin: '8px 6px 4px 0', padding: '5px 10px', background: '#348cfd', color: '#fff', border: 'none', borderRadius: '4px', cursor: 'pointer' },
  error: { color: '#ff7070', margin: '6px 0', whiteSpace: 'pre-wrap' },
  table: { width: '100%', borderCollapse: 'collapse', marginTop: '6px' },
  td: { borderBottom: '1px solid #2a3b4d', padding: '3px 2px', verticalAlign: 'top' },
};

/** The panel's state and DOM, one per viewer page (the panel may be mounted more than once). */
class Controller {
  constructor() {
    this.services = null;
    this.client = new ImhostClient((...a) => window.fetch(...a));
    this.models = [];
    this.model = null;
    this.jobId = null;
    this.root = el('div', { 'data-testid': 'imhost-panel', style: css.panel });
    this.mount = node => {
      if (node && this.root.parentNode !== node) node.append(this.root);
    };
    this.built = false;
  }

  setServices(servicesManager, extensionManager) {
    this.services = servicesManager.services;
    if (extensionManager) this.extensionManager = extensionManager;
  }

  build() {
    if (this.built) return;
    this.built = true;
    this.modelSelect = el('select', { 'data-testid': 'imhost-model', style: css.input, onchange: () => this.selectModel(this.modelSelect.value) });
    this.form = el('div', { 'data-testid': 'imhost-options' });
    this.runButton = el('button', { 'data-testid': 'imhost-run', style: css.button, onclick: () => this.generate() }, 'Generate perfusion maps');
    this.cancelButton = el('button', { 'data-testid': 'imhost-cancel', style: { ...css.button, background: '#8a3a3a' }, disabled: true, onclick: () => this.cancel() }, 'Cancel');
    this.progress = el('progress', { 'data-testid': 'imhost-progress', max: '1', value: '0', style: { width: '100%' } });
    this.stage = el('div', { 'data-testid': 'imhost-stage' }, 'idle');
    this.error = el('div', { 'data-testid': 'imhost-error', style: css.error });
    this.results = el('div', { 'data-testid': 'imhost-results' });
    this.root.append(
      el('div', { style: css.h }, 'imhost'),
      el('div', { style: css.note, 'data-testid': 'imhost-research-use' }, RESEARCH_USE_ONLY),
      el('label', { style: css.label }, 'Model'),
      this.modelSelect,
      this.form,
      el('div', {}, this.runButton, this.cancelButton),
      this.progress,
      this.stage,
      this.error,
      this.results
    );
    this.loadModels();
  }

  async loadModels() {
    try {
      this.models = await this.client.models();
      this.modelSelect.replaceChildren(...this.models.map(m => el('option', { value: m.id }, `${m.name || m.id} (${m.id})`)));
      if (this.models.length) this.selectModel(this.models[0].id);
      this.root.setAttribute('data-models', String(this.models.length));
    } catch (e) {
      this.showError(`cannot list the models: ${e.message}`);
    }
  }

  selectModel(id) {
    this.model = this.models.find(m => m.id === id) || null;
    this.modelSelect.value = id;
    this.fields = optionFields(this.model);
    this.inputs = new Map();
    this.form.replaceChildren();
    for (const f of this.fields) {
      let input;
      if (f.type === 'boolean') {
        input = el('input', { type: 'checkbox', 'data-option': f.name });
        input.checked = !!f.default;
      } else if (f.type === 'enum') {
        input = el('select', { 'data-option': f.name, style: css.input }, ...f.choices.map(c => el('option', { value: c }, c)));
        input.value = String(f.default ?? f.choices[0]);
      } else {
        input = el('input', {
          type: f.type === 'string' ? 'text' : 'number',
          'data-option': f.name,
          style: css.input,
          min: f.minimum ?? undefined,
          max: f.maximum ?? undefined,
          step: f.type === 'integer' ? '1' : 'any',
        });
        input.value = f.default === undefined ? '' : String(f.default);
      }
      this.inputs.set(f.name, input);
      this.form.append(el('label', { style: css.label, title: f.description }, `${f.name}${f.unit ? ` (${f.unit})` : ''}`), input);
    }
    this.runButton.textContent = isPerfusionModel(this.model) ? 'Generate perfusion maps' : `Run ${id}`;
  }

  values() {
    const out = {};
    for (const [name, input] of this.inputs) out[name] = input.type === 'checkbox' ? input.checked : input.value;
    return out;
  }

  showError(message) {
    this.error.textContent = message || '';
  }

  studyInstanceUID() {
    const params = new URLSearchParams(window.location.search);
    const fromUrl = params.get('StudyInstanceUIDs') || params.get('studyInstanceUIDs');
    if (fromUrl) return fromUrl.split(',')[0];
    const ds = this.services && this.services.displaySetService.getActiveDisplaySets()[0];
    return ds ? ds.StudyInstanceUID : null;
  }

  /** Start the selected model (the default: oSVD perfusion) on the study shown. */
  async generate() {
    this.build();
    if (this.jobId) return;
    this.showError('');
    this.results.replaceChildren();
    if (!this.model) await this.loadModels();
    if (!this.model) return;
    const { options, errors } = buildOptions(this.fields, this.values());
    if (errors.length) return this.showError(errors.join('\n'));
    const uid = this.studyInstanceUID();
    if (!uid) return this.showError('no study is open');
    this.runButton.disabled = true;
    this.cancelButton.disabled = false;
    this.root.removeAttribute('data-job');
    this.root.removeAttribute('data-overlay');
    this.root.setAttribute('data-state', 'running');
    try {
      const study = await this.client.studyId(uid);
      const { ID } = await this.client.submit(this.model.id, study, options);
      this.jobId = ID;
      this.root.setAttribute('data-job', ID);
      const view = await this.client.wait(ID, v => this.showProgress(v));
      this.root.setAttribute('data-state', view.state);
      if (view.state === 'success') await this.showResult(view.result, uid);
      else if (view.state === 'cancelled') this.stage.textContent = 'cancelled: nothing was stored';
      else this.showError(view.error);
    } catch (e) {
      this.root.setAttribute('data-state', 'failure');
      this.showError(e.message);
    } finally {
      this.jobId = null;
      this.runButton.disabled = false;
      this.cancelButton.disabled = true;
    }
  }

  showProgress(view) {
    this.progress.value = view.progress;
    this.stage.textContent = `${view.stage} (${Math.round(view.progress * 100)} %)`;
  }

  async cancel() {
    if (!this.jobId) return;
    this.cancelButton.disabled = true;
    try {
      await this.client.cancel(this.jobId);
    } catch (e) {
      this.showError(e.message);
    }
  }

  async showResult(result, studyInstanceUID) {
    const rows = resultRows(result);
    const table = el('table', { style: css.table, 'data-testid': 'imhost-results-table' });
    for (const r of rows) {
      const value = Array.isArray(r.value) ? r.value.join(',') : r.value;
      table.append(el('tr', { 'data-row': r.key, 'data-value': value }, el('td', { style: css.td }, r.label), el('td', { style: css.td }, r.text)));
    }
    const series = el('div', { 'data-testid': 'imhost-new-series', 'data-count': String((result.outputs || []).length) },
      `${(result.outputs || []).length} new series stored in the study`);
    this.results.replaceChildren(table, series);
    await this.refreshStudy(studyInstanceUID, result);
  }

  /** Fetch the new series into the viewer and show the CBF map over the CTP. */
  async refreshStudy(studyInstanceUID, result) {
    if (!this.services) return this.showError('the results are stored; reload the study to see them (no viewer services)');
    const { displaySetService, viewportGridService } = this.services;
    const manager = this.extensionManager || window.extensionManager;
    const dataSource = manager && manager.getActiveDataSource()[0];
    if (!dataSource) return this.showError('the results are stored, but the viewer has no data source to load them from');
    const known = new Set(displaySetService.getActiveDisplaySets().map(d => d.SeriesInstanceUID));
    // 3.13 caches the study's metadata under "<data source name>:<uid>" but its delete takes the
    // key: forget both forms, so the series stored since are fetched.
    const forget = () => {
      if (!dataSource.deleteStudyMetadataPromise) return;
      const name = dataSource.getConfig ? (dataSource.getConfig() || {}).name : undefined;
      dataSource.deleteStudyMetadataPromise(studyInstanceUID);
      if (name) dataSource.deleteStudyMetadataPromise(`${name}:${studyInstanceUID}`);
    };
    try {
      forget();
      // Only the new series: the CTP's hundreds of instances are known already.
      const fresh = [...new Set((result.outputs || []).map(o => o.series_instance_uid).filter(Boolean))];
      await dataSource.retrieve.series.metadata({
        StudyInstanceUID: studyInstanceUID,
        madeInClient: true,
        ...(fresh.length ? { filters: { seriesInstanceUID: fresh } } : {}),
      });
      // The cache now holds the filtered answer: forget it, so a later full load gets the study.
      forget();
    } catch (e) {
      this.showError(`the results are stored, but the viewer could not load them: ${e.message}`);
      return;
    }
    const target = overlayOutput(result);
    const deadline = Date.now() + 20000;
    let shown = null;
    while (Date.now() < deadline && !shown) {
      const sets = displaySetService.getActiveDisplaySets();
      shown = target && sets.find(d => d.SeriesInstanceUID === target.series_instance_uid);
      if (!shown) await new Promise(r => setTimeout(r, 200));
    }
    const added = displaySetService.getActiveDisplaySets().filter(d => !known.has(d.SeriesInstanceUID)).length;
    this.root.setAttribute('data-new-display-sets', String(added));
    if (shown) {
      const viewportId = viewportGridService.getActiveViewportId();
      viewportGridService.setDisplaySetsForViewport({ viewportId, displaySetInstanceUIDs: [shown.displaySetInstanceUID] });
      this.root.setAttribute('data-overlay', target.output);
      if (target.kind === 'parametric_map') await this.windowOverlay(viewportId, shown);
    }
  }

  /**
   * Once the viewer has drawn the map over the CTP average, show it through the map's own
   * window (see overlayWindow) instead of OHIF's fixed one.
   */
  async windowOverlay(viewportId, displaySet) {
    const range = overlayWindow(displaySet.instance);
    const service = this.services.cornerstoneViewportService;
    if (!range || !service) return;
    const volumeId = displaySet.displaySetInstanceUID;
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      const viewport = service.getCornerstoneViewport(viewportId);
      const actors = viewport && viewport.getActors ? viewport.getActors() : [];
      if (displaySet.isLoaded && actors.some(a => a.uid === volumeId || a.referencedId === volumeId)) {
        viewport.setProperties({ voiRange: range }, volumeId);
        viewport.render();
        this.root.setAttribute('data-overlay-window', `${range.lower},${range.upper}`);
        // In the background: the panel is free for the next run meanwhile.
        this.holdWindow(viewport, volumeId, range).catch(() => {});
        return;
      }
      await new Promise(r => setTimeout(r, 250));
    }
  }

  /**
   * For the first seconds after loading, OHIF may still reset the map to its full value range
   * (min to max, which outliers make mostly one colour): put the map's window back if so.
   */
  async holdWindow(viewport, volumeId, range, seconds = 10) {
    const deadline = Date.now() + seconds * 1000;
    let restored = 0;
    while (Date.now() < deadline) {
      await new Promise(r => setTimeout(r, 250));
      const now = viewport.getProperties ? (viewport.getProperties(volumeId) || {}).voiRange : null;
      const off = now && (Math.abs(now.lower - range.lower) > 1e-6 * Math.max(1, Math.abs(range.lower)) ||
        Math.abs(now.upper - range.upper) > 1e-6 * Math.max(1, Math.abs(range.upper)));
      if (off) {
        viewport.setProperties({ voiRange: range }, volumeId);
        viewport.render();
        restored++;
        this.root.setAttribute('data-overlay-window-restored', String(restored));
      }
    }
  }
}

const controller = new Controller();

function ImhostPanel() {
  controller.build();
  return element('div', { style: { height: '100%' } }, controller.mount);
}

const extension = {
  id: EXTENSION_ID,
  version: '0.1.0',
  preRegistration({ servicesManager, extensionManager }) {
    controller.setServices(servicesManager, extensionManager);
  },
  getPanelModule({ servicesManager, extensionManager }) {
    controller.setServices(servicesManager, extensionManager);
    return [{ name: 'imhost', iconName: 'tab-linear', iconLabel: 'imhost', label: 'imhost', component: ImhostPanel }];
  },
  getCommandsModule({ servicesManager }) {
    return {
      definitions: {
        imhostGeneratePerfusionMaps: {
          commandFn: () => {
            const { panelService } = servicesManager.services;
            if (panelService && panelService.activatePanel) panelService.activatePanel(PANEL_ID, true);
            controller.generate();
          },
        },
      },
      defaultContext: 'VIEWER',
    };
  },
};

export default extension;
