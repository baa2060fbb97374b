// The qtrail audit console: plain JavaScript, no framework, no build step.
//
// Everything shown comes from the collector's JSON API (/api/...), which answers only a
// signed-in auditor. Event fields are user-controlled text, so the DOM is built with
// createElement and textContent only; nothing here parses data as HTML. The server's
// Content-Security-Policy forbids inline script as a second line of defence.
'use strict';

const PAGE_SIZE = 50;
// Rows a live view keeps before it drops the oldest, so a busy location cannot grow the page forever.
const MAX_LIVE_ROWS = 500;
const FILTER_NAMES = ['start_time', 'end_time', 'action', 'outcome', 'severity', 'initiator_id', 'target_id', 'correlation_id'];
const TIME_FILTERS = new Set(['start_time', 'end_time']);

const state = {
  location: null,
  // Filters as the API takes them (times in RFC 3339, UTC); empty ones are left out.
  filters: new URLSearchParams(),
  // pageTokens[i] is the token of page i ('' for the first).
  pageTokens: [''],
  pageIndex: 0,
  headSeq: 0,
  // Whether the shown page is the answer to the current filters; live starts only from one.
  pageLoaded: false,
  // Positions in the list, so that a live event already on the page is not added twice.
  shown: new Set(),
  live: null,
  // Increases with every list load; an answer to an older load is dropped.
  generation: 0,
  selectedSeq: null,
};

const $ = (id) => document.getElementById(id);

/** A failed API call: the HTTP status and the server's message. */
class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the API and returns the parsed JSON answer (null for 204), or throws an ApiFailure. */
async function call(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {
      credentials: 'same-origin',
      cache: 'no-store',
      ...options,
      headers: { Accept: 'application/json', ...(options.headers || {}) },
    });
  } catch (error) {
    throw new ApiFailure(0, 'the collector cannot be reached');
  }
  if (response.status === 204) {
    return null;
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.error === 'string' ? body.error : `request failed with status ${response.status}`;
    throw new ApiFailure(response.status, message);
  }
  return body;
}

/** Shows `failure` in `element`, or the sign-in form when the session has ended. */
function report(failure, element) {
  if (failure instanceof ApiFailure && failure.status === 401) {
    showSignIn('Your session has ended: sign in again.');
    return;
  }
  element.textContent = failure instanceof ApiFailure ? failure.message : String(failure);
}

/** Shows exactly one of the main sections. */
function showSection(id) {
  for (const section of ['loading', 'sign-in', 'collectors', 'console']) {
    $(section).hidden = section !== id;
  }
  if (id !== 'console') {
    $('detail').hidden = true;
  }
}

function locationBase() {
  return `/api/locations/${encodeURIComponent(state.location)}`;
}

// ---- sign-in ----

/** Shows the sign-in form and forgets everything shown before. */
function showSignIn(message = '') {
  stopLive();
  $('event-rows').replaceChildren();
  $('collectors-list').replaceChildren();
  $('detail-facts').replaceChildren();
  $('detail-at').textContent = '';
  $('detail-cadf').textContent = '';
  $('verify-result').hidden = true;
  clearTimeline();
  clearAlerts();
  $('who').hidden = true;
  $('sign-out').hidden = true;
  $('sign-in-error').textContent = message;
  showSection('sign-in');
  $('token').focus();
}

async function signIn(submit) {
  submit.preventDefault();
  const token = $('token').value;
  $('sign-in-error').textContent = '';
  $('sign-in-submit').disabled = true;
  try {
    const who = await call('/api/session', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token }),
    });
    $('token').value = '';
    signedIn(who);
  } catch (failure) {
    const message = failure instanceof ApiFailure ? failure.message : String(failure);
    $('sign-in-error').textContent = `Sign-in refused: ${message}`;
  } finally {
    $('sign-in-submit').disabled = false;
  }
}

async function signOut() {
  try {
    await call('/api/session', { method: 'DELETE' });
  } catch (failure) {
    // The session is dropped locally either way.
  }
  showSignIn('Signed out.');
}

function signedIn(who) {
  $('who').textContent = `${who.name} (${who.role})`;
  $('who').hidden = false;
  $('sign-out').hidden = false;
  route();
}

// ---- pages ----

