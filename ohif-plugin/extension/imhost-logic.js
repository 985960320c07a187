// imhost for OHIF: the logic of the panel, free of the DOM and of OHIF, so that `node --test`
// checks it. The panel (imhost-extension.js) only renders what these functions decide.

export const RESEARCH_USE_ONLY = 'Research use only. Not for diagnostic use.';

/** The models a perfusion button runs: those whose first input is a 4-D CT time series. */
export function isPerfusionModel(manifest) {
  const input = (manifest && manifest.inputs && manifest.inputs[0]) || {};
  return input.dims === 4 && (input.modality === 'CT' || input.modality === undefined);
}

/** Perfusion models first (the default, oSVD, at the top), then the others, each group by name. */
export function sortModels(models) {
  const rank = m => (m.id === 'perfusion-osvd' ? 0 : isPerfusionModel(m) ? 1 : 2);
  return [...models].sort((a, b) => rank(a) - rank(b) || String(a.name || a.id).localeCompare(String(b.name || b.id)));
}

/** One form field per option of the manifest's option schema, in a stable order. */
export function optionFields(manifest) {
  const options = (manifest && manifest.options) || {};
  return Object.keys(options)
    .sort()
    .map(name => {
      const spec = options[name] || {};
      let type = spec.type || 'string';
      const choices = Array.isArray(spec.enum) ? spec.enum.map(String) : null;
      if (type === 'string' && choices) type = 'enum';
      return {
        name,
        type,
        choices,
        default: spec.default,
        minimum: typeof spec.minimum === 'number' ? spec.minimum : null,
        maximum: typeof spec.maximum === 'number' ? spec.maximum : null,
        unit: spec.unit || '',
        description: spec.description || '',
      };
    });
}

/**
 * The options object to send from the form's text values (`{name: text}`), checked against the
 * fields as the server will check them. Values equal to the default are left out. Returns
 * `{options, errors}`; `errors` lists one readable line per bad field.
 */
export function buildOptions(fields, values) {
  const options = {};
  const errors = [];
  const byName = new Map(fields.map(f => [f.name, f]));
  for (const [name, raw] of Object.entries(values || {})) {
    const f = byName.get(name);
    if (!f) {
      errors.push(`unknown option ${name}`);
      continue;
    }
    const text = typeof raw === 'string' ? raw.trim() : raw;
    let value;
    if (f.type === 'boolean') {
      if (text !== true && text !== false && text !== 'true' && text !== 'false') {
        errors.push(`${name} must be true or false`);
        continue;
      }
      value = text === true || text === 'true';
    } else if (f.type === 'number' || f.type === 'integer') {
      const x = typeof text === 'number' ? text : text === '' ? NaN : Number(text);
      if (!Number.isFinite(x) || (f.type === 'integer' && !Number.isInteger(x))) {
        errors.push(`${name} must be ${f.type === 'integer' ? 'a whole number' : 'a number'}, not '${raw}'`);
        continue;
      }
      if ((f.minimum !== null && x < f.minimum) || (f.maximum !== null && x > f.maximum)) {
        const range = [f.minimum !== null ? `>= ${f.minimum}` : '', f.maximum !== null ? `<= ${f.maximum}` : '']
          .filter(Boolean)
          .join(' and ');
        errors.push(`${name} must be ${range}${f.unit ? ' ' + f.unit : ''}`);
        continue;
      }
      value = x;
    } else {
      if (f.type === 'enum' && !f.choices.includes(String(text))) {
        errors.push(`${name} must be one of ${f.choices.join(', ')}`);
        continue;
      }
      value = String(text);
    }
    if (value !== f.default) options[name] = value;
  }
  return { options, errors };
}

/**
 * What the panel shows of an Orthanc job (`GET /jobs/{id}`, with our Content): the state
 * (`running`, `success`, `failure`, `cancelled`), progress 0..1, the stage and the error.
 */
export function jobView(job) {
  const content = (job && job.Content) || {};
  const orthancState = (job && job.State) || 'Pending';
  const cancelled = orthancState === 'Failure' && /cancel/i.test(`${job.ErrorDescription || ''} ${content.Error || ''}`);
  const state =
    orthancState === 'Success'
      ? 'success'
      : cancelled || orthancState === 'Canceled'
        ? 'cancelled'
        : orthancState === 'Failure'
          ? 'failure'
          : 'running';
  const progress = Math.max(0, Math.min(1, Number(job && job.Progress) / 100 || 0));
  let error = '';
  if (state === 'failure') error = content.Error || job.ErrorDescription || 'the job failed';
  return { state, progress: state === 'success' ? 1 : progress, stage: content.Stage || orthancState.toLowerCase(), error, result: content.Result || null };
}

function fmt(x, digits = 1) {
  return typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '—';
}

/**
 * The rows of the results table: `[{key, label, text, value}]`. Volumes in ml; withheld
 * volumes (a QC flag) say so instead of a number; criteria with their detail.
 */
