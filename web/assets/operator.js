// The operator's view: one snapshot a second from GET /v1/dashboard/events
// (server-sent events, read over fetch so that an admin key can go in the
// Authorization header), drawn into the page. Reconnects after a drop.
import {apiError, chart, el, fill, fmt, fmtMs, fmtTime, keyField, readEvents} from '/assets/common.js';

const STATES = ['driving', 'parked', 'charging', 'eligible', 'serving', 'preempting', 'offline'];
const RETRY_MS = 3000;

const status = document.getElementById('stream-status');
const key = keyField(document.getElementById('admin-key'), 'idlefleet.admin_key');
let controller = null;
let retryTimer = null;

function setStatus(text, kind) {
  status.textContent = text;
  status.className = `status ${kind || ''}`;
}

function tile(label, value, id) {
  return el('li', {}, el('span', {class: 'label'}, label), el('span', {class: 'value', 'data-metric': id}, value));
}

function render(s) {
  fill(document.getElementById('tiles'),
    tile('Compute online', `${fmt(s.compute_kw.online, 2)} kW`, 'compute_online_kw'),
    tile('Compute in use', `${fmt(s.compute_kw.in_use, 2)} kW`, 'compute_in_use_kw'),
    tile('Tokens/s', fmt(s.tokens_per_second, 1), 'tokens_per_second'),
    tile('Tokens relayed', fmt(s.tokens_total, 0), 'tokens_total'),
    tile('Queue depth', fmt(s.queue_depth, 0), 'queue_depth'),
    tile('Jobs running', fmt(s.jobs_running, 0), 'jobs_running'),
    tile('Jobs done', fmt(s.jobs_done_total, 0), 'jobs_done_total'),
    tile('Latency p50', fmtMs(s.latency_ms.p50), 'latency_p50'),
    tile('Latency p99', fmtMs(s.latency_ms.p99), 'latency_p99'),
    tile('Preemptions, last hour', fmt(s.preemptions.last_hour, 0), 'preemptions_last_hour'));
  fill(document.getElementById('states'),
    STATES.map((st) => tile(st, fmt(s.vehicles.by_state[st] ?? 0, 0), `state_${st}`)));

  const cols = s.history.columns;
  // The hour's 10-second samples, then the figures of this snapshot.
  const rows = [...s.history.rows, [s.at_ms, s.tokens_per_second, s.compute_kw.online, s.compute_kw.in_use,
    s.queue_depth, s.vehicles.by_state.serving, s.vehicles.by_state.eligible, s.vehicles.online]];
  const col = (name) => rows.map((r) => [r[0], r[cols.indexOf(name)]]);
  const xLabel = (ms) => fmtTime(ms);
  chart(document.getElementById('chart-tokens'), {
    title: 'Tokens per second and queue depth over the last hour',
    series: [{name: 'tokens/s', points: col('tokens_per_second')}, {name: 'queue depth', points: col('queue_depth')}],
    xLabel,
  });
  chart(document.getElementById('chart-kw'), {
    title: 'Compute online and in use (kW) over the last hour',
    series: [{name: 'online kW', points: col('compute_online_kw')}, {name: 'in use kW', points: col('compute_in_use_kw')}],
    xLabel,
  });

  fill(document.getElementById('jobs'), s.jobs.length === 0
    ? el('tr', {}, el('td', {colspan: 5, class: 'muted'}, 'No jobs yet.'))
    : s.jobs.map((j) => el('tr', {},
      el('td', {}, j.id, j.check ? ' (check)' : ''),
      el('td', {}, j.model),
      el('td', {}, j.state, j.finish_reason ? ` (${j.finish_reason})` : ''),
      el('td', {class: 'num'}, fmt(j.tokens, 0)),
      el('td', {}, j.attempts.length === 0 ? el('span', {class: 'muted'}, 'waiting') : el('ol', {class: 'reasons'},
        j.attempts.map((a) => el('li', {}, `${a.vehicle_id}: ${a.end}, ${fmt(a.tokens, 0)} tokens`)))))));

  fill(document.getElementById('models'), s.models.length === 0
    ? el('tr', {}, el('td', {colspan: 3, class: 'muted'}, 'No models.'))
    : s.models.map((m) => el('tr', {},
      el('td', {}, m.id),
      el('td', {}, m.served ? 'yes' : 'no'),
      el('td', {}, m.cached_on_total === 0 ? el('span', {class: 'muted'}, 'nowhere yet')
        : `${m.cached_on.join(', ')}${m.cached_on_total > m.cached_on.length ? ` and ${m.cached_on_total - m.cached_on.length} more` : ''}`))));

  fill(document.getElementById('vehicles'), s.vehicles.list.length === 0
    ? el('tr', {}, el('td', {colspan: 4, class: 'muted'}, 'No vehicles have said hello.'))
    : s.vehicles.list.map((v) => el('tr', {},
      el('td', {}, v.id),
      el('td', {}, el('span', {class: `pill ${v.state === 'serving' ? 'busy' : v.eligible ? 'ok' : ''}`}, v.state)),
      el('td', {class: 'num'}, fmt(v.soc_pct, 0)),
      el('td', {}, v.job_id || v.reason || ''))));
  document.body.dataset.snapshotAt = String(s.at_ms);
}

async function connect() {
  if (controller) controller.abort();
  clearTimeout(retryTimer);
  controller = new AbortController();
  const headers = {Accept: 'text/event-stream'};
  if (key.get()) headers.Authorization = `Bearer ${key.get()}`;
  setStatus('Connecting…');
  let response;
  try {
    response = await fetch('/v1/dashboard/events', {headers, signal: controller.signal, cache: 'no-store'});
  } catch (e) {
    if (e.name === 'AbortError') return;
    setStatus(`Cannot reach the coordinator; retrying.`, 'error');
    retryTimer = setTimeout(connect, RETRY_MS);
    return;
  }
  if (!response.ok) {
    const why = await apiError(response);
    if (response.status === 401 || response.status === 403) {
      setStatus(`Refused (${response.status}): ${why} Enter an admin key above.`, 'error');
      return;  // waiting for a key: retrying would be refused again
    }
    setStatus(`The coordinator answered ${response.status}: ${why} Retrying.`, 'error');
    retryTimer = setTimeout(connect, RETRY_MS);
    return;
  }
  setStatus('Live: a snapshot every second.', 'ok');
  try {
    await readEvents(response, (name, data) => {
      if (name === 'snapshot') render(JSON.parse(data));
    });
    setStatus('The stream ended; reconnecting.', 'error');
  } catch (e) {
    if (e.name === 'AbortError') return;
    setStatus('The stream broke; reconnecting.', 'error');
  }
  retryTimer = setTimeout(connect, RETRY_MS);
}

document.getElementById('key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  key.save();
  connect();
});
// Leaving the page ends the stream (the coordinator frees its slot).
window.addEventListener('pagehide', () => { if (controller) controller.abort(); });
connect();