function route() {
  const match = window.location.pathname.match(/^\/console\/([^/]+)\/?$/);
  if (match) {
    openConsole(decodeURIComponent(match[1]));
  } else {
    openCollectors();
  }
}

async function openCollectors() {
  showSection('collectors');
  $('collectors-error').textContent = '';
  let answer;
  try {
    answer = await call('/api/collectors');
  } catch (failure) {
    report(failure, $('collectors-error'));
    return;
  }
  const collectors = answer.collectors;
  if (collectors.length === 1) {
    window.location.replace(consoleUrl(collectors[0].location));
    return;
  }
  $('collectors-empty').hidden = collectors.length !== 0;
  const items = collectors.map((collector) => {
    const item = document.createElement('li');
    const link = document.createElement('a');
    link.href = consoleUrl(collector.location);
    link.textContent = collector.location;
    const count = document.createElement('span');
    count.className = 'muted';
    count.textContent = ` ${collector.event_count} events`;
    item.append(link, count);
    return item;
  });
  $('collectors-list').replaceChildren(...items);
}

function consoleUrl(location, filters) {
  const query = filters && filters.toString();
  return `/console/${encodeURIComponent(location)}${query ? `?${query}` : ''}`;
}

async function openConsole(location) {
  state.location = location;
  document.title = `qtrail · ${location}`;
  $('location-name').textContent = location;
  $('location-name').hidden = false;
  const fromUrl = new URLSearchParams(window.location.search);
  state.filters = new URLSearchParams();
  for (const name of FILTER_NAMES) {
    const value = fromUrl.get(name);
    if (value) {
      state.filters.set(name, value);
    }
  }
  fillFilterForm();
  showSection('console');
  loadAlerts();
  await reload();
}

// ---- filters ----

/** Returns the API form of a datetime-local value, which the console reads as UTC. */
function inputToTime(value) {
  return value.length === 16 ? `${value}:00Z` : `${value}Z`;
}

/** Returns the datetime-local form of an RFC 3339 UTC time. */
function timeToInput(value) {
  return value.replace(/Z$/, '').replace(/\.\d+$/, '').slice(0, 19);
}

function fillFilterForm() {
  const form = $('filters');
  for (const name of FILTER_NAMES) {
    const value = state.filters.get(name) || '';
    form.elements[name].value = TIME_FILTERS.has(name) && value ? timeToInput(value) : value;
  }
}

function readFilterForm() {
  const form = $('filters');
  const filters = new URLSearchParams();
  for (const name of FILTER_NAMES) {
    const value = form.elements[name].value.trim();
    if (value) {
      filters.set(name, TIME_FILTERS.has(name) ? inputToTime(value) : value);
    }
  }
  return filters;
}

/** Applies `filters`: keeps them in the address (never a secret there), back to the first page. */
async function applyFilters(filters) {
  state.filters = filters;
  fillFilterForm();
  window.history.replaceState(null, '', consoleUrl(state.location, filters));
  await reload();
}

// ---- the list ----

/** Loads the first page again and restarts the live view if it is on. */
async function reload() {
  state.pageTokens = [''];
  state.pageIndex = 0;
  stopLive();
  loadTimeline();
  await loadPage();
  if ($('live').checked && state.pageLoaded) {
    startLive();
  }
}

async function loadPage() {
  const generation = ++state.generation;
  state.pageLoaded = false;
  $('list-error').textContent = '';
  const params = new URLSearchParams(state.filters);
  params.set('page_size', String(PAGE_SIZE));
  const token = state.pageTokens[state.pageIndex];
  if (token) {
    params.set('page_token', token);
  }
  let page;
  try {
    page = await call(`${locationBase()}/events?${params}`);
  } catch (failure) {
    if (generation === state.generation) {
      renderRows([]);
      report(failure, $('list-error'));
    }
    return;
  }
  if (generation !== state.generation) {
    return;
  }
  state.headSeq = page.head_seq;
  state.pageLoaded = true;
  state.pageTokens[state.pageIndex + 1] = page.next_page_token;
  renderRows(page.events);
  $('newer').disabled = state.pageIndex === 0;
  $('older').disabled = !page.next_page_token;
  $('page-label').textContent = `page ${state.pageIndex + 1}`;
  updateExportLinks();
}

