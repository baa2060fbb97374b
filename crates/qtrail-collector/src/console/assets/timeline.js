// The console's timeline: the matching events per bucket (a minute, or wider for long windows)
// by outcome, as an inline SVG drawn here: no library, nothing fetched but the API's counts.
// Alert firings in the window are marked on it. Dragging across the chart, or clicking a bar,
// narrows the time filter to the buckets it covers. Loaded before console.js, whose helpers ($, call, report, state, applyFilters) it uses
// once the page runs.
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';
// The chart's own coordinates; the SVG stretches them to the page's width.
const CHART_WIDTH = 1000;
const CHART_HEIGHT = 120;
// Stacked from the bottom, so failures stand on the axis where they are seen first.
const OUTCOMES = ['failure', 'pending', 'success'];
// Without an end time the window follows the clock: redraw it now and then.
const TIMELINE_REFRESH_MS = 30000;
// Live events redraw the chart at most this often, so a burst costs one count, not one per event.
const TIMELINE_LIVE_DELAY_MS = 2000;

const timeline = {
  data: null,
  // Increases with every load; an answer to an older load is dropped.
  generation: 0,
  // The buckets under a drag in progress: { from, to }.
  drag: null,
  // The redraw a live event scheduled.
  scheduled: null,
};

/** Counts the events of the current filter again and redraws the chart. */
async function loadTimeline() {
  const generation = ++timeline.generation;
  $('timeline-error').textContent = '';
  let data;
  try {
    data = await call(`${locationBase()}/timeline?${state.filters}`);
  } catch (failure) {
    if (generation === timeline.generation) {
      drawTimeline(null);
      report(failure, $('timeline-error'));
    }
    return;
  }
  // A redraw would drop the drag in progress; the drag's end loads the chart anew anyway.
  if (generation === timeline.generation && !timeline.drag) {
    drawTimeline(data);
  }
}

/** Redraws the chart soon: a live view saw a new event. */
function timelineSawEvent() {
  if (timeline.scheduled === null) {
    timeline.scheduled = setTimeout(() => {
      timeline.scheduled = null;
      loadTimeline();
    }, TIMELINE_LIVE_DELAY_MS);
  }
}

/** Forgets the chart (on sign-out). */
function clearTimeline() {
  timeline.generation += 1;
  drawTimeline(null);
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) {
    element.setAttribute(key, String(value));
  }
  return element;
}

function bucketTotal(bucket) {
  return bucket.success + bucket.failure + bucket.pending;
}

/** Returns a bucket width in words: "1 minute", "15 minutes", "6 hours", "1 day". */
function widthLabel(seconds) {
  for (const [unit, size] of [['week', 604800], ['day', 86400], ['hour', 3600], ['minute', 60]]) {
    if (seconds % size === 0) {
      const count = seconds / size;
      return `${count} ${unit}${count === 1 ? '' : 's'}`;
    }
  }
  return `${seconds} seconds`;
}

/** Returns the bars of one bucket, stacked by outcome. */
function bucketBars(bucket, index, step, max) {
  const bars = [];
  let top = CHART_HEIGHT;
  for (const outcome of OUTCOMES) {
    const count = bucket[outcome];
    if (count === 0) {
      continue;
    }
    // At least a sliver, so that one event beside thousands still shows.
    const height = Math.max(1.5, (count / max) * (CHART_HEIGHT - 4));
    top -= height;
    const bar = svgElement('rect', {
      x: index * step + step * 0.1,
      y: top,
      width: step * 0.8,
      height,
      class: `tl-bar tl-${outcome}`,
    });
    bar.dataset.outcome = outcome;
    bar.dataset.count = String(count);
    bar.dataset.bucket = String(index);
    const title = svgElement('title', {});
    title.textContent = `${bucket.start.replace('T', ' ').replace('Z', '')} UTC: ${count} ${outcome}`;
    bar.append(title);
    bars.push(bar);
  }
  return bars;
}

/** Returns the mark of an alert firing: a dashed line at its time with a dot on top. */
function firingMark(firing, data) {
  const origin = Date.parse(data.buckets[0].start);
  const span = data.buckets.length * data.bucket_seconds * 1000;
  const x = ((Date.parse(firing.time) - origin) / span) * CHART_WIDTH;
  const kind = `tl-${firing.kind}`;
  const line = svgElement('line', { x1: x, y1: 8, x2: x, y2: CHART_HEIGHT, class: `tl-firing ${kind}` });
  const head = svgElement('circle', { cx: x, cy: 5, r: 4, class: `tl-firing-head ${kind}` });
  head.dataset.rule = firing.rule;
  head.dataset.number = String(firing.number);
  const title = svgElement('title', {});
  title.textContent = `${firing.time.replace('T', ' ').replace(/(\.\d+)?Z$/, '')} UTC: rule ${firing.rule} ${firing.kind}, ${firing.count} events`;
  head.append(title);
  return [line, head];
}

