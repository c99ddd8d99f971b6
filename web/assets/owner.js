// The owner's view: their vehicles (GET /v1/owner/vehicles), each with its
// state and the reasons it is or is not working; a policy editor that PUTs
// /v1/owner/vehicles/{id}/policy and shows the API's error text; and the
// month's statement (GET /v1/owner/statements) as totals, charts and
// downloads. Everything is called with the owner token in the Authorization
// header; the token is kept for this tab only.
import {apiError, chart, el, fill, fmt, keyField} from '/assets/common.js';

const REFRESH_MS = 2000;
const token = keyField(document.getElementById('owner-token'), 'idlefleet.owner_token');
const ownerStatus = document.getElementById('owner-status');
const policyStatus = document.getElementById('policy-status');
const statementStatus = document.getElementById('statement-status');
const vehicleSelect = document.getElementById('policy-vehicle');
const form = document.getElementById('policy-form');
let refreshTimer = null;
let currentPolicy = null;

function setStatus(node, text, kind) {
  node.textContent = text;
  node.className = `status ${kind || ''}`;
}

function call(path, options = {}) {
  const headers = {...(options.headers || {})};
  if (token.get()) headers.Authorization = `Bearer ${token.get()}`;
  return fetch(path, {...options, headers, cache: 'no-store'});
}

// Says why a call was refused; true when it was.
async function refused(response, node) {
  if (response.ok) return false;
  const why = await apiError(response);
  if (response.status === 401) {
    setStatus(node, `Not signed in (401): ${why}. Enter your owner token.`, 'error');
  } else {
    setStatus(node, `Refused (${response.status}): ${why}`, 'error');
  }
  return true;
}

function vehicleCard(v) {
  const working = v.state === 'serving';
  const pill = working ? el('span', {class: 'pill busy'}, 'working')
    : v.eligible ? el('span', {class: 'pill ok'}, 'ready to work') : el('span', {class: 'pill no'}, 'not working');
  const reasons = (v.reasons || []);
  return el('article', {class: 'vehicle', 'data-vehicle': v.id},
    el('h3', {}, v.id, ' ', pill),
    el('p', {}, 'State: ', el('strong', {'data-field': 'state'}, v.state || 'unknown'),
      v.online === false ? ' (offline)' : '', ` · SoC ${fmt(v.soc_pct ?? 0, 0)} %`),
    el('p', {'data-field': 'eligibility'}, v.eligible ? 'Eligible: it may take work now.' : 'Not eligible now.'),
    reasons.length > 0 ? el('div', {}, 'Why not:', el('ul', {class: 'reasons', 'data-field': 'reasons'}, reasons.map((r) => el('li', {}, r)))) : null,
    el('p', {class: 'muted'}, `Jobs completed: ${fmt(v.attempts_completed ?? 0, 0)}`,
      (v.models_cached || []).length > 0 ? ` · models cached: ${v.models_cached.join(', ')}` : ''));
}

// Each call supersedes the ones before it, so that one refresh loop runs.
let generation = 0;

async function loadVehicles() {
  clearTimeout(refreshTimer);
  const mine = ++generation;
  let response;
  try {
    response = await call('/v1/owner/vehicles');
  } catch {
    setStatus(ownerStatus, 'Cannot reach the coordinator.', 'error');
    return;
  }
  if (mine !== generation) return;
  if (await refused(response, ownerStatus)) {
    fill(document.getElementById('vehicles'));
    return;
  }
  const body = await response.json();
  const list = body.data || [];
  setStatus(ownerStatus, `${list.length} vehicle${list.length === 1 ? '' : 's'} enrolled to you; updated ${new Date().toLocaleTimeString()}.`, 'ok');
  fill(document.getElementById('vehicles'), list.map(vehicleCard));
  const chosen = vehicleSelect.value;
  const ids = list.map((v) => v.id);
  if (ids.join('\n') !== [...vehicleSelect.options].map((o) => o.value).join('\n')) {
    fill(vehicleSelect, ids.map((id) => el('option', {value: id}, id)));
    if (ids.includes(chosen)) vehicleSelect.value = chosen;
    loadPolicy();
  }
  refreshTimer = setTimeout(loadVehicles, REFRESH_MS);
}

const DEFAULTS = {
  opted_in: false, soc_floor_pct: 30, target_soc_pct: 80, departure_margin_ms: 1800000,
  accelerator_temp_limit_c: 85, price_cap_micros_per_kwh: null, tariff: {kind: 'flat', flat_micros_per_kwh: 0},
  wear_budget_hours_per_month: 300,
};

function showPolicy(p) {
  currentPolicy = p;
  form.elements.opted_in.checked = Boolean(p.opted_in);
  form.elements.soc_floor_pct.value = p.soc_floor_pct;
  form.elements.target_soc_pct.value = p.target_soc_pct;
  form.elements.departure_margin_min.value = p.departure_margin_ms / 60000;
  form.elements.accelerator_temp_limit_c.value = p.accelerator_temp_limit_c;
  form.elements.price_cap_micros_per_kwh.value = p.price_cap_micros_per_kwh ?? '';
  const flat = p.tariff && p.tariff.kind === 'flat';
  form.elements.flat_micros_per_kwh.disabled = !flat;
  form.elements.flat_micros_per_kwh.value = flat ? p.tariff.flat_micros_per_kwh : '';
  form.elements.wear_budget_hours_per_month.value = p.wear_budget_hours_per_month;
}

