//! The console's Alerts view in a real browser (headless Chromium through WebDriver, the real
//! collector and runtime binaries, a real webhook receiver on port 0): the rules, then firings
//! that appear without a reload as calls are made, each with its delivery's state, and marks
//! of those firings on the timeline.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use qtrail_proto::qtrail::audit::v1 as audit;
use qtrail_proto::qtrail::audit::v1::alert_service_client::AlertServiceClient;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::console::{ADMIN_TOKEN, Trail, authed, save_screenshot, sign_in, wait_for_script};
use crate::webdriver::Chromedriver;

/// Starts an HTTP receiver on port 0 that answers every request 204; returns its URL.
async fn receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // One request per connection: read its head and body, answer, close.
                let mut read = Vec::new();
                let mut buffer = [0; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                    read.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&read);
                    let Some(head_end) = text.find("\r\n\r\n") else { continue };
                    let length = text[..head_end]
                        .lines()
                        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_owned))
                        .and_then(|value| value.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if read.len() >= head_end + 4 + length {
                        let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
                        return;
                    }
                }
            });
        }
    });
    url
}

fn rule(
    name: &str,
    filter: audit::EventFilter,
    trigger: audit::alert_trigger::Kind,
    webhook: Option<&str>,
) -> audit::AlertRule {
    audit::AlertRule {
        location: "us-east".into(),
        name: name.into(),
        filter: Some(filter),
        trigger: Some(audit::AlertTrigger { kind: Some(trigger) }),
        webhook: webhook.map(|url| audit::Webhook {
            url: url.into(),
            secret: format!("whsec_{}", STANDARD.encode([9u8; 32])),
            has_secret: false,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_alerts_view_shows_rules_and_firings_with_their_deliveries_as_they_happen() {
    let dir = tempfile::tempdir().unwrap();
    let mut trail = Trail::start(dir.path()).await;
    let hook = receiver().await;
    let refused = audit::EventFilter {
        action: "quantum-computing.job.cancel".into(),
        outcome: audit::Outcome::Failure as i32,
        ..Default::default()
    };
    let reads = audit::EventFilter { action: "quantum-computing.program.read".into(), ..Default::default() };
    let threshold = audit::ThresholdTrigger {
        count: 2,
        window: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        group_by: audit::GroupBy::Initiator as i32,
    };
    let rules = [
        rule("refused-cancels", refused, audit::alert_trigger::Kind::Each(audit::EachTrigger {}), Some(&hook)),
        rule("program-reads", reads, audit::alert_trigger::Kind::Threshold(threshold), None),
    ];
    let mut alerts = AlertServiceClient::new(trail.collector_channel.clone());
    for rule in rules {
        let request = authed(audit::CreateAlertRuleRequest { rule: Some(rule) }, ADMIN_TOKEN);
        alerts.create_alert_rule(request).await.expect("rule created");
    }

    let driver = Chromedriver::start(dir.path()).await;
    let browser = driver.browser(&dir.path().join("chromium-profile")).await;
    sign_in(&browser, &trail).await;
    let rules_shown =
        "return [...document.querySelectorAll('#rule-rows tr')].map(r => [...r.cells].map(c => c.textContent));";
    let listed = wait_for_script(
        &browser,
        "the rules",
        &format!("const r = (() => {{ {rules_shown} }})(); return r.length === 2 ? r : null;"),
        json!([]),
    )
    .await;
    let port = hook.split(':').nth(2).unwrap().split('/').next().unwrap();
    // The last column is each rule's cursor: past the trail's own use so far (the rules'
    // creation, the sign-in), which no rule matches; no runtime event exists yet.
    let mut listed: Vec<Vec<String>> = serde_json::from_value(listed).unwrap();
    for row in &mut listed {
        let cursor = row.pop().unwrap();
        assert!(cursor.parse::<u64>().is_ok_and(|cursor| cursor <= 3), "{cursor}");
    }
    assert_eq!(
        listed,
        [
            ["program-reads", "quantum-computing.program.read", "2 in 1m per initiator", "—", "watch only"]
                .map(String::from)
                .to_vec(),
            vec![
                "refused-cancels".into(),
                "quantum-computing.job.cancel · failure".into(),
                "each event".into(),
                "—".into(),
                format!("http://127.0.0.1:{port}/…"),
            ],
        ]
    );
    assert!(
        !browser.execute("return document.getElementById('firings-empty').hidden;", json!([])).await.as_bool().unwrap()
    );
    browser.execute("window.__sameDocument = 'still here';", json!([])).await;

    // Calls after the page was loaded: two refused cancels, two program reads.
    let program = trail.create_program("bell").await;
    let job = trail.run_job(&program).await;
    assert_eq!(trail.cancel(&job, "cancel-finished").await, tonic::Code::FailedPrecondition);
    assert_eq!(trail.cancel("no-such-job", "cancel-missing").await, tonic::Code::NotFound);
    trail.list_programs().await;
    trail.list_programs().await;
    trail.wait_stored().await;

    let firings = "const rows = [...document.querySelectorAll('#firing-rows tr')].map(r => [r.dataset.rule, r.cells[3].textContent, r.cells[5].textContent]); const done = rows.filter(r => r[0] === 'refused-cancels' && r[2] === 'delivered').length === 2 && rows.some(r => r[0] === 'program-reads'); return done ? rows : null;";
    let rows = wait_for_script(&browser, "the firings and their deliveries", firings, json!([])).await;
    for row in rows.as_array().unwrap() {
        let expected = if row[0] == "refused-cancels" { "delivered" } else { "none" };
        assert_eq!((row[1].as_str(), row[2].as_str()), (Some("fired"), Some(expected)), "{row}");
    }
    let same = browser.execute("return window.__sameDocument;", json!([])).await;
    assert_eq!(same, "still here", "the view updated without a reload");

    // The timeline marks each firing, at its time.
    let marks = "const n = document.querySelectorAll('#timeline-chart circle.tl-firing-head').length; return n === arguments[0];";
    wait_for_script(&browser, "the firings on the timeline", marks, json!([rows.as_array().unwrap().len()])).await;
    let marked_rules = browser
        .execute("return [...new Set([...document.querySelectorAll('#timeline-chart circle.tl-firing-head')].map(c => c.dataset.rule))].sort();", json!([]))
        .await;
    assert_eq!(marked_rules, json!(["program-reads", "refused-cancels"]));
    save_screenshot(&browser, "console-alerts.png").await;
    browser.close().await;
}
