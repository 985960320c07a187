// node --test: the panel's logic against hand-written manifests, jobs and results.
import test from 'node:test';
import assert from 'node:assert/strict';
import { ImhostClient, buildOptions, isPerfusionModel, jobView, optionFields, overlayOutput, overlayWindow, resultRows, sortModels } from '../imhost-logic.js';

const perfusion = {
  id: 'perfusion-osvd',
  name: 'Perfusion maps (oSVD)',
  inputs: [{ name: 'ctp', modality: 'CT', dims: 4 }],
  options: {
    nihss: { type: 'integer', default: -1, minimum: -1, maximum: 42 },
    age_years: { type: 'number', default: -1, minimum: -1, maximum: 130, unit: 'years' },
    bilateral_filter: { type: 'boolean', default: true },
    kernel: { type: 'string', enum: ['box', 'gamma'], default: 'box' },
  },
};
const seg = { id: 'example.c-threshold', name: 'Threshold', inputs: [{ name: 'image', dims: 3 }], options: {} };

test('perfusion models are recognised and listed first, oSVD at the top', () => {
  assert.equal(isPerfusionModel(perfusion), true);
  assert.equal(isPerfusionModel(seg), false);
  const nlr = { ...perfusion, id: 'perfusion-nlr', name: 'Perfusion maps (NLR)' };
  assert.deepEqual(sortModels([seg, nlr, perfusion]).map(m => m.id), ['perfusion-osvd', 'perfusion-nlr', 'example.c-threshold']);
});

test('the options form follows the schema', () => {
  const f = optionFields(perfusion);
  assert.deepEqual(f.map(x => [x.name, x.type]), [['age_years', 'number'], ['bilateral_filter', 'boolean'], ['kernel', 'enum'], ['nihss', 'integer']]);
  assert.equal(f[0].unit, 'years');
  assert.deepEqual(f[2].choices, ['box', 'gamma']);
});

test('options are checked as the server checks them; defaults are left out', () => {
  const f = optionFields(perfusion);
  assert.deepEqual(buildOptions(f, { nihss: '12', age_years: '-1', bilateral_filter: false, kernel: 'gamma' }),
    { options: { nihss: 12, bilateral_filter: false, kernel: 'gamma' }, errors: [] });
  const bad = buildOptions(f, { nihss: '99', age_years: 'old', kernel: 'cubic', bilateral_filter: 'yes', colour: '1' });
  assert.deepEqual(bad.options, {});
  assert.deepEqual(bad.errors, [
    'nihss must be >= -1 and <= 42',
    "age_years must be a number, not 'old'",
    'kernel must be one of box, gamma',
    'bilateral_filter must be true or false',
    'unknown option colour',
  ]);
  assert.deepEqual(buildOptions(f, { nihss: '2.5' }).errors, ["nihss must be a whole number, not '2.5'"]);
  assert.deepEqual(buildOptions(f, { nihss: '' }).errors, ["nihss must be a whole number, not ''"]);
});

test('job states from Orthanc: running, success, failure with our message, cancelled', () => {
  assert.deepEqual(jobView({ State: 'Running', Progress: 42, Content: { Stage: 'deconvolution' } }),
    { state: 'running', progress: 0.42, stage: 'deconvolution', error: '', result: null });
  assert.equal(jobView({ State: 'Pending', Progress: 0, Content: {} }).state, 'running');
  const ok = jobView({ State: 'Success', Progress: 100, Content: { Stage: 'done', Result: { scores: {} } } });
  assert.equal(ok.state, 'success');
  assert.equal(ok.progress, 1);
  const failed = jobView({ State: 'Failure', ErrorDescription: 'Error encountered within the plugin engine', Content: { Error: 'study x does not exist' } });
  assert.equal(failed.state, 'failure');
  assert.equal(failed.error, 'study x does not exist');
  assert.equal(jobView({ State: 'Failure', ErrorDescription: 'This job was canceled', Content: {} }).state, 'cancelled');
});

const result = {
  scores: { core_ml: 46.75244, hypoperfusion_ml: 153.96018, mismatch_ml: 107.20774, mismatch_ratio: 3.2931 },
  readout: {
    volumes: { core_ml: 46.75244, hypoperfusion_ml: 153.96018, hypoperfusion_intensity_ratio: 0.7918 },
    criteria: { defuse3: { evaluated: true, met: true, detail: 'core 46.8 ml (< 70)' }, dawn: { evaluated: false, met: null, detail: 'needs age and NIHSS' } },
    withheld: null,
  },
  qc_flags: [],
  disclaimer: 'Research use only. Not for diagnostic use.',
  outputs: [
    { output: 'lesions', kind: 'segmentation', series_instance_uid: '2.25.3' },
    { output: 'cbv', kind: 'parametric_map', series_instance_uid: '2.25.2' },
    { output: 'cbf', kind: 'parametric_map', series_instance_uid: '2.25.1' },
  ],
};

