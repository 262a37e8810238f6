"""The page: one HTML document, its stylesheet and its script, self-contained (system fonts, no CDN, no
framework), served as ``/``, ``/app.css`` and ``/app.js`` so that the Content-Security-Policy can forbid
inline scripts and every other origin. Everything it shows comes from the JSON API (:mod:`vitlens.app.api`).
"""

from __future__ import annotations

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vitlens: explain an image classifier</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header>
  <h1>vitlens <span>explain an image classifier's decision</span></h1>
  <p>Pick a model and an image, choose explanation methods, and compare where each says the evidence is,
  with scores of how faithful each map is to the model.</p>
</header>
<main>
<form id="controls" autocomplete="off">
  <fieldset>
    <legend>1. Model</legend>
    <select id="model" aria-label="Model"></select>
    <p id="model-note" class="note"></p>
  </fieldset>
  <fieldset>
    <legend>2. Image</legend>
    <div class="choice">
      <label><input type="radio" name="source" value="sample" checked> Builtin sample</label>
      <label><input type="radio" name="source" value="upload"> Upload a file</label>
    </div>
    <div id="sample-box"><select id="sample" aria-label="Builtin sample"></select>
      <p class="note">Synthetic test images with the exact location of the class evidence (outlined in white).</p>
    </div>
    <div id="upload-box" hidden>
      <input type="file" id="file" aria-label="Image file"
             accept=".png,.jpg,.jpeg,.tif,.tiff,.bmp,.webp,image/png,image/jpeg,image/tiff,image/bmp,image/webp">
      <p class="note">PNG (8/16-bit, grayscale), JPEG, TIFF, BMP or WebP; at most 20 MB and 40 megapixels.</p>
    </div>
  </fieldset>
  <fieldset>
    <legend>3. Prediction</legend>
    <table id="top5" aria-label="Top-5 classes"><tbody><tr><td class="note">choose an image</td></tr></tbody></table>
  </fieldset>
  <fieldset>
    <legend>4. Class to explain</legend>
    <select id="target" aria-label="Class to explain"><option value="">Predicted class</option></select>
  </fieldset>
  <fieldset>
    <legend>5. Methods</legend>
    <p class="note top">Tick one or more; hover a name for what it computes.</p>
    <div id="methods"></div>
  </fieldset>
  <fieldset>
    <legend>6. Faithfulness scores</legend>
    <label><input type="checkbox" id="metrics" checked> deletion and insertion AUC</label><br>
    <label>perturbation steps <input type="number" id="steps" min="1" max="64" value="14"></label>
    <p class="note">More steps: a finer curve, a slower answer.</p>
  </fieldset>
  <button type="submit" id="run" class="primary">Explain</button>
</form>
<section id="results" aria-label="Results">
  <div id="error" role="alert" hidden><span id="error-text"></span>
    <button type="button" id="error-close" aria-label="Dismiss">&times;</button></div>
  <div id="status" aria-live="polite"></div>
  <div id="toolbar" hidden>
    <label>Heatmap opacity <input type="range" id="opacity" min="0" max="1" step="0.05" value="0.5">
      <output id="opacity-value">0.50</output></label>
    <span class="legend" title="colour scale of every heatmap (each map is scaled to its own range)">low
      <span class="bar"></span> high</span>
    <a id="download" class="button" href="#" download>Download maps (.zip)</a>
  </div>
  <div id="summary"></div>
  <div id="grid"></div>
  <details class="help">
    <summary>How to read the results</summary>
    <p><b>Heatmap</b>: red is where a method puts the most evidence for the explained class, blue the least;
    each map is scaled to its own range, so colours compare places within a map, not across maps.</p>
    <p><b>Deletion AUC</b> (lower is better): the model's probability for the explained class while the
    image's patches are blanked out, most relevant first; a faithful map makes it drop fast.
    <b>Insertion AUC</b> (higher is better): the same while patches are revealed on a blank image, most
    relevant first. Both from Petsiuk et al. (2018), with the chosen number of steps.</p>
    <p><b>Pointing game</b> (builtin samples): a hit when the map's maximum lies within 15 pixels of the
    true evidence (Zhang et al. 2018).</p>
    <p class="note">A research tool to inspect models, not a medical device.</p>
  </details>