/** Draws `data` (null: an empty chart). */
function drawTimeline(data) {
  timeline.data = data;
  timeline.drag = null;
  const shapes = [svgElement('line', { x1: 0, y1: CHART_HEIGHT, x2: CHART_WIDTH, y2: CHART_HEIGHT, class: 'tl-axis' })];
  if (data && data.buckets.length > 0) {
    const step = CHART_WIDTH / data.buckets.length;
    const max = Math.max(1, ...data.buckets.map(bucketTotal));
    data.buckets.forEach((bucket, index) => shapes.push(...bucketBars(bucket, index, step, max)));
    for (const firing of data.firings) {
      shapes.push(...firingMark(firing, data));
    }
  }
  const selection = svgElement('rect', { id: 'timeline-selection', x: 0, y: 0, width: 0, height: CHART_HEIGHT });
  selection.classList.add('tl-selection');
  shapes.push(selection);
  $('timeline-chart').replaceChildren(...shapes);
  const utc = (time) => time.replace('T', ' ').replace(/(\.\d+)?Z$/, '');
  $('timeline-start').textContent = data ? utc(data.start) : '';
  $('timeline-end').textContent = data ? utc(data.end) : '';
  $('timeline-summary').textContent = data
    ? `${data.counted} events, ${widthLabel(data.bucket_seconds)} per bar`
      + (data.firings.length > 0 ? `, ${data.firings.length} alert firings marked` : '')
      + (data.complete ? '' : ' (counted the newest only: narrow the filter for all)')
    : '';
}

/** Returns the bucket under a pointer at `clientX`. */
function bucketAt(clientX) {
  const box = $('timeline-chart').getBoundingClientRect();
  const count = timeline.data.buckets.length;
  const index = Math.floor(((clientX - box.left) / box.width) * count);
  return Math.min(count - 1, Math.max(0, index));
}

function showSelection() {
  const selection = $('timeline-selection');
  if (!timeline.drag) {
    selection.setAttribute('width', '0');
    return;
  }
  const step = CHART_WIDTH / timeline.data.buckets.length;
  const low = Math.min(timeline.drag.from, timeline.drag.to);
  const high = Math.max(timeline.drag.from, timeline.drag.to);
  selection.setAttribute('x', String(low * step));
  selection.setAttribute('width', String((high - low + 1) * step));
}

/** Returns milliseconds since the epoch as an RFC 3339 time in whole seconds, rounded `how`. */
function wholeSeconds(millis, how) {
  return new Date(how(millis / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

/** Sets the time filter to the buckets the drag covered, within the window shown. */
function finishDrag() {
  const { data, drag } = timeline;
  timeline.drag = null;
  const low = Math.min(drag.from, drag.to);
  const high = Math.max(drag.from, drag.to);
  const width = data.bucket_seconds * 1000;
  const start = Math.max(Date.parse(data.buckets[low].start), Date.parse(data.start));
  const end = Math.min(Date.parse(data.buckets[high].start) + width, Date.parse(data.end));
  const filters = new URLSearchParams(state.filters);
  filters.set('start_time', wholeSeconds(start, Math.floor));
  filters.set('end_time', wholeSeconds(end, Math.ceil));
  applyFilters(filters);
}

function startTimeline() {
  const chart = $('timeline-chart');
  chart.addEventListener('pointerdown', (pointer) => {
    if (!timeline.data || timeline.data.buckets.length === 0 || pointer.button !== 0) {
      return;
    }
    const bucket = bucketAt(pointer.clientX);
    timeline.drag = { from: bucket, to: bucket };
    chart.setPointerCapture(pointer.pointerId);
    showSelection();
  });
  chart.addEventListener('pointermove', (pointer) => {
    if (timeline.drag) {
      timeline.drag.to = bucketAt(pointer.clientX);
      showSelection();
    }
  });
  chart.addEventListener('pointerup', (pointer) => {
    if (timeline.drag) {
      timeline.drag.to = bucketAt(pointer.clientX);
      finishDrag();
    }
  });
  chart.addEventListener('pointercancel', () => {
    timeline.drag = null;
    showSelection();
  });
  setInterval(() => {
    if (state.location && !$('console').hidden && !state.filters.has('end_time') && !document.hidden) {
      loadTimeline();
    }
  }, TIMELINE_REFRESH_MS);
}