export function resultRows(result) {
  if (!result) return [];
  const rows = [];
  const scores = result.scores || {};
  const volumes = (result.readout && result.readout.volumes) || {};
  const withheld = (result.readout && result.readout.withheld) || null;
  const volume = (key, label) => {
    const v = key in scores ? scores[key] : volumes[key];
    rows.push({ key, label, value: typeof v === 'number' ? v : null, text: typeof v === 'number' ? `${fmt(v)} ml` : withheld ? 'withheld (QC)' : '—' });
  };
  if ('core_ml' in scores || 'core_ml' in volumes) {
    volume('core_ml', 'Ischemic core (rCBF < 30 %)');
    volume('hypoperfusion_ml', 'Hypoperfusion (Tmax > 6 s)');
    volume('mismatch_ml', 'Mismatch volume');
    const ratio = scores.mismatch_ratio;
    rows.push({ key: 'mismatch_ratio', label: 'Mismatch ratio', value: typeof ratio === 'number' ? ratio : null, text: fmt(ratio, 2) });
    const hir = volumes.hypoperfusion_intensity_ratio;
    if (typeof hir === 'number') rows.push({ key: 'hir', label: 'Hypoperfusion intensity ratio', value: hir, text: fmt(hir, 2) });
  } else {
    for (const [key, v] of Object.entries(scores)) rows.push({ key, label: key, value: v, text: fmt(v, 3) });
  }
  const criteria = (result.readout && result.readout.criteria) || {};
  for (const [key, label] of [['defuse3', 'DEFUSE-3 imaging criteria'], ['dawn', 'DAWN imaging criteria']]) {
    const c = criteria[key];
    if (!c) continue;
    const verdict = c.evaluated ? (c.met ? 'met' : 'not met') : 'not evaluated';
    rows.push({ key, label, value: c.evaluated ? !!c.met : null, text: `${verdict}${c.detail ? ` (${c.detail})` : ''}` });
  }
  const flags = result.qc_flags || [];
  rows.push({
    key: 'qc_flags',
    label: 'QC flags',
    value: flags,
    text: flags.length ? flags.map(f => (typeof f === 'string' ? f : f.code || f.flag || JSON.stringify(f))).join(', ') : 'none',
  });
  rows.push({ key: 'research_use_only', label: 'Use', value: true, text: result.disclaimer || RESEARCH_USE_ONLY });
  return rows;
}

/** The output to show as an overlay first: CBF, else the first map, else the first segmentation. */
export function overlayOutput(result) {
  const outputs = (result && result.outputs) || [];
  return (
    outputs.find(o => o.output === 'cbf') ||
    outputs.find(o => o.kind === 'parametric_map') ||
    outputs.find(o => o.kind === 'segmentation') ||
    null
  );
}

/**
 * The display range of a Parametric Map overlay, from the window the map itself carries (its
 * Frame VOI LUT: imhost writes the 1st to 99th percentile of the map's values) times `scale`
 * (OHIF 3.13's Parametric Map viewport multiplies the values by 100 and would otherwise show
 * them through a fixed 0–100 window, which saturates a CBF map). `instance` is the map's
 * metadata as OHIF holds it (naturalized DICOM JSON). Null when the map carries no window.
 */
export function overlayWindow(instance, scale = 100) {
  const first = v => (Array.isArray(v) ? v[0] : v);
  const shared = first(instance && instance.SharedFunctionalGroupsSequence);
  const voi = first(shared && shared.FrameVOILUTSequence) || instance || {};
  const center = Number(first(voi.WindowCenter));
  const width = Number(first(voi.WindowWidth));
  if (!Number.isFinite(center) || !Number.isFinite(width) || width <= 0) return null;
  return { lower: (center - width / 2) * scale, upper: (center + width / 2) * scale };
}

/**
 * Talks to Orthanc (same origin): the model list, job submission, polling and cancel. `fetchFn`
 * is the browser's fetch (or a test's).
 */
export class ImhostClient {
  constructor(fetchFn, root = '') {
    this.fetch = fetchFn;
    this.root = root;
  }

  async json(path, init) {
    const r = await this.fetch(this.root + path, init);
    const text = await r.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!r.ok) {
      const message = (body && (body.error || body.Message || body.Details)) || `${r.status} ${r.statusText || ''}`.trim();
      throw new Error(`${path}: ${message}`);
    }
    return body;
  }

  async models() {
    const list = await this.json('/imhost/models');
    return sortModels((list && list.models) || []);
  }

  /** The Orthanc id of a study from its StudyInstanceUID. */
  async studyId(studyInstanceUID) {
    const found = await this.json('/tools/lookup', { method: 'POST', body: studyInstanceUID });
    const study = (found || []).find(x => x.Type === 'Study');
    if (!study) throw new Error(`Orthanc does not hold study ${studyInstanceUID}`);
    return study.ID;
  }

  async submit(model, study, options) {
    const body = JSON.stringify({ model, study, options: options || {} });
    return this.json('/imhost/jobs', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
  }

  async job(id) {
    return this.json(`/jobs/${encodeURIComponent(id)}`);
  }

  async cancel(id) {
    return this.json(`/jobs/${encodeURIComponent(id)}/cancel`, { method: 'POST', body: '{}' });
  }

  /** Poll until the job ends; `onUpdate(jobView)` on every poll. Resolves with the last view. */
  async wait(id, onUpdate, intervalMs = 250, sleep = ms => new Promise(r => setTimeout(r, ms))) {
    for (;;) {
      const view = jobView(await this.job(id));
      if (onUpdate) onUpdate(view);
      if (view.state !== 'running') return view;
      await sleep(intervalMs);
    }
  }
}