</section>
</main>
</body>
</html>
"""

CSS = """
:root { --fg: #1d2733; --muted: #5b6775; --line: #d7dde4; --bg: #f5f7f9; --card: #fff; --accent: #1a5fb4;
        --bad: #b3261e; --good: #1e7d32; font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg); font-size: 15px; line-height: 1.4; }
header { padding: 14px 24px 10px; background: var(--card); border-bottom: 1px solid var(--line); }
header h1 { margin: 0; font-size: 22px; }
header h1 span { font-weight: 400; color: var(--muted); font-size: 17px; margin-left: 8px; }
header p { margin: 4px 0 0; color: var(--muted); }
main { display: grid; grid-template-columns: 340px 1fr; gap: 20px; padding: 18px 24px; align-items: start; }
#controls { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px 14px; }
fieldset { border: 0; border-bottom: 1px solid var(--line); margin: 0; padding: 10px 0; }
legend { font-weight: 600; padding: 0; margin-bottom: 6px; }
select, input[type=number], input[type=text], input[type=file] { font: inherit; max-width: 100%; }
select { width: 100%; padding: 4px; }
.note { color: var(--muted); font-size: 13px; margin: 6px 0 0; }
.note.top { margin: 0 0 6px; }
.note.warn { color: #9a3412; font-weight: 600; }
.choice label { margin-right: 14px; }
#steps { width: 64px; }
#top5 { width: 100%; border-collapse: collapse; font-size: 14px; }
#top5 td { padding: 2px 4px; }
#top5 td.p { text-align: right; width: 64px; font-variant-numeric: tabular-nums; }
#top5 .barcell { width: 90px; }
#top5 .pbar { height: 8px; background: var(--accent); border-radius: 4px; }
#top5 tr.first td { font-weight: 600; }
#methods { max-height: 380px; overflow-y: auto; padding-right: 4px; }
.method { border: 1px solid var(--line); border-radius: 6px; padding: 4px 8px; margin-bottom: 4px; }
.method:has(input.method-check:checked) { border-color: var(--accent); background: #f3f7fd; }
.method > label { font-weight: 600; display: block; }
.method .tag { font-weight: 400; font-size: 12px; color: var(--muted); margin-left: 4px; }
.method .params { margin: 4px 0 0 22px; display: grid; grid-template-columns: auto 1fr; gap: 3px 8px;
                  font-size: 13px; align-items: center; }
.method .params[hidden] { display: none; }
.method .params input[type=number] { width: 80px; }
.method .params select { width: auto; }
.method .cite { font-size: 12px; color: var(--muted); margin: 2px 0 0 22px; }
.method .cite[hidden] { display: none; }
button, a.button { font: inherit; border: 1px solid var(--line); background: var(--card); border-radius: 6px;
                   padding: 6px 12px; color: var(--fg); text-decoration: none; cursor: pointer; }
button.primary { width: 100%; margin-top: 14px; background: var(--accent);
                 color: #fff; border-color: var(--accent); font-weight: 600; padding: 9px; }
button.primary:disabled { opacity: .6; cursor: progress; }
#error { background: #fdecea; border: 1px solid #f1b0aa; color: var(--bad); padding: 10px 36px 10px 12px;
         border-radius: 6px; margin-bottom: 12px; position: sticky; top: 8px; z-index: 2;
         box-shadow: 0 2px 8px rgba(0, 0, 0, .12); }
#error button { position: absolute; right: 6px; top: 4px; border: 0; background: none; color: var(--bad);
                font-size: 18px; padding: 2px 6px; }
#status { color: var(--muted); min-height: 20px; }
#toolbar { display: flex; flex-wrap: wrap; gap: 18px; align-items: center; background: var(--card);
           border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; margin-bottom: 12px; }
#toolbar[hidden], #error[hidden] { display: none; }
.legend { font-size: 13px; color: var(--muted); display: inline-flex; align-items: center; gap: 6px; }
.legend .bar { display: inline-block; width: 120px; height: 10px; border-radius: 2px;
  background: linear-gradient(90deg, #00007f, #0000ff, #007fff, #00ffff, #7fff7f, #ffff00, #ff7f00, #ff0000, #7f0000); }
#summary { margin-bottom: 10px; font-size: 15px; }
#summary .ok { color: var(--good); } #summary .bad { color: var(--bad); }
#grid { display: flex; flex-wrap: wrap; gap: 14px; }
.tile { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px;
        width: 242px; }
.stack { position: relative; width: 224px; height: 224px; background: #000; }
.stack img { position: absolute; inset: 0; width: 100%; height: 100%; }
.stack img.outline { image-rendering: pixelated; }
.tile figcaption { margin-top: 6px; font-size: 13px; }
.tile figcaption b { font-size: 14px; }
.tile .params { color: var(--muted); display: block; word-break: break-word; }
.tile dl { display: grid; grid-template-columns: auto 1fr; gap: 1px 8px; margin: 4px 0 0; }
.tile dt { color: var(--muted); } .tile dd { margin: 0; font-variant-numeric: tabular-nums; }
.hit { color: var(--good); font-weight: 600; } .miss { color: var(--bad); font-weight: 600; }
.help { margin-top: 18px; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px;
        max-width: 900px; font-size: 14px; }
.help summary { cursor: pointer; font-weight: 600; }
@media (max-width: 800px) { main { grid-template-columns: 1fr; } }
"""

JS = r"""
'use strict';
const $ = (id) => document.getElementById(id);
const state = { models: [], samples: [], file: null, seq: 0, result: null, input: null, target: null };
const PREFERRED = ['rollout', 'gradcam', 'grad_rollout', 'generic_attention'];

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// `vitlens serve --token T` prints the address /?token=T: every API call then presents it
const TOKEN = new URLSearchParams(location.search).get('token');

async function api(path, options) {
  let response;
  const opts = { ...(options || {}) };
  if (TOKEN) opts.headers = { ...(opts.headers || {}), 'X-Vitlens-Token': TOKEN };
  try { response = await fetch(path, opts); }
  catch (err) { throw new Error('The server cannot be reached. Is `vitlens serve` still running?'); }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) throw new Error((body && body.error) || `The server answered ${response.status}.`);
  return body;
}

function showError(message) {
  $('error-text').textContent = message;
  $('error').hidden = false;
  $('error').scrollIntoView({ block: 'nearest' });
}
function hideError() { $('error').hidden = true; }
function setStatus(text) { $('status').textContent = text; }
const source = () => document.querySelector('input[name=source]:checked').value;
const currentModel = () => state.models.find((m) => m.spec === $('model').value);
const fmt = (v, digits = 3) => (v === null || v === undefined ? 'n/a' : Number(v).toFixed(digits));
const pct = (p) => `${(100 * p).toFixed(p >= 0.995 || p < 0.001 ? 2 : 1)}%`;

function baseSettings() {
  const s = { model: $('model').value };
  if (source() === 'sample') s.sample = $('sample').value;
  return s;
}

function formData(settings) {
  const fd = new FormData();
  fd.append('settings', JSON.stringify(settings));
  if (source() === 'upload') {
    if (!state.file) throw new Error('Choose an image file to upload first.');
    fd.append('image', state.file, state.file.name);
  }
  return fd;
}

// ------------------------------------------------------------------------------------------- controls
function renderModels() {
  const sel = $('model');
  sel.replaceChildren(...state.models.map((m) => el('option', { value: m.spec, text: m.spec })));
}

function renderSamples() {
  const model = currentModel();
  const bench = model && model.benchmark;
  const groups = {};
  for (const s of state.samples) (groups[s.benchmark] = groups[s.benchmark] || []).push(s);
  const names = Object.keys(groups).sort((a, b) => (b === bench) - (a === bench) || a.localeCompare(b));
  const previous = $('sample').value;
  const group = (b) => el('optgroup', { label: b === bench ? `${b} (this model's data)` : b },
    ...groups[b].map((s) => el('option', { value: s.id, text: `${b} #${s.index}: ${s.label_name}` })));
  $('sample').replaceChildren(...names.map(group));
  const keep = state.samples.find((s) => s.id === previous);
  if (keep && (!bench || keep.benchmark === bench)) $('sample').value = previous;
  else if (bench && groups[bench]) $('sample').value = groups[bench][0].id;
}

function paramField(method, p) {
  const id = `p-${method.name}-${p.name}`;
  let input;
  if (p.kind === 'choice' || p.kind === 'layer') {
    const opts = p.kind === 'layer' ? [el('option', { value: '', text: 'default' })] : [];
    for (const c of p.choices || []) opts.push(el('option', { value: String(c), text: String(c) }));
    input = el('select', { id }, ...opts);
    if (p.default !== null && p.default !== undefined) input.value = String(p.default);
  } else if (p.kind === 'number') {
    input = el('input', { id, type: 'number', value: p.default ?? '', min: p.min, max: p.max, step: p.step ?? 'any' });
  } else if (p.kind === 'bool') {
    input = el('input', { id, type: 'checkbox' }); input.checked = !!p.default;
  } else {
    input = el('input', { id, type: 'text', placeholder: p.default === null ? 'default' : String(p.default) });
  }
  input.dataset.param = p.name; input.dataset.kind = p.kind;
  return [el('label', { for: id, title: p.help || '', text: p.name }), input];
}

function renderMethods() {
  const model = currentModel();
  const box = $('methods');
  const before = new Set([...box.querySelectorAll('input.method-check:checked')].map((c) => c.value));
  box.replaceChildren();
  if (!model) return;
  const names = model.methods.map((m) => m.name);
  let chosen = names.filter((n) => before.has(n));
  if (!chosen.length) chosen = PREFERRED.filter((n) => names.includes(n)).slice(0, 2);
  if (!chosen.length && names.length) chosen = [names[0]];
  for (const m of model.methods) {
    const check = el('input', { type: 'checkbox', class: 'method-check', value: m.name, id: `m-${m.name}` });
    check.checked = chosen.includes(m.name);
    const params = el('div', { class: 'params' });
    for (const p of m.params) params.append(...paramField(m, p));
    params.hidden = !check.checked || !m.params.length;
    check.addEventListener('change', () => { params.hidden = !check.checked || !m.params.length; });
    const tag = m.class_specific ? 'class-specific' : 'same map for every class';
    const cite = el('p', { class: 'cite', text: m.citation });
    cite.hidden = !check.checked;
    check.addEventListener('change', () => { cite.hidden = !check.checked; });
    box.append(el('div', { class: 'method', 'data-method': m.name },
      el('label', { for: check.id, title: `${m.summary}\n${m.citation}` }, check, ` ${m.name}`,
        el('span', { class: 'tag', text: tag })),
      cite, params));
  }
  if (!model.methods.length) box.append(el('p', { class: 'note', text: 'No explainer applies to this model.' }));
}

function selectedMethods() {
  const out = [];
  for (const div of $('methods').querySelectorAll('.method')) {
    if (!div.querySelector('input.method-check').checked) continue;
    const params = {};
    for (const input of div.querySelectorAll('[data-param]')) {
      const kind = input.dataset.kind;
      if (kind === 'bool') params[input.dataset.param] = input.checked;
      else if (input.value !== '') params[input.dataset.param] = kind === 'number' ? Number(input.value) : input.value;
    }
    out.push({ name: div.dataset.method, params });
  }
  return out;
}

function bar(p) {
  const b = el('div', { class: 'pbar' });
  b.style.width = `${Math.max(1, 100 * p)}%`;  // CSSOM: allowed by the CSP, style attributes are not
  return b;
}

function renderTop(pred) {
  const rows = pred.top.map((t, i) => el('tr', { class: i === 0 ? 'first' : '' },
    el('td', { text: t.name }),
    el('td', { class: 'barcell' }, bar(t.probability)),
    el('td', { class: 'p', text: pct(t.probability) })));
  $('top5').replaceChildren(el('tbody', {}, ...rows));
  const model = currentModel();
  const sel = $('target');
  const previous = state.target ?? '';
  const top = new Map(pred.top.map((t) => [t.index, t.probability]));
  const options = [el('option', { value: '', text: `Predicted class (${pred.predicted.name})` })];
  model.classes.forEach((name, i) => {
    const p = top.has(i) ? ` (${pct(top.get(i))})` : '';
    options.push(el('option', { value: String(i), text: `${name}${p}` }));
  });
  sel.replaceChildren(...options);
  if ([...sel.options].some((o) => o.value === previous)) sel.value = previous;
}

function inputTile(image) {
  const stack = el('div', { class: 'stack' }, el('img', { class: 'base', src: image.display, alt: 'model input' }));
  if (image.outline) stack.append(el('img', { class: 'outline', src: image.outline, alt: '' }));
  const kind = image.format ? `, ${image.format} ${image.mode}` : '';
  const caption = el('figcaption', {}, el('b', { text: 'Model input' }),
    el('span', { class: 'params', text: `${image.name} (${image.width}x${image.height}${kind})` }));
  if (image.sample_label) {
    const what = image.true_label ? 'true class' : 'class in its benchmark';
    caption.append(el('span', { class: 'params', text: `${what}: ${image.sample_label}; evidence outlined` }));
    if (image.marker) caption.append(el('span', { class: 'params', text: 'corner marker (spurious) in yellow' }));
  }
  return el('figure', { class: 'tile input', 'data-testid': 'input-tile' }, stack, caption);
}

function clearResults() {
  state.result = null;
  $('toolbar').hidden = true;
  $('summary').replaceChildren();
  $('grid').replaceChildren(...(state.input ? [inputTile(state.input)] : []));
}

async function refreshPrediction() {
  hideError();
  const seq = ++state.seq;
  state.input = null;
  clearResults();
  $('target').replaceChildren(el('option', { value: '', text: 'Predicted class' }));
  $('top5').replaceChildren(el('tbody', {}, el('tr', {}, el('td', { class: 'note', text: 'choose an image' }))));
  if (source() === 'upload' && !state.file) return;
  setStatus('Classifying...');
  try {
    const pred = await api('/api/predict', { method: 'POST', body: formData(baseSettings()) });
    if (seq !== state.seq) return;
    state.input = pred.image;
    renderTop(pred);
    clearResults();
  } catch (err) {
    if (seq === state.seq) showError(err.message);
  } finally {
    if (seq === state.seq) setStatus('');
  }
}

// -------------------------------------------------------------------------------------------- results
function applyOpacity() {
  const a = Number($('opacity').value);
  $('opacity-value').textContent = a.toFixed(2);
  for (const img of document.querySelectorAll('.stack img.heat')) img.style.opacity = String(a);
  if (state.result) {
    const token = TOKEN ? `&token=${encodeURIComponent(TOKEN)}` : '';
    $('download').href = `${state.result.download_url}?opacity=${a}${token}`;
  }
}

function methodTile(m, image) {
  const stack = el('div', { class: 'stack' },
    el('img', { class: 'base', src: image.display, alt: '' }),
    el('img', { class: 'heat', src: m.heat, alt: `${m.name} heatmap` }));
  if (image.outline) stack.append(el('img', { class: 'outline', src: image.outline, alt: '' }));
  const params = Object.entries(m.params).map(([k, v]) => `${k}=${v === null ? 'default' : v}`).join(', ');
  const dl = el('dl');
  if (m.deletion !== null || m.insertion !== null) {
    dl.append(el('dt', { text: 'Deletion AUC', title: 'lower is better' }),
      el('dd', { class: 'deletion', title: 'lower is better', text: `${fmt(m.deletion)} (↓ better)` }));
    dl.append(el('dt', { text: 'Insertion AUC', title: 'higher is better' }),
      el('dd', { class: 'insertion', title: 'higher is better', text: `${fmt(m.insertion)} (↑ better)` }));
  }
  if (image.source === 'sample') {
    const pg = m.pointing_game;
    const none = image.outline ? 'n/a (flat map)' : 'n/a (no evidence region)';
    const text = pg === 'hit' ? 'hit \u2713' : pg === 'miss' ? 'miss \u2717' : none;
    dl.append(el('dt', { text: 'Pointing game' }), el('dd', { class: `pointing ${pg || ''}`, text }));
  }
  const names = (currentModel() || { classes: [] }).classes;
  const target = m.class_specific ? `explains: ${names[m.target] ?? 'class ' + m.target}`
    : 'class-agnostic (same map for every class)';
  return el('figure', { class: 'tile overlay', 'data-method': m.label, 'data-testid': 'overlay' }, stack,
    el('figcaption', {}, el('b', { text: m.name }), el('span', { class: 'params', text: params || 'no parameters' }),
      el('span', { class: 'params', text: target }), dl));
}

function renderResult(r) {
  state.result = r;
  state.input = r.image;
  const head = `Predicted: ${r.predicted.name} (${pct(r.predicted.probability)}). `
    + `Explaining: ${r.target.name} (${pct(r.target.probability)}).`;
  const summary = $('summary');
  summary.replaceChildren(el('span', { text: head }));
  if (r.image.true_label) {
    const ok = r.image.true_label === r.predicted.name;
    const verdict = `${r.image.true_label} ${ok ? '(correct)' : '(misclassified)'}`;
    summary.append(' True class: ', el('span', { class: ok ? 'ok' : 'bad', text: verdict }), '.');
  }
  const took = ` ${r.methods.length} map(s) in ${r.seconds.total.toFixed(2)} s.`;
  summary.append(el('span', { class: 'note', text: took }));
  $('grid').replaceChildren(inputTile(r.image), ...r.methods.map((m) => methodTile(m, r.image)));
  $('toolbar').hidden = false;
  applyOpacity();
}

async function run(event) {
  event.preventDefault();
  hideError();
  const methods = selectedMethods();
  if (!methods.length) { showError('Choose at least one explanation method.'); return; }
  const settings = { ...baseSettings(), methods, metrics: $('metrics').checked };
  if ($('target').value !== '') settings.target = Number($('target').value);
  const steps = Number($('steps').value);
  if ($('metrics').checked) {
    if (!Number.isInteger(steps) || steps < 1 || steps > 64) {
      showError('Steps must be a whole number from 1 to 64.');
      return;
    }
    settings.steps = steps;
  }
  const button = $('run');
  button.disabled = true; button.textContent = 'Explaining...';
  setStatus(`Computing ${methods.length} map(s)${settings.metrics ? ' and their scores' : ''}...`);
  const seq = ++state.seq;
  try {
    const r = await api('/api/explain', { method: 'POST', body: formData(settings) });
    if (seq === state.seq) renderResult(r);
  } catch (err) {
    if (seq === state.seq) showError(err.message);
  } finally {
    button.disabled = false; button.textContent = 'Explain';
    if (seq === state.seq) setStatus('');
  }
}

// ------------------------------------------------------------------------------------------------ init
function onSourceChange() {
  $('sample-box').hidden = source() !== 'sample';
  $('upload-box').hidden = source() !== 'upload';
  refreshPrediction();
}

async function init() {
  $('error-close').addEventListener('click', hideError);
  try {
    [state.models, state.samples] = await Promise.all([api('/api/models'), api('/api/samples')]);
  } catch (err) { showError(err.message); return; }
  renderModels();
  renderSamples();
  renderMethods();
  $('model-note').textContent = currentModel() ? currentModel().note : '';
  $('model-note').classList.toggle('warn', Boolean(currentModel() && currentModel().random_weights));
  $('target').addEventListener('change', () => { state.target = $('target').value; });
  $('model').addEventListener('change', () => {
    state.target = null;  // another model, other classes
    $('model-note').textContent = currentModel().note;
    $('model-note').classList.toggle('warn', Boolean(currentModel().random_weights));
    renderSamples(); renderMethods(); refreshPrediction();
  });
  $('sample').addEventListener('change', refreshPrediction);
  for (const r of document.querySelectorAll('input[name=source]')) r.addEventListener('change', onSourceChange);
  $('file').addEventListener('change', () => {
    const f = $('file').files[0] || null;
    state.file = null;
    if (f && f.size > 20e6) {
      showError(`${f.name} is ${(f.size / 1e6).toFixed(1)} MB; the limit is 20.0 MB.`);
      return;
    }
    state.file = f;
    refreshPrediction();
  });
  $('metrics').addEventListener('change', () => { $('steps').disabled = !$('metrics').checked; });
  $('opacity').addEventListener('input', applyOpacity);
  $('controls').addEventListener('submit', run);
  document.body.dataset.ready = '1';
  await refreshPrediction();
}

document.addEventListener('DOMContentLoaded', init);
"""
