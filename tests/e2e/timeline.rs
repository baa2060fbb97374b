//! The console's timeline in a real browser (headless Chromium through WebDriver, the real
//! collector and runtime binaries): it draws the events of the filter as bars whose counts match
//! the list, dragging across it sets the time filter, which narrows the list, and a live event
//! is counted without a reload.

use serde_json::{Value, json};

use crate::console::{Trail, rows, save_screenshot, sign_in, wait_for_script};
use crate::webdriver::{Browser, Chromedriver};

/// Returns the drawn counts by outcome: `{ success, failure, pending }`.
async fn drawn(browser: &Browser) -> Value {
    let script = "const sums = { success: 0, failure: 0, pending: 0 }; for (const bar of document.querySelectorAll('#timeline-chart rect.tl-bar')) { sums[bar.dataset.outcome] += Number(bar.dataset.count); } return sums;";
    browser.execute(script, json!([])).await
}

/// Returns the viewport point `(x, y)` at `fraction` of the chart's width, halfway down.
async fn chart_point(browser: &Browser, fraction: f64) -> (i64, i64) {
    let script = "const b = document.getElementById('timeline-chart').getBoundingClientRect(); return [Math.round(b.left + b.width * arguments[0]), Math.round(b.top + b.height / 2)];";
    let point = browser.execute(script, json!([fraction])).await;
    (point[0].as_i64().unwrap(), point[1].as_i64().unwrap())
}

/// Returns the filter's time range as the page's address holds it, once a drag has set both.
async fn dragged_range(browser: &Browser) -> (String, String) {
    let script = "const q = new URLSearchParams(location.search); return q.get('start_time') && q.get('end_time') ? [q.get('start_time'), q.get('end_time')] : null;";
    let range = wait_for_script(browser, "the drag to set the time filter", script, json!([])).await;
    (range[0].as_str().unwrap().to_owned(), range[1].as_str().unwrap().to_owned())
}

/// Returns the list's time column as RFC 3339 with milliseconds (the list shows
/// `YYYY-MM-DD HH:MM:SS.mmm`, UTC), which orders as text like the times it names.
fn row_time(row: &[String]) -> String {
    format!("{}Z", row[1].replace(' ', "T"))
}

/// Returns a filter time in whole seconds (`…:SSZ`) with milliseconds, to order with [`row_time`].
fn with_millis(time: &str) -> String {
    assert!(time.len() == 20 && time.ends_with('Z'), "a time in whole seconds: {time}");
    format!("{}.000Z", &time[..19])
}

#[tokio::test]
async fn the_timeline_draws_the_events_a_drag_sets_the_time_filter_and_live_events_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut trail = Trail::start(dir.path()).await;
    let program = trail.create_program("bell").await;
    let job = trail.run_job(&program).await;
    assert_eq!(trail.cancel(&job, "cancel-finished").await, tonic::Code::FailedPrecondition);
    assert_eq!(trail.list_programs_without_a_valid_key().await, tonic::Code::Unauthenticated);
    trail.wait_stored().await;
    let total = trail.calls;

    let driver = Chromedriver::start(dir.path()).await;
    let browser = driver.browser(&dir.path().join("chromium-profile")).await;
    sign_in(&browser, &trail).await;
    let check = "return document.querySelectorAll('#event-rows tr').length === arguments[0];";
    wait_for_script(&browser, "every event in the list", check, json!([total])).await;
    let listed = rows(&browser).await;

    // The bars count what the list shows, outcome by outcome.
    let count = |outcome: &str| listed.iter().filter(|row| row[3] == outcome).count();
    let expected = json!({ "success": count("success"), "failure": count("failure"), "pending": count("pending") });
    assert!(count("failure") >= 2, "a refused cancel and a refused key");
    let sums = "const n = [...document.querySelectorAll('#timeline-chart rect.tl-bar')].reduce((s, b) => s + Number(b.dataset.count), 0); return n === arguments[0];";
    wait_for_script(&browser, "the timeline's bars", sums, json!([total])).await;
    assert_eq!(drawn(&browser).await, expected);
    let summary = browser.text(&browser.wait_for("#timeline-summary").await).await;
    assert_eq!(summary, format!("{total} events, 1 minute per bar"));
    save_screenshot(&browser, "console-timeline.png").await;

    // A drag across the empty first quarter of the last hour: no event is that old.
    browser.drag(chart_point(&browser, 0.01).await, chart_point(&browser, 0.25).await).await;
    let (start, end) = dragged_range(&browser).await;
    let oldest = row_time(&listed[listed.len() - 1]);
    assert!(start < end && with_millis(&end) <= oldest, "{start} to {end}, before {oldest}");
    wait_for_script(&browser, "the list to narrow", "return !document.getElementById('no-events').hidden;", json!([]))
        .await;
    assert!(rows(&browser).await.is_empty());
    let inputs = "const f = document.getElementById('filters'); return [f.elements.start_time.value, f.elements.end_time.value];";
    let shown = browser.execute(inputs, json!([])).await;
    let shown: Vec<String> = serde_json::from_value(shown).expect("two values");
    // A datetime-local input leaves out seconds of zero.
    let minutes = |time: &str| time[..19].strip_suffix(":00").unwrap_or(&time[..19]).to_owned();
    assert_eq!(shown, [minutes(&start), minutes(&end)], "the time inputs show the dragged range");
    wait_for_script(
        &browser,
        "the chart of the range",
        "return document.getElementById('timeline-summary').textContent.startsWith('0 events');",
        json!([]),
    )
    .await;

    // Back to everything, then a drag over the newest bar: the list keeps what it covers.
    browser.click(&browser.wait_for("#clear").await).await;
    wait_for_script(&browser, "the whole list again", check, json!([total])).await;
    wait_for_script(&browser, "the bars again", sums, json!([total])).await;
    let newest_bar = "const bars = [...document.querySelectorAll('#timeline-chart rect.tl-bar')]; const b = bars[bars.length - 1].getBoundingClientRect(); return [Math.round(b.left + b.width / 2), Math.round(b.top + b.height / 2)];";
    let bar = browser.execute(newest_bar, json!([])).await;
    let (x, y) = (bar[0].as_i64().unwrap(), bar[1].as_i64().unwrap());
    browser.drag((x - 1, y), (x + 1, y)).await;
    let (start, end) = dragged_range(&browser).await;
    let (from, until) = (with_millis(&start), with_millis(&end));
    let kept: Vec<&Vec<String>> =
        listed.iter().filter(|row| (from.as_str()..until.as_str()).contains(&row_time(row).as_str())).collect();
    assert!(!kept.is_empty(), "the newest bar holds events ({start} to {end})");
    wait_for_script(&browser, "the list of the newest bar", check, json!([kept.len()])).await;
    let seqs: Vec<String> = rows(&browser).await.into_iter().map(|row| row[0].clone()).collect();
    assert_eq!(seqs, kept.iter().map(|row| row[0].clone()).collect::<Vec<_>>());

    // Live, a new event is counted without a reload.
    browser.click(&browser.wait_for("#clear").await).await;
    wait_for_script(&browser, "the bars again", sums, json!([total])).await;
    browser.click(&browser.wait_for("#live").await).await;
    let connected = "return document.getElementById('live-status').textContent.startsWith('live:');";
    wait_for_script(&browser, "the live view", connected, json!([])).await;
    trail.list_programs().await;
    wait_for_script(&browser, "the new event in the chart", sums, json!([total + 1])).await;
    browser.close().await;
}
