// strangler's dashboard: plain JavaScript, no framework, no build step.
//
// Pages (hash navigation): `#/` overview, `#/routes/NAME` one route,
// `#/endpoints` the measure view. Every page polls the JSON API every 2 s
// with same-origin requests; charts are inline SVG drawn from the samples
// this page has collected (the last 10 minutes). Every string from the API
// is inserted as text (textContent / text nodes), never as HTML.
'use strict';

(() => {
  const POLL_MS = 2000;
  const HISTORY_MS = 10 * 60 * 1000;
  const TOKEN_KEY = 'strangler.admin-token';
  const DEFAULT_STEPS = [1, 10, 50, 100];

  // ---------------------------------------------------------------- DOM

  /** Creates an element. `attrs`: `class`, `text`, `on*` listeners, `data-*`
   *  and other attributes (set with setAttribute; never HTML). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    applyAttrs(el, attrs);
    appendAll(el, children);
    return el;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    applyAttrs(el, attrs);
    appendAll(el, children);
    return el;
  }

  function applyAttrs(el, attrs) {
    if (!attrs) return;
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'text') el.textContent = String(value);
      else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? '' : String(value));
    }
  }

  function appendAll(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
  }

  const $ = (selector, root = document) => root.querySelector(selector);

  function fill(selector, ...children) {
    const el = typeof selector === 'string' ? $(selector) : selector;
    if (!el) return;
    el.replaceChildren();
    appendAll(el, children);
  }

  // ---------------------------------------------------------------- formatting

  const dash = '–';
  const isNum = (x) => typeof x === 'number' && Number.isFinite(x);
  const fmtInt = (n) => (isNum(n) ? String(Math.round(n)) : dash);
  function fmtPct(x, digits = 2) {
    if (!isNum(x)) return dash;
    const p = x * 100;
    if (p !== 0 && p !== 100 && Math.abs(p) < 0.01) return (p < 0 ? '-' : '') + '<0.01%';
    return p.toFixed(p === 0 || p === 100 ? 0 : digits) + '%';
  }
  function fmtMs(x) {
    if (!isNum(x)) return dash;
    if (x < 10) return x.toFixed(2) + ' ms';
    if (x < 100) return x.toFixed(1) + ' ms';
    return Math.round(x) + ' ms';
  }
  /** A number without unit, to 3 significant digits or so. */
  function fmtNum(x) {
    if (!isNum(x)) return dash;
    if (x < 10) return x.toFixed(2);
    if (x < 100) return x.toFixed(1);
    return String(Math.round(x));
  }
  function fmtRps(x) {
    if (!isNum(x)) return dash;
    return (x < 10 ? x.toFixed(2) : x.toFixed(1)) + '/s';
  }
  function fmtBytes(n) {
    if (!isNum(n)) return dash;
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? String(n) : n.toFixed(1)) + ' ' + units[i];
  }
  function fmtDuration(seconds) {
    if (!isNum(seconds)) return dash;
    const t = Math.floor(seconds);
    const d = Math.floor(t / 86400), hr = Math.floor((t % 86400) / 3600);
    const m = Math.floor((t % 3600) / 60), sec = t % 60;
    if (d) return `${d}d ${hr}h`;
    if (hr) return `${hr}h ${m}m`;
    if (m) return `${m}m ${sec}s`;
    return `${sec}s`;
  }
  function fmtClock(ms) {
    const d = new Date(ms);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
  }
  function fmtWhen(iso) {
    const t = Date.parse(iso);
    if (!Number.isFinite(t)) return String(iso ?? dash);
    const d = new Date(t);
    const sameDay = d.toDateString() === new Date().toDateString();
    return (sameDay ? '' : d.toLocaleDateString() + ' ') + fmtClock(t);
  }
  function fmtWeight(w) {
    if (!isNum(w)) return dash;
    return (Number.isInteger(w) ? String(w) : String(+w.toFixed(2))) + '%';
  }
  function fmtValue(v) {
    if (v === undefined) return '(absent)';
    if (typeof v === 'string') return JSON.stringify(v);
    return JSON.stringify(v);
  }

  /** "legacy | candidate", each side in its colour (and with a data-field for tests). */
  const pair = (legacy, candidate, cls, fields = []) =>
    h('span', { class: 'pair' + (cls ? ' ' + cls : '') },
      h('span', { class: 'side-l', title: 'legacy', 'data-field': fields[0] || null, text: legacy }),
      h('span', { class: 'sep', 'aria-hidden': 'true', text: '|' }),
      h('span', { class: 'side-c', title: 'candidate', 'data-field': fields[1] || null, text: candidate }));

  const badge = (kind, value) => h('span', { class: `badge ${kind}-${value}`, text: String(value).replace('_', ' ') });

  // ---------------------------------------------------------------- API

  class AuthNeeded extends Error {}
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  let token = sessionStorage.getItem(TOKEN_KEY) || '';

  /** A same-origin call to the admin API. Throws ApiError with the API's
   *  `{"error": …}` message, or AuthNeeded after showing the token form. */
  async function api(path, { method = 'GET', body, raw = false } = {}) {
    const headers = { Accept: raw ? 'application/x-ndjson, text/plain' : 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
    if (response.status === 401) {
      askToken(token ? 'The token was refused.' : '');
      throw new AuthNeeded('a token is required');
    }
    const text = await response.text();
    if (!response.ok) {
      let message = text || response.statusText;
      try { message = JSON.parse(text).error || message; } catch (_) { /* not JSON */ }
      throw new ApiError(response.status, message);
    }
    if (raw) return text;
    return text ? JSON.parse(text) : null;
  }

  const enc = encodeURIComponent;

  function askToken(message) {
    const form = $('#token-form');
    form.hidden = false;
    if (message) notify(message);
    const input = $('#token-input');
    if (document.activeElement !== input) input.focus();
  }

  function setupToken() {
    $('#token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      token = $('#token-input').value.trim();
      sessionStorage.setItem(TOKEN_KEY, token);
      $('#token-input').value = '';
      $('#token-form').hidden = true;
      clearNotice();
      poll();
    });
  }

  let noticeTimer = null;
  function notify(message, kind = 'error') {
    const el = $('#notice');
    el.textContent = message;
    el.className = 'notice' + (kind === 'info' ? ' info' : '');
    el.hidden = false;
    clearTimeout(noticeTimer);
    if (kind === 'info') noticeTimer = setTimeout(clearNotice, 6000);
  }
  function clearNotice() { $('#notice').hidden = true; }

  function setLive(ok, message) {
    const el = $('#live');
    el.textContent = ok ? `live · updated ${fmtClock(Date.now())}` : `not updating: ${message}`;
    el.classList.toggle('stale', !ok);
  }

  // ---------------------------------------------------------------- history

  /** route name → [{t, stage, weight, legacy, candidate, match_rate}], oldest first. */
  const history = new Map();

  function record(route) {
    const now = Date.now();
    const list = history.get(route.name) || [];
    const last = list[list.length - 1];
    if (last && now - last.t < 900) return; // both pollers saw it just now
    list.push({
      t: now,
      stage: route.stage,
      weight: route.weight,
      legacy: { ...route.legacy },
      candidate: { ...route.candidate },
      match_rate: route.shadow ? route.shadow.match_rate : null,
    });
    while (list.length && now - list[0].t > HISTORY_MS) list.shift();
    history.set(route.name, list);
  }

  /** Per-interval rates between consecutive samples of one window; `null`
   *  across a transition (each stage opens a new, empty window). */
  function intervals(name) {
    const list = history.get(name) || [];
    const out = [];
    for (let i = 1; i < list.length; i += 1) {
      const a = list[i - 1], b = list[i];
      const sameWindow = a.stage === b.stage && a.weight === b.weight &&
        b.legacy.requests >= a.legacy.requests && b.candidate.requests >= a.candidate.requests;
      const dt = (b.t - a.t) / 1000;
      const side = (k) => {
        if (!sameWindow || dt <= 0) return { rps: null, error_rate: null };
        const dr = b[k].requests - a[k].requests;
        const de = b[k].errors - a[k].errors;
        return { rps: dr / dt, error_rate: dr > 0 ? de / dr : null };
      };
      out.push({ t: b.t, legacy: side('legacy'), candidate: side('candidate') });
    }
    return out;
  }

  function currentRates(name) {
    const list = intervals(name);
    const last = list[list.length - 1];
    return last || { legacy: { rps: null }, candidate: { rps: null } };
  }

  // ---------------------------------------------------------------- progress strip

  function progressStrip(route) {
    const steps = (Array.isArray(route.steps) && route.steps.length ? route.steps : DEFAULT_STEPS)
      .filter((x) => isNum(x) && x < 100);
    const items = [{ key: 'legacy', label: 'legacy' }, { key: 'shadow', label: 'shadow' }];
    const canary = steps.map((w) => ({ key: `w${w}`, label: fmtWeight(w), weight: w }));
    if (route.stage === 'canary' && !steps.includes(route.weight)) {
      canary.push({ key: `w${route.weight}`, label: fmtWeight(route.weight), weight: route.weight, pinned: true });
      canary.sort((a, b) => a.weight - b.weight);
    }
    items.push(...canary, { key: 'candidate', label: '100%' }, { key: 'complete', label: 'complete' });
    let current;
    if (route.state === 'complete') current = 'complete';
    else if (route.stage === 'canary') current = `w${route.weight}`;
    else current = route.stage;
    const index = items.findIndex((it) => it.key === current);
    const rolledBack = route.state === 'rolled_back';
    const labels = items.map((it) => it.label).join(' → ');
    return h('span', {
      class: 'strip',
      role: 'img',
      'aria-label': `progress: at ${items[index] ? items[index].label : route.stage} of ${labels}`,
    }, items.map((it, i) => h('span', {
      class: i < index ? 'done' : i === index ? 'now' + (rolledBack ? ' rb' : '') : '',
      title: it.pinned ? `${it.label} (pinned weight)` : it.label,
      text: it.label,
    })));
  }

  // ---------------------------------------------------------------- charts

  const COLORS = { legacy: '#7a5af5', candidate: '#0f8f6f' };

  /** A line chart as inline SVG. `series`: [{label, color, dash, points: [[t, v|null]]}]. */
  function lineChart({ title, series, format, yMax }) {
    const W = 620, H = 210, L = 62, R = 12, T = 12, B = 24;
    const now = Date.now();
    const all = series.flatMap((x) => x.points);
    const first = all.length ? Math.min(...all.map((p) => p[0])) : now;
    const span = Math.min(HISTORY_MS, Math.max(30 * 1000, now - first));
    const x0 = now - span;
    const values = all.map((p) => p[1]).filter(isNum);
    let top = Math.max(yMax || 0, ...values, 0);
    top = top > 0 ? top * 1.12 : 1;
    const x = (t) => L + ((t - x0) / span) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    const root = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
    root.append(s('title', { text: title }));
    for (let i = 0; i <= 4; i += 1) {
      const v = (top / 4) * i;
      root.append(s('line', { class: 'gridline', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      root.append(s('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', text: format(v) }));
    }
    root.append(s('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
    root.append(s('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
    for (const [i, anchor] of [[0, 'start'], [0.5, 'middle'], [1, 'end']]) {
      root.append(s('text', { x: L + i * (W - L - R), y: H - 6, 'text-anchor': anchor, text: fmtClock(x0 + i * span) }));
    }
    for (const line of series) {
      let d = '';
      let pen = false;
      const dots = [];
      line.points.forEach(([t, v], i) => {
        if (!isNum(v) || t < x0) { pen = false; return; }
        const px = x(t).toFixed(1), py = y(v).toFixed(1);
        const next = line.points[i + 1];
        const isolated = !pen && !(next && isNum(next[1]));
        if (isolated) dots.push([px, py]);
        d += `${pen ? 'L' : 'M'}${px} ${py} `;
        pen = true;
      });
      if (d) {
        root.append(s('path', {
          d, fill: 'none', stroke: line.color, 'stroke-width': 2,
          'stroke-dasharray': line.dash || null, 'stroke-linejoin': 'round',
        }));
      }
      for (const [px, py] of dots) root.append(s('circle', { cx: px, cy: py, r: 2.5, fill: line.color }));
    }
    const legend = h('div', { class: 'legend' }, series.map((line) => {
      const swatch = h('i', { 'aria-hidden': 'true' });
      swatch.style.background = line.color;
      if (line.dash) swatch.style.opacity = '0.6';
      const last = [...line.points].reverse().find((p) => isNum(p[1]));
      return h('span', {}, swatch, `${line.label}: ${last ? format(last[1]) : dash}`);
    }));
    return h('figure', { class: 'card chart' }, h('h3', { text: title }), root, legend);
  }

  /** route name → the store's 10-second aggregates (`/api/routes/NAME/series`). */
  const stored = new Map();

  /** Charts of the stored history: it spans restarts and the time before
   *  this page was opened. */
  function storedCharts(name) {
    const rows = stored.get(name) || [];
    if (!rows.length) return [];
    const points = (side, key) => rows.filter((r) => r.side === side).map((r) => [r.bucket_start_ms, r[key]]);
    const rps = (side) => rows.filter((r) => r.side === side).map((r) => [r.bucket_start_ms, r.requests / 10]);
    return [
      lineChart({
        title: 'Stored history: p99 per 10 s (last hour)',
        format: fmtMs,
        series: [
          { label: 'legacy p99', color: COLORS.legacy, points: points('legacy', 'p99_ms') },
          { label: 'candidate p99', color: COLORS.candidate, points: points('candidate', 'p99_ms') },
        ],
      }),
      lineChart({
        title: 'Stored history: requests per second per 10 s (last hour)',
        format: fmtRps,
        series: [
          { label: 'legacy', color: COLORS.legacy, points: rps('legacy') },
          { label: 'candidate', color: COLORS.candidate, points: rps('candidate') },
        ],
      }),
    ];
  }

  function routeCharts(name) {
    const samples = history.get(name) || [];
    const rates = intervals(name);
    const sidePoints = (list, side, key) => list.map((p) => [p.t, p[side][key]]);
    return [
      lineChart({
        title: 'Latency (p50 and p99 of the stage window)',
        format: fmtMs,
        series: [
          { label: 'legacy p99', color: COLORS.legacy, points: sidePoints(samples, 'legacy', 'p99_ms') },
          { label: 'candidate p99', color: COLORS.candidate, points: sidePoints(samples, 'candidate', 'p99_ms') },
          { label: 'legacy p50', color: COLORS.legacy, dash: '5 4', points: sidePoints(samples, 'legacy', 'p50_ms') },
          { label: 'candidate p50', color: COLORS.candidate, dash: '5 4', points: sidePoints(samples, 'candidate', 'p50_ms') },
        ],
      }),
      lineChart({
        title: 'Error rate (per 2 s interval)',
        format: (v) => fmtPct(v, v < 0.1 ? 2 : 1),
        yMax: 0.01,
        series: [
          { label: 'legacy', color: COLORS.legacy, points: sidePoints(rates, 'legacy', 'error_rate') },
          { label: 'candidate', color: COLORS.candidate, points: sidePoints(rates, 'candidate', 'error_rate') },
        ],
      }),
      lineChart({
        title: 'Requests per second (live traffic)',
        format: fmtRps,
        series: [
          { label: 'legacy', color: COLORS.legacy, points: sidePoints(rates, 'legacy', 'rps') },
          { label: 'candidate', color: COLORS.candidate, points: sidePoints(rates, 'candidate', 'rps') },
        ],
      }),
      lineChart({
        title: 'Shadow match rate (stage window)',
        format: (v) => fmtPct(v, 1),
        yMax: 1,
        series: [{ label: 'match rate', color: '#2456c9', points: samples.map((p) => [p.t, p.match_rate]) }],
      }),
      ...storedCharts(name),
    ];
  }

  // ---------------------------------------------------------------- tables

  function table(columns, rows, { id, caption, empty = 'nothing yet' } = {}) {
    const head = h('thead', {}, h('tr', {}, columns.map((c) =>
      h('th', { scope: 'col', class: c.left ? 'l' : null, title: c.title || null, text: c.label }))));
    const body = h('tbody');
    if (!rows.length) {
      body.append(h('tr', {}, h('td', { class: 'l empty', colspan: columns.length, text: empty })));
    }
    for (const row of rows) {
      body.append(h('tr', { class: row.cls || null }, columns.map((c) => {
        const value = c.cell(row.data);
        const node = value instanceof Node ? value : h('span', { text: value ?? dash });
        return h('td', { class: [c.left ? 'l' : '', c.wrap ? 'wrap' : ''].join(' ').trim() || null, 'data-field': c.field || null }, node);
      })));
    }
    return h('div', { class: 'scroll' }, h('table', { id: id || null },
      caption ? h('caption', { class: 'muted', text: caption }) : null, head, body));
  }

  // ---------------------------------------------------------------- pages

  let page = null; // { name, refresh(tick) }
  let generation = 0;
  let tick = 0;
  let timer = null;

  function routeFromHash() {
    const hash = location.hash.replace(/^#/, '') || '/';
    const parts = hash.split('/').filter(Boolean);
    if (parts[0] === 'routes' && parts[1]) return { page: 'route', name: decodeURIComponent(parts[1]) };
    if (parts[0] === 'endpoints') return { page: 'endpoints' };
    return { page: 'overview' };
  }

  function navigate() {
    generation += 1;
    tick = 0;
    const where = routeFromHash();
    for (const a of document.querySelectorAll('[data-nav]')) {
      const on = a.dataset.nav === where.page;
      if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    clearNotice();
    if (where.page === 'route') page = routePage(where.name);
    else if (where.page === 'endpoints') page = endpointsPage();
    else page = overviewPage();
    document.title = `${page.title} · strangler`;
    $('#view').focus({ preventScroll: true });
    poll();
  }

  let running = false;
  let again = false;

  /** Refreshes the current page now, then every POLL_MS; one refresh at a time. */
  async function poll() {
    if (running) { again = true; return; }
    running = true;
    clearTimeout(timer);
    const mine = generation;
    try {
      await page.refresh(tick, () => mine === generation);
      if (mine === generation) setLive(true);
    } catch (error) {
      if (mine === generation) {
        if (error instanceof AuthNeeded) setLive(false, 'token needed');
        else setLive(false, error.message);
      }
    }
    if (mine === generation) tick += 1;
    running = false;
    if (again) {
      again = false;
      poll();
    } else {
      timer = setTimeout(poll, POLL_MS);
    }
  }

  /** Runs a state-changing call after a confirmation; shows the outcome. */
  async function act(question, path, body, done) {
    if (!window.confirm(question)) return;
    try {
      const result = await api(path, { method: 'POST', body });
      notify(done(result), 'info');
    } catch (error) {
      if (!(error instanceof AuthNeeded)) notify(`Refused: ${error.message}`);
    }
    tick = 0; // refetch everything, the stored samples included
    poll();
  }

  // ---- overview

  function overviewPage() {
    fill('#view',
      h('h1', { text: 'Routes' }),
      h('p', { class: 'muted' },
        'Each route\'s stage window: live requests, error rate and latency of ',
        h('span', { class: 'side-l', text: 'legacy' }), ' | ', h('span', { class: 'side-c', text: 'candidate' }),
        ', the shadow match rate, and the gate holding the next step.'),
      h('div', { id: 'overview' }, h('p', { class: 'muted', text: 'Loading…' })));
    return {
      title: 'Routes',
      async refresh(_tick, fresh) {
        const routes = await api('/api/routes');
        if (!fresh()) return;
        routes.forEach(record);
        fill('#overview', overviewTable(routes));
      },
    };
  }

  function overviewTable(routes) {
    const sideHead = (label) => h('th', { scope: 'col' }, label, h('br'), pair('legacy', 'candidate', 'sub'));
    const head = h('thead', {}, h('tr', {},
      h('th', { scope: 'col', class: 'l', text: 'route' }),
      h('th', { scope: 'col', class: 'l', text: 'stage' }),
      h('th', { scope: 'col', text: 'weight' }),
      h('th', { scope: 'col', class: 'l', text: 'state' }),
      h('th', { scope: 'col', class: 'l', text: 'progress' }),
      ['requests', 'req/s', 'error rate', 'p50 ms', 'p99 ms'].map(sideHead),
      h('th', { scope: 'col', text: 'match rate' }),
      h('th', { scope: 'col', class: 'l', title: 'the gate holding the next step', text: 'blocked by' })));
    const body = h('tbody');
    if (!routes.length) body.append(h('tr', {}, h('td', { class: 'l empty', colspan: 12, text: 'No routes configured.' })));
    for (const r of routes) {
      const rates = currentRates(r.name);
      const sides = (key, format, l, c) => h('td', {}, pair(format(l), format(c), null, [`legacy.${key}`, `candidate.${key}`]));
      const shadow = r.shadow || {};
      body.append(h('tr', { 'data-route': r.name },
        h('td', { class: 'l', 'data-field': 'name' }, h('a', { href: `#/routes/${enc(r.name)}`, text: r.name })),
        h('td', { class: 'l', 'data-field': 'stage' }, badge('stage', r.stage)),
        h('td', { 'data-field': 'weight', text: fmtWeight(r.weight) }),
        h('td', { class: 'l', 'data-field': 'state' }, badge('state', r.state)),
        h('td', { class: 'l' }, progressStrip(r)),
        sides('requests', fmtInt, r.legacy.requests, r.candidate.requests),
        sides('rps', fmtNum, rates.legacy.rps, rates.candidate.rps),
        sides('error_rate', fmtPct, r.legacy.error_rate, r.candidate.error_rate),
        sides('p50_ms', fmtNum, r.legacy.p50_ms, r.candidate.p50_ms),
        sides('p99_ms', fmtNum, r.legacy.p99_ms, r.candidate.p99_ms),
        h('td', { 'data-field': 'shadow.match_rate', title: `${fmtInt(shadow.compared)} compared, ${fmtInt(shadow.mismatched)} mismatched, ${fmtInt(shadow.dropped)} dropped` },
          fmtPct(shadow.match_rate)),
        h('td', { class: 'l wrap' + (r.blocked_by ? ' warn' : ' muted'), 'data-field': 'blocked_by', text: r.blocked_by || dash })));
    }
    return h('div', { class: 'scroll' }, h('table', { id: 'routes' }, head, body));
  }

  // ---- route page

  function routePage(name) {
    const base = `/api/routes/${enc(name)}`;
    const state = { selected: null, diffs: [], diffIds: '' };
    const weightInput = h('input', { id: 'weight-input', type: 'number', min: 0, max: 100, step: 'any', 'aria-label': 'weight in percent' });
    const noteInput = h('input', { id: 'accept-note', type: 'text', placeholder: 'why this difference is fine', 'aria-label': 'note for accepted differences', size: 40 });
    const control = (verb, label, cls, question) => h('button', {
      id: `btn-${verb}`, type: 'button', class: cls || null,
      onclick: () => act(question, `${base}/${verb}`, undefined, (r) => `${label}: ${name} is now ${r.stage} at ${fmtWeight(r.weight)} (${r.state.replace('_', ' ')}).`),
    }, label);
    fill('#view',
      h('p', {}, h('a', { href: '#/', text: '← all routes' })),
      h('h1', {}, 'Route ', h('span', { class: 'mono', text: name }), ' ', h('span', { id: 'r-badges' })),
      h('div', { id: 'r-strip' }),
      h('div', { class: 'controls', role: 'group', 'aria-label': 'rollout controls' },
        control('promote', 'Promote', 'primary', `Promote ${name} to its next step?`),
        control('rollback', 'Roll back', 'danger', `Roll ${name} back to shadow (weight 0)?`),
        control('pause', 'Pause', null, `Pause the automatic rollout of ${name}?`),
        control('resume', 'Resume', null, `Resume the automatic rollout of ${name}?`),
        h('span', { class: 'muted', text: ' · ' }),
        weightInput,
        h('button', {
          id: 'btn-weight', type: 'button',
          onclick: () => {
            const weight = Number(weightInput.value);
            if (weightInput.value === '' || !(weight >= 0 && weight <= 100)) { notify('The weight is a percentage from 0 to 100.'); return; }
            act(`Send ${fmtWeight(weight)} of ${name}'s users to the candidate? This pins the weight and pauses automation.`,
              `${base}/weight`, { weight }, (r) => `Weight of ${name} is now ${fmtWeight(r.weight)} (${r.stage}, ${r.state}).`);
          },
        }, 'Set weight')),
      h('dl', { class: 'kv', id: 'r-facts' }),
      h('div', { class: 'grid' },
        h('section', { class: 'card', 'aria-labelledby': 'h-sides' }, h('h2', { id: 'h-sides', text: 'Legacy vs candidate (stage window)' }), h('div', { id: 'r-sides' })),
        h('section', { class: 'card', 'aria-labelledby': 'h-shadow' }, h('h2', { id: 'h-shadow', text: 'Shadow comparisons' }), h('div', { id: 'r-shadow' }))),
      h('h2', { text: 'Over time' }),
      h('div', { class: 'grid charts', id: 'r-charts' }),
      h('h2', { text: 'Gates' }),
      h('div', { id: 'r-gates' }),
      h('h2', { text: 'Diffs by endpoint' }),
      h('div', { id: 'r-endpoints' }),
      h('h2', { text: 'Stored samples' }),
      h('div', { class: 'grid' },
        h('section', { class: 'card', 'aria-label': 'latest mismatches' }, h('h3', { text: 'Latest mismatches' }), h('ol', { class: 'samples', id: 'r-samples', reversed: true })),
        h('section', { class: 'card', 'aria-label': 'accepting differences' }, h('h3', { text: 'Accepting a difference' }),
          h('p', { class: 'muted', text: 'Pick a sample, then "accept" one of its differences: it stops counting as a mismatch for that endpoint (array indices become [*]). The note is stored with it.' }),
          h('label', { for: 'accept-note', text: 'Note ' }), noteInput)),
      h('div', { id: 'r-sample' }),
      h('h2', { text: 'Learned noise and accepted differences' }),
      h('div', { class: 'grid' },
        h('section', { class: 'card' }, h('h3', { text: 'Learned noise' }), h('div', { id: 'r-noise' })),
        h('section', { class: 'card' }, h('h3', { text: 'Accepted differences' }), h('div', { id: 'r-accepted' }))),
      h('h2', { text: 'Events' }),
      h('ol', { class: 'timeline', id: 'r-events' }));

    const showSample = () => {
      const sample = state.diffs.find((d) => d.id === state.selected);
      fill('#r-sample', sample ? sampleView(sample, name, noteInput) : null);
      for (const li of document.querySelectorAll('#r-samples li')) {
        li.classList.toggle('selected', Number(li.dataset.id) === state.selected);
      }
    };

    return {
      title: name,
      async refresh(n, fresh) {
        const detail = await api(base);
        if (!fresh()) return;
        record(detail);
        renderRoute(detail);
        if (n % 5 === 0) {
          const rows = await api(`${base}/series`);
          if (!fresh()) return;
          stored.set(name, Array.isArray(rows) ? rows : []);
          fill('#r-charts', routeCharts(name));
        }
        const events = await api(`/api/events?route=${enc(name)}&limit=50`);
        if (!fresh()) return;
        fill('#r-events', events.length ? events.map(eventItem) : h('li', { class: 'empty', text: 'No transitions yet.' }));
        if (n % 3 !== 0) return;
        const [diffs, exported] = await Promise.all([
          api(`${base}/diffs?limit=25`),
          api(`${base}/export?limit=0`, { raw: true }),
        ]);
        if (!fresh()) return;
        const ids = diffs.map((d) => d.id).join(',');
        if (ids !== state.diffIds) {
          state.diffIds = ids;
          state.diffs = diffs;
          if (state.selected === null && diffs.length) state.selected = diffs[0].id;
          fill('#r-samples', diffs.length ? diffs.map((d) => h('li', { 'data-id': d.id },
            h('button', { type: 'button', class: 'link', onclick: () => { state.selected = d.id; showSample(); } },
              `${d.method} ${d.path}`),
            h('span', { class: 'muted', text: ` · ${d.endpoint} · ${(d.differences || []).length} difference(s) · ${fmtWhen(d.at)}` })))
            : h('li', { class: 'empty', text: 'No mismatch stored.' }));
          showSample();
        }
        const header = parseExportHeader(exported);
        renderNoise(header);
      },
    };
  }

  function renderRoute(d) {
    fill('#r-badges', badge('stage', d.stage), ' ', h('span', { id: 'r-weight', class: 'badge', text: fmtWeight(d.weight) }), ' ', badge('state', d.state));
    const badges = $('#r-badges');
    badges.dataset.stage = d.stage;
    badges.dataset.weight = String(d.weight);
    badges.dataset.state = d.state;
    fill('#r-strip', progressStrip(d));
    const weightInput = $('#weight-input');
    if (weightInput && document.activeElement !== weightInput && weightInput.value === '') weightInput.placeholder = String(d.weight);
    fill('#r-facts',
      h('dt', { text: 'in this stage for' }), h('dd', { text: fmtDuration(d.stage_seconds) }),
      h('dt', { text: 'last change' }), h('dd', { text: d.reason || dash }),
      h('dt', { text: 'next step blocked by' }), h('dd', { class: d.blocked_by ? 'warn' : 'muted', id: 'r-blocked', text: d.blocked_by || dash }));
    const rates = currentRates(d.name);
    const rows = [
      ['requests', fmtInt(d.legacy.requests), fmtInt(d.candidate.requests)],
      ['requests per second', fmtRps(rates.legacy.rps), fmtRps(rates.candidate.rps)],
      ['errors', fmtInt(d.legacy.errors), fmtInt(d.candidate.errors)],
      ['error rate', fmtPct(d.legacy.error_rate), fmtPct(d.candidate.error_rate)],
      ['p50', fmtMs(d.legacy.p50_ms), fmtMs(d.candidate.p50_ms)],
      ['p99', fmtMs(d.legacy.p99_ms), fmtMs(d.candidate.p99_ms)],
    ];
    fill('#r-sides', table(
      [{ label: '', left: true, cell: (r) => r[0] },
        { label: 'legacy', cell: (r) => h('span', { class: 'side-l', text: r[1] }) },
        { label: 'candidate', cell: (r) => h('span', { class: 'side-c', text: r[2] }) }],
      rows.map((data) => ({ data }))));
    const sh = d.shadow || {};
    fill('#r-shadow', table(
      [{ label: '', left: true, cell: (r) => r[0] }, { label: 'value', cell: (r) => r[1] }],
      [['compared', fmtInt(sh.compared)], ['matched', fmtInt(sh.matched)], ['mismatched', fmtInt(sh.mismatched)],
        ['noise (learned or accepted)', fmtInt(sh.noise)], ['dropped (over max_in_flight)', fmtInt(sh.dropped)],
        ['match rate', fmtPct(sh.match_rate)]].map((data) => ({ data }))));
    fill('#r-charts', routeCharts(d.name));
    fill('#r-gates', table([
      { label: 'gate', left: true, cell: (g) => h('span', { class: 'mono', text: g.name }) },
      { label: 'threshold', cell: (g) => gateNumber(g.name, g.threshold) },
      { label: 'value', cell: (g) => gateNumber(g.name, g.value) },
      { label: '95% interval', cell: (g) => (g.interval ? `${gateNumber(g.name, g.interval[0])} – ${gateNumber(g.name, g.interval[1])}` : dash) },
      { label: 'for promotion', cell: (g) => h('span', { class: `ok-${g.ok}`, text: g.ok === true ? '✓ holds' : g.ok === false ? '✗ fails' : 'not judged' }) },
      { label: 'rollback window', cell: (g) => h('span', { class: g.failing ? 'bad' : 'muted', text: g.failing ? 'failing' : 'ok' }) },
      { label: 'detail', left: true, wrap: true, cell: (g) => g.detail || '' },
    ], (d.gates || []).map((g) => ({ data: g, cls: g.name === d.blocked_by ? 'blocking' : null })),
    { id: 'gates', empty: 'No gate applies in this stage.' }));
    const endpoints = [...(d.endpoints || [])].sort((a, b) => (a.match_rate ?? 1) - (b.match_rate ?? 1) || b.compared - a.compared);
    fill('#r-endpoints', table([
      { label: 'endpoint', left: true, cell: (e) => h('span', { class: 'mono', text: e.endpoint }) },
      { label: 'compared', cell: (e) => fmtInt(e.compared) },
      { label: 'mismatched', cell: (e) => fmtInt(e.mismatched) },
      { label: 'noise', cell: (e) => fmtInt(e.noise) },
      { label: 'failed', cell: (e) => fmtInt(e.failed) },
      { label: 'mismatch rate', cell: (e) => h('span', { class: e.mismatched ? 'bad' : null, text: isNum(e.match_rate) ? fmtPct(1 - e.match_rate) : dash }) },
      { label: 'top differing fields', left: true, wrap: true, cell: (e) => fieldList(e.fields || []) },
    ], endpoints.map((data) => ({ data })), { empty: 'No comparisons in this stage yet.' }));
  }

  function gateNumber(name, v) {
    if (!isNum(v)) return dash;
    if (/p99/.test(name) && !/ratio/.test(name)) return fmtMs(v);
    if (/rate/.test(name)) return fmtPct(v, 2);
    return String(+v.toFixed(4));
  }

  function fieldList(fields) {
    if (!fields.length) return h('span', { class: 'muted', text: dash });
    return h('ul', { class: 'timeline' }, fields.slice(0, 5).map((f) => h('li', {},
      h('span', { class: 'mono', text: f.path }), ' ',
      h('span', { class: 'muted', text: `${f.kind} · ${fmtPct(f.rate, 1)} (${fmtInt(f.differs)})` }),
      f.noise ? h('span', { class: 'badge state-paused', text: 'noise' }) : null)));
  }

  function eventItem(e) {
    return h('li', {},
      h('span', { class: 'when', text: fmtWhen(e.at) }),
      badge('stage', e.from), ' → ', badge('stage', e.to), ' ',
      h('span', { text: `${fmtWeight(e.weight)} · ` }), badge('state', e.state), ' ',
      h('span', { class: 'muted', text: `by ${e.actor}${e.instance ? ' on ' + e.instance : ''}: ` }),
      h('span', { text: e.reason || '' }));
  }

  function parseExportHeader(text) {
    const line = (text || '').split('\n', 1)[0];
    try { return JSON.parse(line); } catch (_) { return {}; }
  }

  function renderNoise(header) {
    fill('#r-noise', table([
      { label: 'endpoint', left: true, cell: (n) => h('span', { class: 'mono', text: n.endpoint }) },
      { label: 'path', left: true, cell: (n) => h('span', { class: 'mono', text: `${n.path}` }), wrap: true },
      { label: 'kind', cell: (n) => n.kind },
      { label: 'legacy vs legacy', title: 'how often legacy differs from itself there', cell: (n) => fmtPct(n.legacy_rate, 1) },
      { label: 'legacy vs candidate', cell: (n) => fmtPct(n.candidate_rate, 1) },
      { label: 'samples', cell: (n) => fmtInt(n.samples) },
    ], (header.noise || []).map((data) => ({ data })), { empty: 'No path learned as noise.' }));
    fill('#r-accepted', table([
      { label: 'endpoint', left: true, cell: (a) => h('span', { class: 'mono', text: a.endpoint }) },
      { label: 'path', left: true, cell: (a) => h('span', { class: 'mono', text: a.path }) },
      { label: 'note', left: true, wrap: true, cell: (a) => a.note || '' },
      { label: 'at', cell: (a) => fmtWhen(a.at) },
    ], (header.accepted || []).map((data) => ({ data })), { empty: 'Nothing accepted.' }));
  }

  // ---- one stored sample, side by side

  function normalizePath(path) {
    return String(path).replace(/\[(\d+)\]/g, (m, _d, offset, whole) => {
      // Leave digits inside quoted names alone: count quotes before `offset`.
      const before = whole.slice(0, offset);
      const quotes = (before.match(/(?<!\\)'/g) || []).length;
      return quotes % 2 ? m : '[*]';
    });
  }

  function sampleView(sample, route, noteInput) {
    const differences = Array.isArray(sample.differences) ? sample.differences : [];
    const marks = { body: new Set(), header: new Set(), trailer: new Set(), status: false };
    for (const d of differences) {
      if (d.kind === 'status') marks.status = true;
      else if (d.kind === 'body') marks.body.add(d.path);
      else if (d.kind === 'header') marks.header.add(String(d.path).toLowerCase());
      else if (d.kind === 'trailer') marks.trailer.add(String(d.path).toLowerCase());
    }
    const accept = (d) => {
      const path = d.kind === 'body' ? normalizePath(d.path) : d.path;
      act(`Accept differences at ${path} (${d.kind}) on ${sample.endpoint} for route ${route}? They will count as matches from now on.`,
        `/api/routes/${enc(route)}/accept`, { endpoint: sample.endpoint, path, note: noteInput.value },
        (a) => `Accepted ${a.path} on ${a.endpoint}.`);
    };
    const req = sample.request || {};
    const target = `${req.method || sample.method} ${req.path || sample.path}${req.query ? '?' + req.query : ''}`;
    return h('section', { class: 'card', 'aria-label': 'sample', id: 'sample' },
      h('h3', {}, 'Sample ', h('span', { class: 'mono', text: `#${sample.id}` }), ' ', h('span', { class: 'muted', text: `${sample.endpoint} · ${fmtWhen(sample.at)}` })),
      table([
        { label: 'kind', left: true, cell: (d) => d.kind },
        { label: 'path', left: true, field: 'path', cell: (d) => h('span', { class: 'mono', text: d.path }) },
        { label: 'change', left: true, cell: (d) => d.change },
        { label: 'legacy', left: true, wrap: true, cell: (d) => h('span', { class: 'mono side-l', text: fmtValue(d.legacy) }) },
        { label: 'candidate', left: true, wrap: true, cell: (d) => h('span', { class: 'mono side-c', text: fmtValue(d.candidate) }) },
        { label: '', cell: (d) => h('button', { type: 'button', class: 'small', onclick: () => accept(d) }, 'Accept this difference') },
      ], differences.map((data) => ({ data })), { id: 'differences', empty: 'No difference recorded.' }),
      h('div', { class: 'sbs' },
        h('div', {}, h('h3', { text: 'Request' }), exchangePre(target, req, null, null)),
        h('div', {}, h('h3', { class: 'side-l', text: 'Legacy response' }), exchangePre(null, sample.legacy_response || {}, marks, 'legacy')),
        h('div', {}, h('h3', { class: 'side-c', text: 'Candidate response' }), exchangePre(null, sample.candidate_response || {}, marks, 'candidate'))));
  }

  /** A request or response as text: start line, headers, blank line, body
   *  (pretty JSON when it parses), with differing parts marked. */
  function exchangePre(requestLine, msg, marks, side) {
    const out = [];
    const mark = (on, text, title) => (on ? h('mark', { class: 'diff', title: title || 'differs' }, text) : text);
    if (requestLine) out.push(requestLine, '\n');
    if (msg.status !== undefined) out.push(mark(marks && marks.status, `HTTP ${msg.status}`, 'status differs'), '\n');
    const headerLines = (headers, set) => {
      for (const [name, value] of Object.entries(headers || {})) {
        const values = Array.isArray(value) ? value : [value];
        for (const v of values) out.push(mark(set && set.has(name.toLowerCase()), `${name}: ${v}`, `${name} differs`), '\n');
      }
    };
    headerLines(msg.headers, marks && marks.header);
    out.push('\n');
    if (typeof msg.body === 'string') {
      let parsed;
      let isJson = false;
      try { parsed = JSON.parse(msg.body); isJson = msg.body.trim() !== ''; } catch (_) { /* text */ }
      if (isJson) jsonNodes(parsed, '$', marks ? marks.body : new Set(), '', out);
      else out.push(mark(marks && marks.body.has('$'), msg.body, 'body differs'));
    } else if (msg.body_base64) {
      out.push(mark(marks && marks.body.has('$'), `(binary, base64) ${msg.body_base64}`));
    } else if (msg.body_sha256) {
      out.push(mark(marks && marks.body.has('$'), `(body of ${msg.body_len} bytes, sha256 ${msg.body_sha256})`));
    }
    if (msg.trailers) {
      out.push('\n\n');
      headerLines(msg.trailers, marks && marks.trailer);
    }
    const pre = h('pre', { 'data-side': side || 'request' });
    pre.append(...out.map((x) => (x instanceof Node ? x : document.createTextNode(String(x)))));
    return pre;
  }

  function childKey(path, key) {
    if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) return `${path}.${key}`;
    const escaped = key.replace(/[\\'\n\r\t\b\f]|[\u0000-\u001f]/g, (c) => ({
      '\\': '\\\\', '\'': '\\\'', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f',
    }[c] || `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
    return `${path}['${escaped}']`;
  }

  /** Pretty-prints `value` into `out` (strings and <mark> nodes), marking
   *  every node whose JSONPath (as strangler renders it) is in `marks`. */
  function jsonNodes(value, path, marks, indent, out, prefix = '') {
    const hit = marks.has(path);
    const sink = hit ? [] : out;
    sink.push(prefix);
    if (Array.isArray(value)) {
      if (!value.length) sink.push('[]');
      else {
        sink.push('[\n');
        value.forEach((item, i) => {
          jsonNodes(item, `${path}[${i}]`, marks, indent + '  ', sink, indent + '  ');
          sink.push(i < value.length - 1 ? ',\n' : '\n');
        });
        sink.push(indent + ']');
      }
    } else if (value && typeof value === 'object') {
      const keys = Object.keys(value);
      if (!keys.length) sink.push('{}');
      else {
        sink.push('{\n');
        keys.forEach((key, i) => {
          jsonNodes(value[key], childKey(path, key), marks, indent + '  ', sink, `${indent}  ${JSON.stringify(key)}: `);
          sink.push(i < keys.length - 1 ? ',\n' : '\n');
        });
        sink.push(indent + '}');
      }
    } else {
      sink.push(JSON.stringify(value));
    }
    if (hit) out.push(h('mark', { class: 'diff', title: path }, ...sink));
  }

  // ---- endpoints (measure view)

  function endpointsPage() {
    fill('#view',
      h('h1', { text: 'Endpoints' }),
      h('p', { class: 'muted', id: 'ep-note' }),
      h('div', { id: 'endpoints' }, h('p', { class: 'muted', text: 'Loading…' })));
    return {
      title: 'Endpoints',
      async refresh() {
        let rows = null;
        try {
          rows = await api('/api/endpoints');
        } catch (error) {
          if (!(error instanceof ApiError) || error.status !== 404) throw error;
        }
        if (rows) renderMeasured(rows);
        else await renderFromRoutes();
      },
    };
  }

  /** Sums a numeric field over a flat row or its `legacy`/`candidate` sides. */
  function total(e, key) {
    if (isNum(e[key])) return e[key];
    const values = ['legacy', 'candidate'].map((side) => e[side] && e[side][key]).filter(isNum);
    return values.length ? values.reduce((a, b) => a + b, 0) : null;
  }
  function sides(e, key, format) {
    if (e.legacy || e.candidate) {
      return pair(format(e.legacy && e.legacy[key]), format(e.candidate && e.candidate[key]));
    }
    return format(e[key]);
  }

  function renderMeasured(rows) {
    fill('#ep-note', 'Traffic and time per endpoint template, ranked by share of total time spent: the top rows are where migrating pays most.');
    const ranked = [...rows].sort((a, b) => (total(b, 'share') ?? 0) - (total(a, 'share') ?? 0) || (total(b, 'requests') ?? 0) - (total(a, 'requests') ?? 0));
    const maxShare = Math.max(...ranked.map((e) => total(e, 'share') ?? 0), 0) || 1;
    fill('#endpoints', table([
      { label: '#', cell: (e) => String(ranked.indexOf(e) + 1) },
      { label: 'route', left: true, cell: (e) => (e.route ? h('a', { href: `#/routes/${enc(e.route)}`, text: e.route }) : dash) },
      { label: 'endpoint', left: true, field: 'endpoint', cell: (e) => h('span', { class: 'mono', text: e.endpoint }) },
      { label: 'requests', field: 'requests', cell: (e) => fmtInt(total(e, 'requests')) },
      { label: 'req/s', cell: (e) => fmtRps(total(e, 'rps')) },
      { label: 'error rate', cell: (e) => sides(e, 'error_rate', fmtPct) },
      { label: 'p50', cell: (e) => sides(e, 'p50_ms', fmtMs) },
      { label: 'p99', cell: (e) => sides(e, 'p99_ms', fmtMs) },
      { label: 'bytes', cell: (e) => fmtBytes(total(e, 'bytes')) },
      { label: 'share of time', left: true, cell: (e) => {
        const share = total(e, 'share');
        const bar = h('span', { class: 'bar', 'aria-hidden': 'true' });
        bar.style.width = `${Math.round(((share ?? 0) / maxShare) * 120)}px`;
        return h('span', {}, bar, ' ', fmtPct(share, 1));
      } },
    ], ranked.map((data) => ({ data })), { id: 'endpoint-table', empty: 'No traffic measured yet.' }));
  }

  async function renderFromRoutes() {
    fill('#ep-note', 'Endpoint templates seen by shadow comparison, per route, ranked by comparisons. (This strangler has no /api/endpoints yet: per-endpoint traffic and time are not available.)');
    const routes = await api('/api/routes');
    const details = await Promise.all(routes.map((r) => api(`/api/routes/${enc(r.name)}`)));
    details.forEach(record);
    const rows = details.flatMap((d) => (d.endpoints || []).map((e) => ({ route: d.name, ...e })));
    rows.sort((a, b) => b.compared - a.compared);
    fill('#endpoints', table([
      { label: '#', cell: (e) => String(rows.indexOf(e) + 1) },
      { label: 'route', left: true, cell: (e) => h('a', { href: `#/routes/${enc(e.route)}`, text: e.route }) },
      { label: 'endpoint', left: true, field: 'endpoint', cell: (e) => h('span', { class: 'mono', text: e.endpoint }) },
      { label: 'compared', cell: (e) => fmtInt(e.compared) },
      { label: 'matched', cell: (e) => fmtInt(e.matched) },
      { label: 'mismatched', cell: (e) => fmtInt(e.mismatched) },
      { label: 'noise', cell: (e) => fmtInt(e.noise) },
      { label: 'failed', cell: (e) => fmtInt(e.failed) },
      { label: 'match rate', cell: (e) => fmtPct(e.match_rate) },
      { label: 'top differing fields', left: true, wrap: true, cell: (e) => fieldList(e.fields || []) },
    ], rows.map((data) => ({ data })), { id: 'endpoint-table', empty: 'No endpoint compared yet (routes in shadow, canary or candidate stage compare).' }));
  }

  // ---------------------------------------------------------------- start

  function start() {
    setupToken();
    window.addEventListener('hashchange', navigate);
    document.addEventListener('visibilitychange', () => { if (!document.hidden) poll(); });
    navigate();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
