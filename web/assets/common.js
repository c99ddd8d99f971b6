// Shared by the dashboard's pages: building DOM from data (text only: every
// string from the server or a file goes in through textContent or an
// attribute, never parsed as HTML), number formats, small SVG charts, API
// errors, server-sent events over fetch, and keys kept in sessionStorage.

const SVG_NS = 'http://www.w3.org/2000/svg';

// el('td', {class: 'num'}, 'text', child, ...): an element whose children are
// text nodes (strings and numbers) or nodes. Attributes are set with
// setAttribute, so a value is never markup.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Replaces a node's children.
export function fill(node, ...children) {
  node.replaceChildren();
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function fmt(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return '–';
  return Number(value).toLocaleString('en-US', {maximumFractionDigits: digits, minimumFractionDigits: 0});
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return '–';
  return ms >= 10000 ? `${fmt(ms / 1000, 1)} s` : `${fmt(ms, 0)} ms`;
}

export function fmtTime(ms) {
  if (!ms) return '–';
  return new Date(ms).toISOString().slice(11, 19);
}

// The text of an API error reply ({"error": {"message"}}), or the status.
export async function apiError(response) {
  let text = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === 'string') text = body.error.message;
  } catch {
    // not JSON: the status says enough
  }
  return text;
}

// A key kept for this tab only (sessionStorage), with its labelled field.
export function keyField(input, storageName) {
  input.value = sessionStorage.getItem(storageName) || '';
  return {
    get: () => input.value.trim(),
    save: () => sessionStorage.setItem(storageName, input.value.trim()),
  };
}

// Reads server-sent events from a fetch response body, calling
// onEvent(name, data) for each; resolves when the stream ends.
export async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length > 0) onEvent(name, data.join('\n'));
    }
    // A stream that never ends an event must not grow without bound.
    if (buffer.length > 8 * 1024 * 1024) throw new Error('event too large');
  }
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

// Enough decimals that four ticks over `range` read differently.
function tickDigits(range) {
  if (!(range > 0)) return 0;
  return Math.min(8, Math.max(0, Math.ceil(-Math.log10(range / 4)) + 1));
}

// Power given in GW, in the unit that shows it best (GW, MW or kW).
export function fmtPower(gw) {
  if (gw === null || gw === undefined) return '–';
  const a = Math.abs(gw);
  if (a >= 1) return `${fmt(gw, 2)} GW`;
  if (a >= 1e-3) return `${fmt(gw * 1e3, 2)} MW`;
  return `${fmt(gw * 1e6, 1)} kW`;
}

const PALETTE = ['#1f5fa8', '#b4441c', '#2d7d2d', '#7a3d99', '#8a6d00', '#1d6f6f'];

// A line chart of series [{name, points: [[x, y], ...]}] into `container`
// (replacing what it held), with a title for screen readers, y-axis ticks,
// x labels from xLabel(x), and a legend. `kind: 'bar'` draws bars for the
// first series instead of lines, one per unit of x; `xDomain: [x0, x1]` fixes
// the x range (else the data's).
export function chart(container, {title, series, xLabel = (x) => String(x), yLabel = '', kind = 'line', xDomain = null}) {
  const width = 640, height = 220, left = 56, right = 12, top = 12, bottom = 28;
  const root = svg('svg', {viewBox: `0 0 ${width} ${height}`, role: 'img', class: 'chart'});
  root.append(svg('title', {}, title));
  const all = series.flatMap((s) => s.points);
  const legend = el('ul', {class: 'legend'});
  if (all.length === 0) {
    fill(container, el('p', {class: 'muted'}, `${title}: no data yet`));
    return;
  }
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  let x0 = xDomain ? xDomain[0] : Math.min(...xs), x1 = xDomain ? xDomain[1] : Math.max(...xs);
  if (x1 === x0) x1 = x0 + 1;
  const ticksX = [x0, (x0 + x1) / 2, x1];
  if (kind === 'bar') {
    x0 -= 0.5;
    x1 += 0.5;
  }
  const y0 = Math.min(0, ...ys);
  let y1 = Math.max(...ys);
  if (y1 <= y0) y1 = y0 + 1;
  const px = (x) => left + ((x - x0) / (x1 - x0)) * (width - left - right);
  const py = (y) => top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom);
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    root.append(svg('line', {x1: left, x2: width - right, y1: py(y), y2: py(y), class: 'grid'}));
    // Tiny ranges (a test's micro-amounts) in exponent form, to fit the margin.
    const label = y !== 0 && y1 - y0 < 0.01 ? y.toExponential(1) : fmt(y, tickDigits(y1 - y0));
    root.append(svg('text', {x: left - 6, y: py(y) + 4, 'text-anchor': 'end', class: 'tick'}, label));
  }
  ticksX.forEach((x, i) => {
    const anchor = i === 0 ? 'start' : i === ticksX.length - 1 ? 'end' : 'middle';
    root.append(svg('text', {x: px(x), y: height - 8, 'text-anchor': anchor, class: 'tick'}, xLabel(x)));
  });
  if (yLabel) root.append(svg('text', {x: 4, y: 10, class: 'tick'}, yLabel));
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    if (kind === 'bar' && i === 0) {
      const w = Math.max(2, (width - left - right) / (x1 - x0) - 2);
      for (const [x, y] of s.points) {
        const top_ = Math.min(py(y), py(0));
        root.append(svg('rect', {x: px(x) - w / 2, y: top_, width: w, height: Math.abs(py(y) - py(0)), fill: color}));
      }
    } else if (s.points.length > 0) {
      const d = s.points.map(([x, y], j) => `${j === 0 ? 'M' : 'L'}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ');
      root.append(svg('path', {d, fill: 'none', stroke: color, 'stroke-width': 2}));
    }
    const swatch = el('span', {class: 'swatch'});
    swatch.style.background = color;
    legend.append(el('li', {}, swatch, s.name));
  });
  fill(container, root, legend);
}
