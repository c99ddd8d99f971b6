// The simulator report viewer: a run's summary.json (headline figures, every
// total) and timeseries.csv (charts), opened from disk and read in the
// browser (docs/simulator.md describes both files).
import {chart, el, fill, fmt, fmtPower} from '/assets/common.js';

const FILE_BYTES_MAX = 256 * 1024 * 1024;  // a year of 15-minute bins is a few MB
const ROWS_MAX = 200000;
const POINTS_MAX = 2000;  // drawn per series (rows are thinned evenly beyond)

const status = document.getElementById('report-status');

function setStatus(text, kind) {
  status.textContent = text;
  status.className = `status ${kind || ''}`;
}

const HEADLINE = [
  ['scenario', 'Scenario', (v) => v],
  ['vehicles', 'Vehicles', (v) => fmt(v, 0)],
  ['days', 'Days', (v) => fmt(v, 0)],
  ['capacity_factor', 'Capacity factor', (v) => `${fmt(v * 100, 1)} %`],
  ['used_factor', 'Used factor', (v) => `${fmt(v * 100, 1)} %`],
  ['compute_available_gw_mean', 'Compute available, mean', fmtPower],
  ['compute_used_gw_mean', 'Compute used, mean', fmtPower],
  ['tokens_per_vehicle_day', 'Tokens per vehicle-day', (v) => fmt(v, 0)],
  ['owner_earnings_month_p50', 'Owner earnings / month, median', (v) => fmt(v, 2)],
  ['energy_kwh', 'Energy', (v) => `${fmt(v, 0)} kWh`],
  ['preemptions', 'Preemptions', (v) => fmt(v, 0)],
  ['battery_cycles_per_vehicle_month', 'Battery cycles / vehicle-month', (v) => fmt(v, 2)],
];

function showSummary(s) {
  if (!s || typeof s !== 'object' || Array.isArray(s) || !('scenario' in s) || !('vehicles' in s)) {
    throw new Error('this is not a simulator summary.json (no "scenario" and "vehicles")');
  }
  fill(document.getElementById('headline'), HEADLINE.filter(([k]) => k in s && s[k] !== null).map(([k, label, f]) =>
    el('li', {}, el('span', {class: 'label'}, label), el('span', {class: 'value', 'data-metric': k}, f(s[k])))));
  const rows = Object.entries(s).filter(([, v]) => v === null || typeof v !== 'object');
  fill(document.getElementById('summary-table'), rows.map(([k, v]) => el('tr', {},
    el('th', {scope: 'row'}, k), el('td', {class: 'num'}, v === null ? 'not modelled' : typeof v === 'number' ? fmt(v, 4) : String(v)))));
}

// Comma-separated numbers with a header row; the time series has no quoting.
function parseCsv(text) {
  const lines = text.split(/\r?\n/).filter((l) => l.length > 0);
  if (lines.length < 2) throw new Error('timeseries.csv has no rows');
  if (lines.length - 1 > ROWS_MAX) throw new Error(`timeseries.csv has more than ${ROWS_MAX} rows`);
  const header = lines[0].split(',');
  if (!header.includes('bin_start_ms')) throw new Error('this is not a simulator timeseries.csv (no bin_start_ms column)');
  const rows = lines.slice(1).map((line, i) => {
    const cells = line.split(',');
    if (cells.length !== header.length) throw new Error(`timeseries.csv line ${i + 2} has ${cells.length} cells, not ${header.length}`);
    return cells.map(Number);
  });
  return {header, rows};
}

function showSeries({header, rows}) {
  const step = Math.max(1, Math.ceil(rows.length / POINTS_MAX));
  const thin = rows.filter((_, i) => i % step === 0);
  const t0 = thin[0][header.indexOf('bin_start_ms')];
  const x = (r) => (r[header.indexOf('bin_start_ms')] - t0) / 3600000;
  const series = (names) => names.filter((n) => header.includes(n)).map((n) => ({
    name: n, points: thin.map((r) => [x(r), r[header.indexOf(n)]]),
  }));
  const xLabel = (h) => `${fmt(h, 0)} h`;
  chart(document.getElementById('chart-vehicles'), {title: 'Vehicles by state over the run', xLabel,
    series: series(['vehicles_driving', 'vehicles_parked', 'vehicles_plugged', 'vehicles_eligible', 'vehicles_serving'])});
  chart(document.getElementById('chart-compute'), {title: 'Compute available and used (GW)', xLabel,
    series: series(['compute_available_gw', 'compute_used_gw'])});
  chart(document.getElementById('chart-tokens'), {title: 'Tokens per second delivered and unmet', xLabel,
    series: series(['interactive_tps', 'batch_tps', 'interactive_unmet_tps'])});
  chart(document.getElementById('chart-energy'), {title: 'Energy drawn and from batteries (kWh per bin)', xLabel,
    series: series(['energy_kwh', 'battery_kwh'])});
}

document.getElementById('report-files').addEventListener('change', async (event) => {
  const files = [...event.target.files];
  const shown = [];
  try {
    for (const file of files) {
      if (file.size > FILE_BYTES_MAX) throw new Error(`${file.name} is larger than ${FILE_BYTES_MAX} bytes`);
      const text = await file.text();
      if (file.name.endsWith('.csv')) {
        showSeries(parseCsv(text));
      } else {
        let parsed;
        try {
          parsed = JSON.parse(text);
        } catch (e) {
          throw new Error(`${file.name} is not JSON: ${e.message}`);
        }
        showSummary(parsed);
      }
      shown.push(file.name);
    }
    setStatus(shown.length > 0 ? `Showing ${shown.join(' and ')}.` : 'No file chosen.', 'ok');
  } catch (e) {
    setStatus(`Cannot show it: ${e.message}`, 'error');
  }
});
