// xyte-edge dashboard: plain JavaScript, no framework, no build step. Everything it shows comes from this gateway's
// own API with the token the user typed; nothing is fetched from anywhere else. DOM nodes are built with
// textContent only, so data from Xyte can never become markup.
'use strict';

(() => {
  const TOKEN_KEY = 'xyte-edge.token';
  const FEED_MAX = 100;
  const MCP_VERSION = '2026-07-28';
  // Task states after which nothing more happens (see store/tasks.rs).
  const FINAL = new Set(['done', 'failed', 'aborted', 'expired', 'rejected', 'cancelled']);
  const GOOD = new Set(['online', 'done', 'ok', 'validated']);
  const BAD = new Set(['offline', 'error', 'failed', 'aborted', 'expired', 'rejected', 'cancelled', 'invalid',
    'timed_out', 'skipped']);

  const state = {
    token: null,
    role: null,
    canOperate: false,
    allowed: new Set(), // tools this token may call (the gateway checks again on every call)
    devices: new Map(), // id → summary from /v1/devices
    fetchedAt: null, // when the device list was last fetched from Xyte
    reachable: true,
    rooms: [],
    schedules: [],
    incidents: [],
    tickets: [],
    alerts: null, // what list_alerts says: firing, recently ended, silences, rules, channels, file problems
    alertsRead: 0, // number of the latest list_alerts read, so an older answer arriving late is dropped
    events: [],
    lastEventId: null,
    stream: null, // AbortController of the event stream
    watchers: new Map(), // task_id → function(task) updating an open dialog
    timers: [],
    refresh: new Map(), // what → pending timeout, to coalesce bursts of events into one reload
  };

  const $ = (id) => document.getElementById(id);

  // Element builder: el('li', {class: 'x', dataset: {id}}, 'text', child, …). Strings become text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'dataset') {
        for (const [dk, dv] of Object.entries(v)) if (dv !== undefined && dv !== null) node.dataset[dk] = dv;
      }
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function badge(status) {
    const s = String(status || 'unknown');
    const tone = GOOD.has(s) ? 'good' : BAD.has(s) ? 'bad' : 'pending';
    return el('span', { class: `badge ${tone}`, dataset: { status: s } }, s.replace(/_/g, ' '));
  }

  function span(s) {
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} days`;
  }

  // How long ago `iso` was ("3 min 5 s"), and how long until it comes (for a silence's end).
  function ago(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return 'an unknown time';
    return span(Math.max(0, Math.round((Date.now() - t) / 1000)));
  }

  function ahead(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return 'an unknown time';
    return span(Math.max(0, Math.round((t - Date.now()) / 1000)));
  }

  function when(iso) {
    const t = new Date(iso);
    return Number.isNaN(t.getTime()) ? '' : t.toLocaleString();
  }

  // ---- the API ----------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, options = {}) {
    const headers = Object.assign({ Authorization: `Bearer ${state.token}`, Accept: 'application/json' },
      options.headers || {});
    let body = options.body;
    if (body !== undefined && typeof body !== 'string') {
      body = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
    const r = await fetch(path, { method: options.method || 'GET', headers, body, cache: 'no-store' });
    const data = await r.json().catch(() => null);
    if (r.status === 401) {
      signOut('The gateway did not accept the token (it may have been revoked or expired). Sign in again.');
      throw new ApiError(401, 'not signed in');
    }
    if (!r.ok) {
      const e = data && data.error;
      throw new ApiError(r.status, e ? `${e.message}${e.hint ? ` (${e.hint})` : ''}` : `HTTP ${r.status}`);
    }
    return data;
  }

  const tool = (name, args) => api(`/v1/tools/${name}`, { method: 'POST', body: args });

  // A tool call over MCP (stateless 2026-07-28 request) with a progress token: the answer is an SSE stream of
  // progress notifications, then the result. Used for presets, whose steps report progress one by one.
  async function mcpCall(name, args, onProgress) {
    const body = {
      jsonrpc: '2.0', id: 1, method: 'tools/call',
      params: {
        name,
        arguments: args,
        _meta: {
          'io.modelcontextprotocol/protocolVersion': MCP_VERSION,
          'io.modelcontextprotocol/clientCapabilities': {},
          progressToken: 1,
        },
      },
    };
    const r = await fetch('/mcp', {
      method: 'POST',
      cache: 'no-store',
      headers: {
        Authorization: `Bearer ${state.token}`, 'Content-Type': 'application/json',
        Accept: 'application/json, text/event-stream', 'MCP-Protocol-Version': MCP_VERSION,
        'Mcp-Method': 'tools/call', 'Mcp-Name': name,
      },
      body: JSON.stringify(body),
    });
    if (r.status === 401) {
      signOut('The gateway did not accept the token. Sign in again.');
      throw new ApiError(401, 'not signed in');
    }
    const answer = (msg) => {
      if (msg.error) throw new ApiError(r.status, msg.error.message);
      const result = msg.result || {};
      if (result.isError) {
        const text = (result.content || []).map((c) => c.text).join(' ');
        let message = text;
        try { message = JSON.parse(text).error.message || text; } catch (_) { /* plain text */ }
        throw new ApiError(r.status, message);
      }
      return result.structuredContent;
    };
    if (!(r.headers.get('content-type') || '').startsWith('text/event-stream')) {
      return answer(await r.json());
    }
    let result;
    await readEvents(r.body, (frame) => {
      if (!frame.data) return;
      const msg = JSON.parse(frame.data);
      if (msg.method === 'notifications/progress') onProgress(msg.params);
      else if (msg.id !== undefined) result = msg;
    });
    if (!result) throw new ApiError(0, 'the gateway closed the stream before the preset finished');
    return answer(result);
  }

  // Reads a text/event-stream body, calling onFrame({id, event, data, retry}) per frame.
  async function readEvents(body, onFrame) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const raw = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const frame = { data: '' };
        const data = [];
        for (const line of raw.split('\n')) {
          if (!line || line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'data') data.push(value);
          else frame[field] = value;
        }
        frame.data = data.join('\n');
        if (data.length || frame.event) onFrame(frame);
      }
    }
  }

  // ---- sign-in --------------------------------------------------------------------------------------------

  async function signIn(token) {
    state.token = token;
    const error = $('sign-in-error');
    error.hidden = true;
    let tools;
    try {
      tools = await api('/v1/tools');
    } catch (e) {
      state.token = null;
      if (e.status !== 401) {
        error.textContent = `Could not reach the gateway: ${e.message}`;
        error.hidden = false;
      }
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    state.role = tools.role;
    // Operate buttons appear only for callers the gateway will let through; it checks again on every call.
    state.canOperate = tools.tools.some((t) => t.name === 'send_command_async' && t.allowed);
    state.allowed = new Set(tools.tools.filter((t) => t.allowed).map((t) => t.name));
    $('role').textContent = state.role;
    $('sign-in').hidden = true;
    $('session').hidden = false;
    $('app').hidden = false;
    $('token').value = '';
    await loadAll();
    startStream();
    state.timers.push(setInterval(renderBanner, 1000));
    state.timers.push(setInterval(() => loadReadiness().catch(() => {}), 15000));
    // Deliveries are retried and silences run out without an event; the panel is read again every 15 s.
    state.timers.push(setInterval(() => later('alerts', loadAlerts, 0), 15000));
  }

  function signOut(message) {
    if (state.stream) state.stream.abort();
    state.stream = null;
    state.timers.forEach(clearInterval);
    state.timers = [];
    state.refresh.forEach(clearTimeout);
    state.refresh.clear();
    state.watchers.clear();
    sessionStorage.removeItem(TOKEN_KEY);
    Object.assign(state, { token: null, role: null, canOperate: false, allowed: new Set(), alerts: null,
      lastEventId: null, events: [], reachable: true });
    state.devices.clear();
    const dialog = $('dialog');
    if (dialog.open) dialog.close();
    $('app').hidden = true;
    $('session').hidden = true;
    $('sign-in').hidden = false;
    const error = $('sign-in-error');
    error.textContent = message || '';
    error.hidden = !message;
    $('token').focus();
  }

  // ---- loading --------------------------------------------------------------------------------------------

  async function loadAll() {
    const results = await Promise.allSettled([loadDevices(), loadRooms(), loadSchedules(), loadIncidents(),
      loadTickets(), loadAlerts(), loadEvents(), loadReadiness()]);
    const failed = results.filter((r) => r.status === 'rejected' && r.reason.status !== 401);
    const problem = $('load-error');
    problem.textContent = failed.length ? `Some data could not be loaded: ${failed[0].reason.message}` : '';
    problem.hidden = !failed.length;
  }

  async function loadDevices() {
    const devices = new Map();
    let cursor = null;
    let page;
    do {
      page = await api(`/v1/devices?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      for (const d of page.devices) devices.set(String(d.id), d);
      cursor = page.next_cursor;
    } while (cursor);
    state.devices = devices;
    state.fetchedAt = page.fetched_at;
    renderDevices();
    renderSummary();
    renderBanner();
  }

  async function loadRooms() {
    state.rooms = (await api('/v1/rooms')).rooms;
    renderRooms();
  }

  async function loadSchedules() {
    state.schedules = (await api('/v1/schedules?limit=500')).schedules;
    renderRooms();
  }

  async function loadIncidents() {
    state.incidents = (await api('/v1/incidents?status=active&limit=100')).incidents;
    renderIncidents();
    renderSummary();
  }

  async function loadTickets() {
    state.tickets = (await api('/v1/tickets?status=open&limit=100')).tickets;
    renderTickets();
    renderSummary();
  }

  // Every firing alert (page by page), and the ten that ended most recently (resolved, or told once).
  async function loadAlerts() {
    const read = ++state.alertsRead;
    const [first, ended] = await Promise.all([
      tool('list_alerts', { state: 'firing', limit: 500 }),
      tool('list_alerts', { state: 'resolved', limit: 10 }),
    ]);
    const firing = first.alerts.slice();
    let page = first;
    for (let n = 1; page.next_cursor && n < 10; n++) {
      page = await tool('list_alerts', { state: 'firing', limit: 500, cursor: page.next_cursor });
      firing.push(...page.alerts);
    }
    if (read !== state.alertsRead || !state.token) return;
    const endedAt = (a) => Date.parse(a.resolved_at || a.told_at || a.fired_at) || 0;
    const recent = ended.alerts.filter((a) => a.state !== 'firing').sort((a, b) => endedAt(b) - endedAt(a));
    state.alerts = {
      firing,
      more: page.next_cursor ? Math.max(0, (first.total || 0) - firing.length) : 0,
      recent,
      silences: first.silences || [],
      rules: first.rules || [],
      channels: first.channels || [],
      deliveries: first.deliveries || null,
      errors: first.errors || [],
      file: first.file || null,
    };
    renderAlerts();
    renderSummary();
    // A message waiting for its next try: read the panel again just after it, so its outcome shows without delay.
    // (Its own key: a reload waiting for a retry must not hold back the one an alert event asks for.)
    const now = Date.now();
    const nextTries = [...firing, ...recent].flatMap((a) => a.deliveries || [])
      .filter((d) => d.state === 'pending' && d.next_at).map((d) => Date.parse(d.next_at))
      .filter((t) => t > now - 5000 && t < now + 15000);
    if (nextTries.length) later('alerts-retry', loadAlerts, Math.max(2000, Math.min(...nextTries) - now + 1000));
  }

  async function loadEvents() {
    const list = await api('/v1/events?limit=50');
    state.events = list.events.slice().reverse();
    state.lastEventId = list.last_id;
    renderEvents();
  }

  // /readyz needs no token; it says whether the poller reached Xyte on its last try.
  async function loadReadiness() {
    const r = await fetch('/readyz', { cache: 'no-store' });
    const ready = await r.json();
    if (typeof ready.xyte_reachable === 'boolean') setReachable(ready.xyte_reachable);
    renderUplink(ready.uplink_connected);
  }

  // The MQTT uplink's state in the header; hidden when no uplink is configured (the field is absent then).
  function renderUplink(connected) {
    const badge = $('uplink');
    badge.hidden = typeof connected !== 'boolean';
    badge.textContent = connected ? 'Uplink' : 'Uplink down';
    badge.title = connected ? 'Connected to the MQTT broker' : 'The MQTT broker is not reachable; events are kept and delivered later';
    badge.classList.toggle('on', connected === true);
  }

  function setReachable(reachable) {
    if (reachable && !state.reachable) later('devices', loadDevices, 0);
    state.reachable = reachable;
    renderBanner();
  }

  // Coalesces reloads triggered by bursts of events (a poll cycle may produce dozens).
  function later(what, load, delay = 400) {
    if (state.refresh.has(what)) return;
    state.refresh.set(what, setTimeout(() => {
      state.refresh.delete(what);
      load().catch(() => {});
    }, delay));
  }

  // ---- live events ----------------------------------------------------------------------------------------

  // EventSource cannot send a bearer header, so the stream is read with fetch. It resumes after the last event
  // seen (Last-Event-ID), so a reconnect loses nothing; the gateway replays the gap from its log.
  async function startStream() {
    let delay = 1000;
    while (state.token) {
      const controller = new AbortController();
      state.stream = controller;
      try {
        const headers = { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' };
        if (state.lastEventId !== null && state.lastEventId !== undefined) headers['Last-Event-ID'] = String(state.lastEventId);
        const r = await fetch('/v1/events', { headers, signal: controller.signal, cache: 'no-store' });
        if (r.status === 401) {
          signOut('The gateway did not accept the token. Sign in again.');
          return;
        }
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        setLive(true);
        delay = 1000;
        await readEvents(r.body, (frame) => {
          if (frame.retry) delay = Math.max(500, Number(frame.retry) || delay);
          if (frame.event === 'lagged') {
            controller.abort(); // resume from the last id at once
            return;
          }
          if (!frame.data) return;
          onEvent(JSON.parse(frame.data));
        });
      } catch (_) {
        // Network error, abort or daemon restart: fall through to reconnect (or stop after sign-out).
      }
      if (!state.token || state.stream !== controller) return;
      setLive(false);
      await new Promise((resolve) => setTimeout(resolve, delay + Math.random() * 500));
      delay = Math.min(delay * 2, 30000);
    }
  }

  function setLive(on) {
    const live = $('live');
    live.textContent = on ? 'Live' : 'Reconnecting…';
    live.classList.toggle('on', on);
  }

  function onEvent(e) {
    if (state.lastEventId !== null && e.id <= state.lastEventId) return;
    state.lastEventId = e.id;
    state.events.unshift(e);
    state.events.length = Math.min(state.events.length, FEED_MAX);
    renderEvents();
    const kind = e.kind;
    if (kind === 'device.status_changed') {
      const d = state.devices.get(String(e.device_id));
      if (d) {
        d.status = e.data.to;
        renderDevices(String(e.device_id));
        renderSummary();
      } else {
        later('devices', loadDevices);
      }
    } else if (kind.startsWith('device.')) {
      later('devices', loadDevices);
    } else if (kind.startsWith('incident.')) {
      later('incidents', loadIncidents);
    } else if (kind === 'ticket.updated') {
      later('tickets', loadTickets);
    } else if (kind.startsWith('schedule.')) {
      later('schedules', loadSchedules);
    } else if (kind.startsWith('alert.')) {
      later('alerts', loadAlerts);
    } else if (kind === 'edge.xyte_unreachable') {
      setReachable(false);
    } else if (kind === 'edge.xyte_reachable') {
      setReachable(true);
    } else if (kind.startsWith('command.') && e.data && state.watchers.has(e.data.task_id)) {
      const watch = state.watchers.get(e.data.task_id);
      api(`/v1/tasks/${encodeURIComponent(e.data.task_id)}`).then(watch, () => {});
    }
  }

  // ---- rendering ------------------------------------------------------------------------------------------

  function renderBanner() {
    const banner = $('stale-banner');
    if (state.reachable) {
      banner.hidden = true;
      return;
    }
    const age = state.fetchedAt ? `from ${ago(state.fetchedAt)} ago (${when(state.fetchedAt)})` : 'of unknown age';
    banner.textContent = `Xyte is unreachable. Showing cached data ${age}; it updates again when the connection `
      + 'returns. Commands are queued and delivered then.';
    banner.hidden = false;
  }

  function renderSummary() {
    const counts = { online: 0, offline: 0, error: 0 };
    for (const d of state.devices.values()) counts[d.status] = (counts[d.status] || 0) + 1;
    const tile = (n, label, id) => el('div', { class: 'tile', id }, el('b', {}, n), el('span', {}, label));
    $('summary').replaceChildren(
      tile(state.devices.size, 'devices', 'count-devices'),
      tile(counts.online, 'online', 'count-online'),
      tile(counts.offline, 'offline', 'count-offline'),
      tile(counts.error || 0, 'in error', 'count-error'),
      tile(state.incidents.length, 'active incidents', 'count-incidents'),
      tile(state.tickets.length, 'open tickets', 'count-tickets'),
      tile(state.alerts ? state.alerts.firing.length : '–', 'alerts firing', 'count-alerts'),
    );
  }

  function renderRooms() {
    const list = $('rooms');
    if (!state.rooms.length) {
      list.replaceChildren(el('li', { class: 'muted' }, 'No rooms: add them to the presets file, or give spaces the room type.'));
      return;
    }
    list.replaceChildren(...state.rooms.map((room) => el('li', { class: 'room', dataset: { room: room.name } },
      el('strong', {}, room.name),
      room.path ? el('span', { class: 'path' }, room.path) : null,
      el('span', { class: 'muted' }, room.devices === null || room.devices === undefined ? 'no space' : `${room.devices} devices`),
      roomSchedule(room.name),
      state.canOperate && room.presets.length
        ? el('div', { class: 'actions' }, room.presets.map((preset) => el('button', {
          type: 'button', class: preset === 'shutdown' ? 'danger' : '',
          dataset: { action: 'preset', room: room.name, preset },
          onclick: () => confirmPreset(room.name, preset),
        }, `Run ${preset}`)))
        : null)));
  }

  // The room's next scheduled action (the earliest next run of its schedules) and its last result; operators can
  // pause or resume each of its schedules.
  function roomSchedule(roomName) {
    const mine = state.schedules.filter((s) => s.room === roomName);
    if (!mine.length) return null;
    const upcoming = mine.filter((s) => !s.paused && s.next_runs.length)
      .sort((a, b) => Date.parse(a.next_runs[0]) - Date.parse(b.next_runs[0]))[0];
    const last = mine.filter((s) => s.last_run)
      .sort((a, b) => Date.parse(b.last_run.fired_at) - Date.parse(a.last_run.fired_at))[0];
    const lastText = !last ? null
      : last.last_run.ok === true ? `Last: ${last.preset} ok (${when(last.last_run.fired_at)})`
        : last.last_run.ok === false ? `Last: ${last.preset} failed (${when(last.last_run.fired_at)})`
          : `Last: ${last.preset} running since ${when(last.last_run.fired_at)}`;
    return el('div', { class: 'schedule', dataset: { schedules: mine.map((s) => s.name).join(' ') } },
      el('div', { class: 'next' }, upcoming
        ? `Next: ${upcoming.preset} at ${when(upcoming.next_runs[0])}`
        : 'Next: nothing scheduled'),
      lastText ? el('div', { class: last.last_run.ok === false ? 'last error' : 'last muted' }, lastText) : null,
      mine.map((s) => el('div', { class: 'meta' },
        `${s.name}: ${s.describe}${s.enabled ? '' : ' · disabled'}`
          + `${s.paused ? ` · paused${s.paused.until ? ` until ${when(s.paused.until)}` : ''}` : ''} `,
        state.canOperate && s.enabled ? el('button', {
          type: 'button', class: 'secondary', dataset: { action: s.paused ? 'resume' : 'pause', schedule: s.name },
          onclick: () => toggleSchedule(s),
        }, s.paused ? 'Resume' : 'Pause') : null)));
  }

  async function toggleSchedule(s) {
    try {
      await tool(s.paused ? 'resume_schedule' : 'pause_schedule', { name: s.name });
    } catch (e) {
      openDialog(s.name, [el('p', { class: 'error' }, e.message)], [closeButton()]);
    }
    await loadSchedules().catch(() => {});
  }

  // ---- alerts ---------------------------------------------------------------------------------------------

  function severityBadge(severity) {
    const s = String(severity || 'warning');
    const tone = s === 'critical' ? 'bad' : s === 'info' ? 'info' : 'pending';
    return el('span', { class: `badge ${tone}`, dataset: { severity: s } }, s);
  }

  const DELIVERY_TONE = { sent: 'good', pending: 'pending', given_up: 'bad' };

  // One message to one channel: sent, waiting for its next try (with the failed attempts and the last error), or
  // given up.
  function deliveryItem(d) {
    const attempts = Number(d.attempts) || 0;
    const tries = `${attempts} attempt${attempts === 1 ? '' : 's'}`;
    let detail;
    if (d.state === 'sent') detail = d.done_at ? `sent ${when(d.done_at)}` : 'sent';
    else if (d.state === 'given_up') detail = `given up after ${tries}${d.done_at ? ` (${when(d.done_at)})` : ''}`;
    else {
      const wait = d.next_at ? Date.parse(d.next_at) - Date.now() : NaN;
      if (!attempts) detail = wait >= 1000 ? `first try in ${ahead(d.next_at)}` : 'being sent';
      else detail = `${tries} failed${wait >= 1000 ? `, next try in ${ahead(d.next_at)}` : wait > -60000 ? ', trying again now' : ''}`;
    }
    return el('li', {
      class: `delivery ${d.state}`,
      dataset: { channel: d.channel, kind: d.kind, state: d.state, attempts: String(attempts), error: d.last_error ? 'yes' : null },
    },
    el('span', { class: 'channel' }, d.channel), ' ',
    d.kind === 'resolved' ? el('span', { class: 'muted' }, 'resolved notice ') : null,
    el('span', { class: `badge ${DELIVERY_TONE[d.state] || 'pending'}`, dataset: { status: d.state } },
      String(d.state).replace(/_/g, ' ')), ' ',
    el('span', { class: 'muted' }, detail),
    d.last_error && d.state !== 'sent' ? el('div', { class: 'last-error' }, `Last error: ${d.last_error}`) : null);
  }

  // The latest message per channel and kind (a repeating alert has one per repeat; older ones are history).
  function latestDeliveries(list) {
    const seen = new Map();
    for (const d of list || []) {
      const key = `${d.channel}\u0000${d.kind}`;
      const prev = seen.get(key);
      if (!prev || Date.parse(d.created_at) > Date.parse(prev.created_at)
        || (d.created_at === prev.created_at && d.id > prev.id)) seen.set(key, d);
    }
    return [...seen.values()].sort((a, b) => a.channel.localeCompare(b.channel) || (a.kind === 'firing' ? -1 : 1));
  }

  function alertItem(a) {
    const subject = a.subject || {};
    const device = state.devices.get(String(subject.key));
    const label = subject.label || (device && device.name) || subject.key || '';
    const firing = a.state === 'firing';
    const silence = a.silenced_by ? (state.alerts.silences || []).find((s) => s.id === a.silenced_by) : null;
    const time = firing ? `firing for ${ago(a.since)}, since ${when(a.since)}`
      : a.state === 'resolved' ? `resolved ${ago(a.resolved_at)} ago (${when(a.resolved_at)}), had fired since ${when(a.since)}`
        : `told ${ago(a.told_at || a.fired_at)} ago (${when(a.told_at || a.fired_at)})`;
    const deliveries = latestDeliveries(a.deliveries);
    const canSilence = firing && !a.silenced_by && state.allowed.has('silence_alerts');
    return el('li', {
      class: `alert ${a.state}${a.silenced_by ? ' silenced' : ''}`,
      dataset: {
        rule: a.rule, key: subject.key, state: a.state, severity: a.severity, fired: a.fired_at,
        silenced: a.silenced_by || null,
      },
    },
    el('div', { class: 'what' },
      el('div', { class: 'alert-head' }, severityBadge(a.severity), ' ', el('strong', {}, a.rule), ' ',
        el('span', { class: 'subject' }, label),
        a.silenced_by ? el('span', { class: 'badge muted-badge', title: `Silenced by ${a.silenced_by}` }, 'silenced') : null),
      el('div', { class: 'meta' }, [subject.space, time].filter(Boolean).join(' · ')),
      a.silenced_by ? el('div', { class: 'meta' }, `Silenced by ${a.silenced_by}`
        + `${silence ? ` until ${when(silence.until)}` : ''}: nobody is told while it lasts.`) : null,
      deliveries.length ? el('ul', { class: 'deliveries', 'aria-label': 'Messages' }, deliveries.map(deliveryItem))
        : el('div', { class: 'meta' }, a.silenced_by ? 'No message sent (silenced).' : firing ? 'No message yet.' : 'No message.')),
    canSilence ? el('div', { class: 'actions' }, el('button', {
      type: 'button', class: 'secondary', dataset: { action: 'silence', rule: a.rule, key: subject.key },
      title: subject.key === 'gateway' ? `Silence rule ${a.rule} for 1 hour`
        : `Silence rule ${a.rule} for ${label} for 1 hour`,
      onclick: (ev) => silenceAlert(a, ev.currentTarget),
    }, 'Silence 1 h')) : null);
  }

  function silenceItem(s) {
    const device = s.device ? state.devices.get(String(s.device)) : null;
    const matches = [
      s.rule ? `rule ${s.rule}` : null,
      s.device ? `device ${device ? `${device.name} (${s.device})` : s.device}` : null,
      s.space ? `space ${s.space}` : null,
    ].filter(Boolean);
    return el('li', { class: 'silence', dataset: { silenceId: s.id, rule: s.rule || null, device: s.device || null } },
      el('div', { class: 'what' },
        el('div', {}, el('strong', {}, 'Silenced: '), matches.length ? matches.join(' and ') : 'everything'),
        el('div', { class: 'meta' }, [`until ${when(s.until)} (in ${ahead(s.until)})`, s.by ? `by ${s.by}` : null,
          s.created_at ? `since ${when(s.created_at)}` : null].filter(Boolean).join(' · ')),
        s.comment ? el('div', { class: 'comment' }, `“${s.comment}”`) : null),
      state.allowed.has('end_silence') ? el('div', { class: 'actions' }, el('button', {
        type: 'button', class: 'secondary', dataset: { action: 'end-silence', silence: s.id },
        onclick: (ev) => endSilence(s, ev.currentTarget),
      }, 'End')) : null);
  }

  function renderAlerts() {
    const a = state.alerts;
    if (!a) return;
    const parts = [];
    if (a.errors.length) {
      parts.push(el('div', { class: 'alert-errors', id: 'alerts-errors', role: 'alert' },
        `The alerts file${a.file ? ` ${a.file}` : ''} has ${a.errors.length === 1 ? 'a problem' : `${a.errors.length} problems`}; `
        + 'what it names is ignored:',
        el('ul', {}, a.errors.map((e) => el('li', {}, e)))));
    }
    if (!a.rules.length) {
      parts.push(el('p', { class: 'muted', id: 'alerts-no-rules' }, 'No alert rules are configured, so nothing is watched'
        + `${a.file ? `; they are read from ${a.file}` : ''}.`));
    }
    if (a.firing.length) {
      parts.push(el('ul', { class: 'alerts', id: 'alerts-firing' }, a.firing.map(alertItem)));
      if (a.more) parts.push(el('p', { class: 'muted' }, `… and ${a.more} more firing.`));
    } else if (a.rules.length) {
      parts.push(el('p', { class: 'muted', id: 'alerts-none' }, 'No alerts firing.'));
    }
    if (a.silences.length) {
      parts.push(el('h3', {}, 'Silences'), el('ul', { class: 'alerts silences', id: 'alerts-silences' },
        a.silences.map(silenceItem)));
    }
    if (a.recent.length) {
      parts.push(el('h3', {}, 'Recently resolved'), el('ul', { class: 'alerts recent', id: 'alerts-recent' },
        a.recent.map(alertItem)));
    }
    if (a.rules.length) {
      const d = a.deliveries;
      parts.push(el('p', { class: 'meta alerts-foot' }, [
        `${a.rules.length} rule${a.rules.length === 1 ? '' : 's'}: ${a.rules.map((r) => r.name).join(', ')}`,
        a.channels.length ? `channels: ${a.channels.map((c) => `${c.name} (${c.type})`).join(', ')}` : null,
        d ? `messages: ${d.pending} pending, ${d.sent} sent, ${d.given_up} given up` : null,
      ].filter(Boolean).join(' · ')));
    }
    $('alerts').replaceChildren(...parts);
    const silenced = a.firing.filter((x) => x.silenced_by).length;
    $('alerts-summary').textContent = a.firing.length
      ? `${a.firing.length} firing${silenced ? `, ${silenced} silenced` : ''}` : '';
  }

  // Silences the rule for this device (or the whole rule, for a gateway-wide alert) for an hour.
  async function silenceAlert(a, button) {
    button.disabled = true;
    const args = { rule: a.rule, duration: '1h', comment: 'Silenced for 1 h from the dashboard' };
    if (a.subject && a.subject.key !== 'gateway') args.device = a.subject.key;
    try {
      await tool('silence_alerts', args);
    } catch (e) {
      openDialog(`Silence ${a.rule}`, [el('p', { class: 'error' }, e.message)], [closeButton()]);
    }
    await loadAlerts().catch(() => {});
  }

  async function endSilence(s, button) {
    button.disabled = true;
    try {
      await tool('end_silence', { id: s.id });
    } catch (e) {
      // Already ended (or run out) elsewhere: reading the list again shows it gone.
      if (e.status !== 404) openDialog('End silence', [el('p', { class: 'error' }, e.message)], [closeButton()]);
    }
    await loadAlerts().catch(() => {});
  }

  function deviceMatches(d, words) {
    const text = `${d.name} ${d.model} ${d.space} ${d.status} ${d.sn || ''}`.toLowerCase();
    return words.every((w) => text.includes(w));
  }

  // Renders all devices grouped by space, or (with `changed`) only updates that device's badge in place.
  function renderDevices(changed) {
    if (changed) {
      const item = document.querySelector(`.device[data-device-id="${CSS.escape(changed)}"]`);
      const d = state.devices.get(changed);
      if (item && d) {
        item.querySelector('.badge').replaceWith(badge(d.status));
        item.dataset.status = d.status;
        item.classList.remove('changed');
        void item.offsetWidth; // restart the highlight animation
        item.classList.add('changed');
        return;
      }
    }
    const words = $('filter').value.toLowerCase().split(/\s+/).filter(Boolean);
    const groups = new Map();
    for (const d of state.devices.values()) {
      if (!deviceMatches(d, words)) continue;
      const space = d.space || 'No space';
      if (!groups.has(space)) groups.set(space, []);
      groups.get(space).push(d);
    }
    const sections = [...groups.keys()].sort().map((space) => el('section', { class: 'space' },
      el('h3', {}, space),
      el('ul', { class: 'devices' }, groups.get(space).sort((a, b) => a.name.localeCompare(b.name)).map((d) =>
        el('li', { class: 'device', dataset: { deviceId: String(d.id), status: d.status } },
          el('button', { type: 'button', onclick: () => showDevice(String(d.id)), 'aria-label': `${d.name}, ${d.status}` },
            el('span', {}, el('span', { class: 'name' }, d.name), el('span', { class: 'model' }, d.model || '')),
            badge(d.status)))))));
    $('spaces').replaceChildren(...(sections.length ? sections
      : [el('p', { class: 'muted' }, words.length ? 'No device matches the filter.' : 'No devices.')]));
  }

  function renderIncidents() {
    const items = state.incidents.map((i) => el('li', {},
      el('div', {}, badge(i.priority || 'unknown'), ' ', i.title || i.issue || i.id),
      el('div', { class: 'meta' }, [i.space_tree_path_name || i.space_name, `since ${when(i.created_at)}`].filter(Boolean).join(' · '))));
    $('incidents').replaceChildren(...(items.length ? items : [el('li', { class: 'muted' }, 'No active incidents.')]));
  }

  function renderTickets() {
    const items = state.tickets.map((t) => el('li', {},
      el('div', {}, t.title || t.id),
      el('div', { class: 'meta' }, [t.user_name, when(t.created_at)].filter(Boolean).join(' · '))));
    $('tickets').replaceChildren(...(items.length ? items : [el('li', { class: 'muted' }, 'No open tickets.')]));
  }

  function describe(e) {
    const d = e.data || {};
    const device = e.device_id && state.devices.get(String(e.device_id));
    const name = d.name || (device && device.name) || e.device_id || '';
    switch (e.kind) {
      case 'device.status_changed': return `${name}: ${d.from} → ${d.to}`;
      case 'incident.opened': case 'incident.closed': return d.title || '';
      case 'ticket.updated': return `${d.title || d.ticket_id} (${d.change || 'updated'})`;
      case 'preset.started': return `${d.room}: ${d.preset} started by ${d.principal}`;
      case 'preset.finished': return `${d.room}: ${d.preset} ${d.ok ? 'finished' : 'failed'}`;
      case 'schedule.fired': return `${d.room}: ${d.preset} started by schedule ${d.schedule}`;
      case 'schedule.finished': return `${d.room}: ${d.preset} (schedule ${d.schedule}) ${d.ok ? 'finished' : 'failed'}`;
      case 'schedule.skipped': return `${d.room}: schedule ${d.schedule} skipped (${d.reason_code})`;
      case 'alert.firing': case 'alert.resolved': {
        const names = (d.subjects || []).slice(0, 3).map((x) => x.label || x.key);
        const more = (d.count || 0) > names.length ? ` and ${d.count - names.length} more` : '';
        const what = e.kind === 'alert.firing' ? `firing${d.repeat ? ' (repeat)' : ''}` : 'resolved';
        return `${d.rule}: ${what}: ${names.join(', ')}${more}`;
      }
      case 'alert.delivery_failed':
        return `${d.rule}: message ${d.delivery_id} to ${d.channel} given up after ${d.attempts} attempts (${d.error})`;
      case 'edge.xyte_unreachable': return d.message || 'Xyte unreachable';
      case 'edge.xyte_reachable': return 'Xyte reachable again';
      default:
        if (e.kind.startsWith('command.')) return `${name}: ${d.command || ''} ${d.to || d.reason || ''}`.trim();
        return name;
    }
  }

  function renderEvents() {
    const items = state.events.map((e) => el('li', { dataset: { id: e.id, kind: e.kind } },
      el('span', { class: 'kind' }, e.kind), ' ', describe(e),
      el('div', { class: 'meta' }, when(e.ts))));
    $('events').replaceChildren(...(items.length ? items : [el('li', { class: 'muted' }, 'No events yet.')]));
  }

  // ---- dialogs --------------------------------------------------------------------------------------------

  function openDialog(title, body, actions) {
    $('dialog-title').textContent = title;
    $('dialog-body').replaceChildren(...body.filter(Boolean));
    $('dialog-actions').replaceChildren(...actions);
    const dialog = $('dialog');
    if (!dialog.open) dialog.showModal();
    // Focus lands on the last action (Cancel or Close), so a stray Enter never confirms anything.
    const safe = [...$('dialog-actions').querySelectorAll('button:not(:disabled)')].at(-1);
    if (safe) safe.focus();
  }

  function closeButton(label = 'Close') {
    return el('button', { type: 'button', class: 'secondary', onclick: () => $('dialog').close() }, label);
  }

  async function showDevice(id) {
    const d = state.devices.get(id);
    openDialog(d ? d.name : id, [el('p', { class: 'muted' }, 'Loading…')], [closeButton()]);
    let s;
    try {
      s = await api(`/v1/devices/${encodeURIComponent(id)}`);
    } catch (e) {
      openDialog(d ? d.name : id, [el('p', { class: 'error' }, e.message)], [closeButton()]);
      return;
    }
    const dev = s.device || {};
    const facts = el('dl', { class: 'facts' },
      el('dt', {}, 'Status'), el('dd', {}, badge(s.status)),
      el('dt', {}, 'Model'), el('dd', {}, (dev.model && dev.model.name) || (d && d.model) || '—'),
      el('dt', {}, 'Space'), el('dd', {}, (dev.space && dev.space.full_path) || (d && d.space) || '—'),
      el('dt', {}, 'Last seen'), el('dd', {}, s.last_seen_at ? `${when(s.last_seen_at)} (${ago(s.last_seen_at)} ago)` : '—'),
      el('dt', {}, 'Serial'), el('dd', {}, dev.sn || '—'));
    const body = [facts];
    if (s.stale) body.push(el('p', { class: 'muted' }, `Cached data from ${ago(s.fetched_at)} ago.`));
    if ((s.open_incidents || []).length) {
      body.push(el('h3', {}, 'Open incidents'),
        el('ul', { class: 'list' }, s.open_incidents.map((i) => el('li', {}, i.title || i.id))));
    }
    if ((s.recent_commands || []).length) {
      body.push(el('h3', {}, 'Recent commands'), el('ul', { class: 'list' }, s.recent_commands.map((c) => el('li', {},
        badge(c.status), ' ', c.friendly_name || c.name || c.command || '', el('div', { class: 'meta' }, when(c.created_at))))));
    }
    if (state.canOperate) {
      // "Common" commands: those that need no parameters, so one confirmed click is enough.
      const simple = (s.commands || []).filter((c) => !(c.custom_fields || []).some((f) => f.required));
      if (simple.length) {
        body.push(el('h3', {}, 'Commands'), el('div', { class: 'actions' }, simple.map((c) => el('button', {
          type: 'button', class: 'secondary', dataset: { action: 'command', command: c.name },
          onclick: () => confirmCommand(id, dev.name || id, c),
        }, c.friendly_name || c.name))));
      } else if (s.commands === null) {
        body.push(el('p', { class: 'muted' }, 'The device model is not known yet, so no commands are offered.'));
      }
    }
    openDialog(dev.name || id, body, [closeButton()]);
  }

  function confirmCommand(deviceId, deviceName, command) {
    const label = command.friendly_name || command.name;
    openDialog(`Send “${label}”?`, [
      el('p', {}, `Send ${label} (${command.name}) to ${deviceName}.`),
      el('p', { class: 'muted' }, 'The command is stored on this gateway first and delivered to Xyte at once, or as '
        + 'soon as Xyte is reachable again (within the command lifetime).'),
    ], [
      el('button', { type: 'button', dataset: { action: 'confirm' }, onclick: () => sendCommand(deviceId, deviceName, command) }, 'Send'),
      closeButton('Cancel'),
    ]);
  }

  async function sendCommand(deviceId, deviceName, command) {
    const label = command.friendly_name || command.name;
    const status = el('p', { class: 'outcome', id: 'task-state', role: 'status' }, 'Sending…');
    openDialog(`${label} → ${deviceName}`, [status], [closeButton()]);
    let task;
    try {
      task = await tool('send_command_async', { device_id: deviceId, command: command.name });
    } catch (e) {
      status.textContent = `Not sent: ${e.message}`;
      status.className = 'outcome bad';
      return;
    }
    const show = (t) => {
      status.replaceChildren(el('span', {}, 'Task ', el('code', {}, t.task_id), ': ', badge(t.state),
        t.final ? '' : ' (updates live)', t.last_error && el('div', { class: 'detail' }, t.last_error)));
      status.dataset.state = t.state;
      status.className = `outcome ${t.final ? (t.state === 'done' ? 'ok' : 'bad') : ''}`;
      if (t.final || FINAL.has(t.state)) state.watchers.delete(t.task_id);
    };
    state.watchers.set(task.task_id, show);
    show(task);
    // The event that moved it may have arrived before the watcher existed.
    api(`/v1/tasks/${encodeURIComponent(task.task_id)}`).then(show, () => {});
  }

  async function confirmPreset(room, preset) {
    openDialog(`${room}: ${preset}`, [el('p', { class: 'muted' }, 'Checking the steps…')], [closeButton('Cancel')]);
    let plan;
    try {
      plan = await tool('start_meeting_room_preset', { room, preset, dry_run: true });
    } catch (e) {
      openDialog(`${room}: ${preset}`, [el('p', { class: 'error' }, e.message)], [closeButton()]);
      return;
    }
    const steps = el('ol', { class: 'steps', id: 'preset-steps' }, plan.steps.map((s) => stepItem(s, s.status)));
    const runnable = plan.ok;
    openDialog(`Run “${preset}” in ${plan.room}?`, [
      el('p', {}, `${plan.steps.length} step${plan.steps.length === 1 ? '' : 's'}, in order:`),
      steps,
      runnable ? null : el('p', { class: 'error' }, 'Some steps are not valid; fix the presets file first.'),
    ], [
      el('button', {
        type: 'button', dataset: { action: 'confirm' }, disabled: !runnable,
        class: preset === 'shutdown' ? 'danger' : '', onclick: () => runPreset(plan.room, preset, plan.steps),
      }, `Run ${preset}`),
      closeButton('Cancel'),
    ]);
  }

  function stepItem(s, status, detail) {
    return el('li', { dataset: { step: s.step } },
      el('span', { class: 'what' }, el('span', {}, `${s.step}. ${s.command}`),
        el('span', { class: 'detail' }, detail || s.message || s.device || s.device_id)),
      badge(status));
  }

  async function runPreset(room, preset, planned) {
    const list = el('ol', { class: 'steps', id: 'preset-steps' }, planned.map((s) => stepItem(s, 'waiting')));
    const outcome = el('p', { class: 'outcome', id: 'preset-outcome', role: 'status' }, 'Running…');
    openDialog(`${room}: ${preset}`, [list, outcome], [closeButton()]);
    const setStep = (n, status, detail) => {
      const item = list.querySelector(`[data-step="${n}"]`);
      const s = planned.find((p) => p.step === n);
      if (item && s) item.replaceWith(stepItem(s, status, detail));
    };
    let result;
    try {
      // Progress messages are "step N/T: <command> on <device>" when a step starts and "step N/T: <status>" when
      // it ends (ops/rooms.rs); the final result then carries every step's outcome.
      result = await mcpCall('start_meeting_room_preset', { room, preset }, (p) => {
        const m = /^step (\d+)\/\d+: (.*)$/.exec(p.message || '');
        if (!m) return;
        const n = Number(m[1]);
        setStep(n, Number(p.progress) < n ? 'running' : m[2]);
      });
    } catch (e) {
      outcome.textContent = `The preset did not run: ${e.message}`;
      outcome.className = 'outcome bad';
      return;
    }
    for (const s of result.steps) setStep(s.step, s.status, s.message || s.device);
    outcome.textContent = result.ok ? `Done: all ${result.steps.length} steps succeeded.`
      : 'Stopped: a step did not succeed (see above).';
    outcome.className = `outcome ${result.ok ? 'ok' : 'bad'}`;
    outcome.dataset.ok = String(result.ok);
  }

  // ---- start ----------------------------------------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', () => {
    $('sign-in-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const token = $('token').value.trim();
      if (token) signIn(token);
    });
    $('sign-out').addEventListener('click', () => signOut());
    $('dialog-close').addEventListener('click', () => $('dialog').close());
    $('filter').addEventListener('input', () => renderDevices());
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
    else $('token').focus();
  });
})();
