// The console's Alerts view: the location's rules and its newest firings with each webhook
// delivery's state. It is polled while the page is open, because a delivery changes state on
// its own (retries, then delivered or failed), which no event on the page would announce.
// Loaded before console.js, whose helpers ($, call, report, cell, badge, state, openDetail) it
// uses once the page runs, and timeline.js's timelineSawEvent.
'use strict';

const ALERTS_REFRESH_MS = 5000;

const alerts = {
  // Increases with every load; an answer to an older load is dropped.
  generation: 0,
  // The newest firing shown (null before the first answer): a newer one redraws the timeline,
  // which marks firings.
  newest: null,
};

/** Reads the rules and firings again and shows them. */
async function loadAlerts() {
  const generation = ++alerts.generation;
  let answer;
  try {
    answer = await call(`${locationBase()}/alerts`);
  } catch (failure) {
    if (generation === alerts.generation) {
      report(failure, $('alerts-error'));
    }
    return;
  }
  if (generation !== alerts.generation) {
    return;
  }
  $('alerts-error').textContent = '';
  const newest = answer.firings.length > 0 ? answer.firings[0].number : 0;
  if (alerts.newest !== null && newest !== alerts.newest) {
    timelineSawEvent();
  }
  alerts.newest = newest;
  renderRules(answer.rules);
  renderFirings(answer.firings);
}

/** Forgets what the view showed (on sign-out). */
function clearAlerts() {
  alerts.generation += 1;
  alerts.newest = null;
  $('rule-rows').replaceChildren();
  $('firing-rows').replaceChildren();
}

function renderRules(rules) {
  $('rules-empty').hidden = rules.length !== 0;
  $('rules').hidden = rules.length === 0;
  $('rule-rows').replaceChildren(...rules.map((rule) => {
    const row = document.createElement('tr');
    row.dataset.rule = rule.name;
    row.append(
      cell(rule.name, 'rule-name'),
      cell(rule.filter),
      cell(rule.trigger),
      cell(rule.cooldown || '—'),
      cell(rule.webhook || 'watch only'),
      cell(String(rule.cursor)),
    );
    return row;
  }));
}

/** Returns a cell of buttons that open the detail of each of a firing's events. */
function positionsCell(seqs) {
  const td = document.createElement('td');
  for (const seq of seqs) {
    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'seq';
    open.textContent = `#${seq}`;
    open.title = 'Show this event';
    open.addEventListener('click', () => openDetail(seq));
    td.append(open, ' ');
  }
  return td;
}

function renderFirings(firings) {
  $('firings-empty').hidden = firings.length !== 0;
  $('firings').hidden = firings.length === 0;
  $('firing-rows').replaceChildren(...firings.map((firing) => {
    const row = document.createElement('tr');
    row.dataset.number = String(firing.number);
    row.dataset.rule = firing.rule;
    const delivery = badge(firing.delivery, 'delivery');
    delivery.title = firing.webhook_id ? `webhook-id ${firing.webhook_id}` : 'the rule has no webhook';
    row.append(
      cell(String(firing.number)),
      cell(firing.time.replace('T', ' ').replace(/(\.\d+)?Z$/, ''), 'time'),
      cell(firing.rule, 'rule-name'),
      badge(firing.kind, 'firing'),
      cell(String(firing.count)),
      delivery,
      positionsCell(firing.seqs),
    );
    return row;
  }));
}

function startAlerts() {
  setInterval(() => {
    if (state.location && !$('console').hidden && !document.hidden) {
      loadAlerts();
    }
  }, ALERTS_REFRESH_MS);
}