async function loadPolicy() {
  const id = vehicleSelect.value;
  if (!id) return;
  const response = await call(`/v1/owner/vehicles/${encodeURIComponent(id)}/policy`);
  if (await refused(response, policyStatus)) return;
  const body = await response.json();
  showPolicy(body.policy || DEFAULTS);
  setStatus(policyStatus, body.policy ? '' : 'No policy set yet: these are the defaults (the car does not work until you opt in).');
}

// A number field as the API wants it: a number when it parses, else the
// text itself, so that the API (not the page) says what is wrong with it.
function numberOf(name) {
  const raw = form.elements[name].value.trim();
  const n = Number(raw);
  return raw !== '' && Number.isFinite(n) ? n : raw;
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const id = vehicleSelect.value;
  if (!id) {
    setStatus(policyStatus, 'Choose a vehicle first.', 'error');
    return;
  }
  const p = {...DEFAULTS, ...(currentPolicy || {})};
  p.opted_in = form.elements.opted_in.checked;
  p.soc_floor_pct = numberOf('soc_floor_pct');
  p.target_soc_pct = numberOf('target_soc_pct');
  const margin = numberOf('departure_margin_min');
  p.departure_margin_ms = typeof margin === 'number' ? Math.round(margin * 60000) : margin;
  p.accelerator_temp_limit_c = numberOf('accelerator_temp_limit_c');
  const cap = form.elements.price_cap_micros_per_kwh.value.trim();
  p.price_cap_micros_per_kwh = cap === '' ? null : numberOf('price_cap_micros_per_kwh');
  if (p.tariff && p.tariff.kind === 'flat') p.tariff = {kind: 'flat', flat_micros_per_kwh: numberOf('flat_micros_per_kwh')};
  p.wear_budget_hours_per_month = numberOf('wear_budget_hours_per_month');
  // The last answer is cleared, so that what shows next is this one's.
  setStatus(policyStatus, `Saving for ${id}…`);
  const response = await call(`/v1/owner/vehicles/${encodeURIComponent(id)}/policy`, {
    method: 'PUT', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(p),
  });
  if (await refused(response, policyStatus)) return;
  const body = await response.json();
  showPolicy(body.policy);
  setStatus(policyStatus, `Saved for ${id}; the car applies it within seconds.`, 'ok');
  loadVehicles();
});
vehicleSelect.addEventListener('change', loadPolicy);

function thisMonth() {
  return new Date().toISOString().slice(0, 7);
}

async function statement(format) {
  const month = document.getElementById('month').value || thisMonth();
  const response = await call(`/v1/owner/statements?month=${encodeURIComponent(month)}&format=${format}`);
  if (await refused(response, statementStatus)) return null;
  return {month, response};
}

async function showStatement() {
  const got = await statement('json');
  if (!got) return;
  const s = await got.response.json();
  const totals = Object.entries(s.totals || {});
  fill(document.getElementById('totals'),
    el('tr', {}, el('th', {scope: 'row'}, 'Opening balance'), el('td', {class: 'num'}, s.opening_balance)),
    totals.map(([kind, t]) => el('tr', {}, el('th', {scope: 'row'}, kind), el('td', {class: 'num'}, t.amount))),
    el('tr', {}, el('th', {scope: 'row'}, 'Net'), el('td', {class: 'num'}, s.net)),
    el('tr', {}, el('th', {scope: 'row'}, 'Jobs'), el('td', {class: 'num'}, fmt(s.jobs, 0))));
  // Sums per UTC day of the month's entries, by kind.
  const days = new Map();
  for (const e of s.entries || []) {
    const day = Number(String(e.date).slice(8, 10));
    const d = days.get(day) || {earnings: 0, energy: 0};
    if (e.kind === 'energy') d.energy += e.amount_micros / 1e6;
    else if (e.kind === 'revenue_share' || e.kind === 'wear') d.earnings += e.amount_micros / 1e6;
    days.set(day, d);
  }
  const sorted = [...days.entries()].sort((a, b) => a[0] - b[0]);
  const dayLabel = (d) => `day ${Math.round(d)}`;
  const [year, month] = got.month.split('-').map(Number);
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  chart(document.getElementById('chart-earnings'), {
    title: `Earnings per day in ${got.month}`, kind: 'bar', xLabel: dayLabel, xDomain: [1, daysInMonth],
    series: [{name: 'revenue share and wear', points: sorted.map(([d, v]) => [d, v.earnings])}],
  });
  chart(document.getElementById('chart-energy'), {
    title: `Energy paid back per day in ${got.month}`, kind: 'bar', xLabel: dayLabel, xDomain: [1, daysInMonth],
    series: [{name: 'energy', points: sorted.map(([d, v]) => [d, v.energy])}],
  });
  setStatus(statementStatus, `Statement for ${got.month}: ${(s.entries || []).length} entries.`, 'ok');
}

async function download(format) {
  const got = await statement(format);
  if (!got) return;
  const blob = await got.response.blob();
  const url = URL.createObjectURL(blob);
  const a = el('a', {href: url, download: `statement-${got.month}.${format}`});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  setStatus(statementStatus, `Downloaded the ${got.month} statement as ${format.toUpperCase()}.`, 'ok');
}

document.getElementById('month').value = thisMonth();
document.getElementById('statement-form').addEventListener('submit', (event) => {
  event.preventDefault();
  showStatement();
});
document.getElementById('download-csv').addEventListener('click', () => download('csv'));
document.getElementById('download-json').addEventListener('click', () => download('json'));
document.getElementById('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  token.save();
  vehicleSelect.replaceChildren();
  loadVehicles().then(() => showStatement());
});
if (token.get()) loadVehicles().then(() => showStatement());