function renderRows(events) {
  state.shown = new Set(events.map((event) => event.location_seq));
  $('event-rows').replaceChildren(...events.map(eventRow));
  $('no-events').hidden = events.length !== 0;
}

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) {
    td.className = className;
  }
  return td;
}

function badge(text, kind) {
  const td = document.createElement('td');
  const span = document.createElement('span');
  span.className = `badge ${kind}-${text}`;
  span.textContent = text;
  td.append(span);
  return td;
}

/**
 * Returns a short label for a target without a name, from its CRN
 * (`crn:v1:bluemix:public:quantum-computing:LOCATION:a/ACCOUNT:INSTANCE:TYPE:ID`): `job ID`,
 * `program ID` or `instance INSTANCE`. The whole CRN stays in the cell's tooltip and the detail.
 */
function targetLabel(crn) {
  const segments = crn.split(':');
  if (segments.length !== 10 || segments[0] !== 'crn') {
    return crn;
  }
  return segments[8] ? `${segments[8]} ${segments[9]}` : `instance ${segments[7]}`;
}

/** Returns the table row of an event. */
function eventRow(event) {
  const row = document.createElement('tr');
  row.dataset.seq = String(event.location_seq);
  row.classList.add(`row-severity-${event.severity}`, `row-outcome-${event.outcome}`);
  if (event.location_seq === state.selectedSeq) {
    row.classList.add('selected');
  }

  const open = document.createElement('button');
  open.type = 'button';
  open.className = 'seq';
  open.textContent = String(event.location_seq);
  open.title = 'Show this event';
  const seqCell = document.createElement('td');
  seqCell.append(open);

  const initiator = cell(event.initiator_name || event.initiator_id, 'initiator');
  initiator.title = event.initiator_id;
  const target = cell(event.target_name || targetLabel(event.target_id), 'target');
  target.title = event.target_id;

  row.append(
    seqCell,
    cell(event.time.replace('T', ' ').replace('Z', ''), 'time'),
    cell(event.action, 'action'),
    badge(event.outcome, 'outcome'),
    badge(event.severity, 'severity'),
    initiator,
    target,
    cell(event.message, 'message'),
  );
  row.addEventListener('click', () => openDetail(event.location_seq));
  return row;
}

function updateExportLinks() {
  for (const [id, format] of [['export-at', 'at-json'], ['export-cadf', 'cadf-json']]) {
    const params = new URLSearchParams(state.filters);
    params.set('format', format);
    $(id).href = `${locationBase()}/export?${params}`;
  }
}

// ---- live ----

function startLive() {
  stopLive();
  if (state.pageIndex !== 0 || !state.pageLoaded) {
    // Live continues the newest page from its head: without that page it would not know where.
    $('live-status').textContent = state.pageLoaded ? 'live shows the newest page only' : 'live needs the list first';
    $('live').checked = false;
    return;
  }
  const params = new URLSearchParams(state.filters);
  params.set('from_seq', String(state.headSeq + 1));
  const source = new EventSource(`${locationBase()}/live?${params}`);
  state.live = source;
  $('live-status').textContent = 'connecting…';
  source.addEventListener('open', () => {
    $('live-status').textContent = 'live: new events appear at the top';
  });
  source.addEventListener('stored', (message) => prependEvent(JSON.parse(message.data)));
  source.addEventListener('failure', (message) => {
    const failure = JSON.parse(message.data);
    $('list-error').textContent = `Live view stopped: ${failure.error}`;
    stopLive();
    $('live').checked = false;
  });
  source.addEventListener('error', async () => {
    if (source.readyState !== EventSource.CLOSED) {
      // The browser reconnects by itself and resumes after the last event it saw.
      $('live-status').textContent = 'reconnecting…';
      return;
    }
    $('live-status').textContent = 'live view closed';
    $('live').checked = false;
    try {
      await call('/api/session');
    } catch (failure) {
      report(failure, $('list-error'));
    }
  });
}

function stopLive() {
  if (state.live) {
    state.live.close();
    state.live = null;
  }
  $('live-status').textContent = '';
}