test('the results table: volumes in ml, ratio, HIR, criteria, QC flags, research use', () => {
  const rows = Object.fromEntries(resultRows(result).map(r => [r.key, r]));
  assert.equal(rows.core_ml.text, '46.8 ml');
  assert.equal(rows.core_ml.value, 46.75244);
  assert.equal(rows.hypoperfusion_ml.text, '154.0 ml');
  assert.equal(rows.mismatch_ratio.text, '3.29');
  assert.equal(rows.hir.text, '0.79');
  assert.equal(rows.defuse3.text, 'met (core 46.8 ml (< 70))');
  assert.equal(rows.dawn.text, 'not evaluated (needs age and NIHSS)');
  assert.equal(rows.qc_flags.text, 'none');
  assert.match(rows.research_use_only.text, /Research use only/);
});

test('withheld volumes say so instead of a number', () => {
  const flagged = { scores: {}, readout: { volumes: { core_ml: null }, withheld: 'no AIF found' }, qc_flags: ['no_aif'] };
  const rows = Object.fromEntries(resultRows(flagged).map(r => [r.key, r]));
  assert.equal(rows.core_ml.text, 'withheld (QC)');
  assert.equal(rows.core_ml.value, null);
  assert.equal(rows.qc_flags.text, 'no_aif');
});

test('the overlay is the CBF map', () => {
  assert.equal(overlayOutput(result).output, 'cbf');
  assert.equal(overlayOutput({ outputs: [{ output: 'mask', kind: 'segmentation' }] }).output, 'mask');
  assert.equal(overlayOutput({}), null);
});

test('the client: lookup, submit, poll until the end, errors with the server message', async () => {
  const calls = [];
  const states = [{ State: 'Running', Progress: 10, Content: { Stage: 'reading' } }, { State: 'Success', Progress: 100, Content: { Stage: 'done', Result: result } }];
  const fetchFn = async (url, init = {}) => {
    calls.push([init.method || 'GET', url, init.body]);
    const reply = (status, body) => ({ ok: status < 400, status, statusText: '', text: async () => JSON.stringify(body) });
    if (url === '/tools/lookup') return reply(200, [{ ID: 'abc', Type: 'Study' }]);
    if (url === '/imhost/jobs') return init.body.includes('"model":"nope"') ? reply(400, { error: 'no such model' }) : reply(200, { ID: 'j1' });
    if (url === '/jobs/j1') return reply(200, states.shift());
    return reply(404, {});
  };
  const client = new ImhostClient(fetchFn);
  assert.equal(await client.studyId('1.2.3'), 'abc');
  const { ID } = await client.submit('perfusion-osvd', 'abc', { nihss: 12 });
  const seen = [];
  const end = await client.wait(ID, v => seen.push(v.stage), 0, async () => {});
  assert.equal(end.state, 'success');
  assert.deepEqual(seen, ['reading', 'done']);
  assert.deepEqual(JSON.parse(calls[1][2]), { model: 'perfusion-osvd', study: 'abc', options: { nihss: 12 } });
  await assert.rejects(client.submit('nope', 'abc'), /no such model/);
});

test('the overlay window comes from the map\'s own Frame VOI LUT, scaled as OHIF scales the values', () => {
  // CBF: the 1st to 99th percentile 4 to 64 ml/100 g/min, OHIF multiplies by 100.
  const instance = { SharedFunctionalGroupsSequence: [{ FrameVOILUTSequence: [{ WindowCenter: 34, WindowWidth: 60 }] }] };
  assert.deepEqual(overlayWindow(instance), { lower: 400, upper: 6400 });
  // Single items may come naturalized as objects, and values as strings or arrays.
  assert.deepEqual(overlayWindow({ SharedFunctionalGroupsSequence: { FrameVOILUTSequence: { WindowCenter: ['0.5'], WindowWidth: ['1'] } } }, 1),
    { lower: 0, upper: 1 });
  assert.equal(overlayWindow({}), null);
  assert.equal(overlayWindow({ SharedFunctionalGroupsSequence: [{ FrameVOILUTSequence: [{ WindowCenter: 3, WindowWidth: 0 }] }] }), null);
  assert.equal(overlayWindow(undefined), null);
});