function prependEvent(event) {
  if (state.shown.has(event.location_seq)) {
    return;
  }
  state.shown.add(event.location_seq);
  state.headSeq = Math.max(state.headSeq, event.location_seq);
  timelineSawEvent();
  const row = eventRow(event);
  row.classList.add('new');
  const rows = $('event-rows');
  rows.prepend(row);
  while (rows.children.length > MAX_LIVE_ROWS) {
    rows.lastElementChild.remove();
  }
  $('no-events').hidden = true;
}

// ---- detail ----

function fact(list, name, value) {
  const term = document.createElement('dt');
  term.textContent = name;
  const description = document.createElement('dd');
  description.textContent = value;
  list.append(term, description);
}

async function openDetail(seq) {
  state.selectedSeq = seq;
  for (const row of $('event-rows').children) {
    row.classList.toggle('selected', row.dataset.seq === String(seq));
  }
  $('detail').hidden = false;
  $('detail-error').textContent = '';
  $('detail-title').textContent = `Event #${seq}`;
  let event;
  try {
    event = await call(`${locationBase()}/events/${encodeURIComponent(String(seq))}`);
  } catch (failure) {
    report(failure, $('detail-error'));
    return;
  }
  if (state.selectedSeq !== seq) {
    return;
  }
  const facts = $('detail-facts');
  facts.replaceChildren();
  fact(facts, 'location_seq', String(event.location_seq));
  fact(facts, 'Event id', event.id);
  fact(facts, 'Time', event.time);
  fact(facts, 'Action', event.action);
  fact(facts, 'Outcome', event.outcome);
  fact(facts, 'Severity', event.severity);
  fact(facts, 'Reason', event.reason_for_failure ? `${event.reason_code} ${event.reason_for_failure}` : String(event.reason_code));
  fact(facts, 'Initiator', `${event.initiator_name} (${event.initiator_id})`);
  fact(facts, 'Target name', event.target_name);
  fact(facts, 'Target CRN', event.target_id);
  fact(facts, 'Correlation id', event.correlation_id);
  fact(facts, 'Chain hash', event.chain_hash);
  fact(facts, 'Previous hash', event.prev_chain_hash);
  fact(facts, 'Publisher', `${event.publisher.id} · epoch ${event.publisher.epoch} · seq ${event.publisher.seq}`
    + (event.publisher.credential ? ` · token ${event.publisher.credential}` : ''));
  fact(facts, 'Received', event.receive_time);
  $('detail-at').textContent = event.at_json;
  $('detail-cadf').textContent = event.cadf_json;

  const correlation = $('detail-correlation');
  correlation.hidden = !event.correlation_id;
  if (event.correlation_id) {
    const filters = new URLSearchParams({ correlation_id: event.correlation_id });
    correlation.href = consoleUrl(state.location, filters);
    correlation.onclick = (click) => {
      click.preventDefault();
      closeDetail();
      applyFilters(filters);
    };
  }
}

function closeDetail() {
  $('detail').hidden = true;
  state.selectedSeq = null;
  for (const row of $('event-rows').querySelectorAll('tr.selected')) {
    row.classList.remove('selected');
  }
}

// ---- start ----

async function boot() {
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  $('filters').addEventListener('submit', (submit) => {
    submit.preventDefault();
    applyFilters(readFilterForm());
  });
  $('clear').addEventListener('click', () => applyFilters(new URLSearchParams()));
  $('older').addEventListener('click', () => {
    stopLive();
    $('live').checked = false;
    state.pageIndex += 1;
    loadPage();
  });
  $('newer').addEventListener('click', () => {
    state.pageIndex = Math.max(0, state.pageIndex - 1);
    loadPage();
  });
  $('live').addEventListener('change', () => {
    if (!$('live').checked) {
      stopLive();
    } else if (state.pageIndex !== 0) {
      reload();
    } else {
      startLive();
    }
  });
  $('verify').addEventListener('click', verifyChain);
  $('detail-close').addEventListener('click', closeDetail);
  startTimeline();
  startAlerts();
  document.addEventListener('keydown', (key) => {
    if (key.key === 'Escape' && !$('detail').hidden) {
      closeDetail();
    }
  });

  try {
    signedIn(await call('/api/session'));
  } catch (failure) {
    if (failure instanceof ApiFailure && failure.status === 401) {
      showSignIn();
    } else {
      showSection('sign-in');
      $('sign-in-error').textContent = failure instanceof ApiFailure ? failure.message : String(failure);
    }
  }
}

boot();
