//! The report of a run: `report.json` (everything, history included) and `report.html`, a page a
//! person reads: the verdict and the replay command, a timeline of faults with throughput and
//! errors per second, and each violation with the operations and faults around it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::history::{Op, Outcome};
use crate::run::RunResult;

/// Writes `report.json` and `report.html` into `dir`.
pub fn write(dir: &Path, result: &RunResult) -> Result<()> {
    let json = serde_json::to_vec(result).context("encode the report")?;
    std::fs::write(dir.join("report.json"), json).context("write report.json")?;
    std::fs::write(dir.join("report.html"), html(result)).context("write report.html")?;
    Ok(())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}\
h1 .pass{color:#1a7f37}h1 .fail{color:#c62828}table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}\
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;white-space:pre-wrap}.v{border-left:4px solid #c62828;\
padding-left:1em;margin:1.5em 0}svg text{font:11px system-ui,sans-serif}";

fn kind_color(kind: &str) -> &'static str {
    match kind {
        "kill" => "#c62828",
        "pause" => "#1565c0",
        "restart" => "#2e7d32",
        "wipe" => "#6a1b9a",
        _ => "#ef6c00",
    }
}

fn html(result: &RunResult) -> String {
    let mut page = String::new();
    let verdict = if result.violations.is_empty() {
        "<span class=pass>no violation</span>".to_string()
    } else {
        format!("<span class=fail>{} violation(s)</span>", result.violations.len())
    };
    let _ = write!(
        page,
        "<!doctype html><html lang=en><meta charset=utf-8><title>Serv chaos run, seed {seed}</title>\
         <style>{STYLE}</style><h1>Chaos run, seed {seed}: {verdict}</h1>\
         <p>Replay exactly this schedule with:</p><pre>{replay}</pre>",
        seed = result.seed,
        replay = escape(&result.replay)
    );
    summary(&mut page, result);
    timeline(&mut page, result);
    faults(&mut page, result);
    violations(&mut page, result);
    if !result.notes.is_empty() {
        page.push_str("<h2>Notes</h2><ul>");
        for note in &result.notes {
            let _ = write!(page, "<li>{}</li>", escape(note));
        }
        page.push_str("</ul>");
    }
    page.push_str("<p>Node logs: ");
    for n in 1..=result.nodes.len() {
        let _ = write!(page, "<a href=\"nodes/n{n}.log\">n{n}.log</a> ");
    }
    page.push_str("· the whole history is in <a href=report.json>report.json</a>.</p></html>\n");
    page
}

fn summary(page: &mut String, result: &RunResult) {
    let s = &result.stats;
    let _ = write!(
        page,
        "<h2>Summary</h2><table><tr><th>nodes</th><td>{}</td></tr><tr><th>workload time</th><td>{:.1} s</td></tr>\
         <tr><th>faults injected</th><td>{}</td></tr><tr><th>operations recorded</th><td>{}</td></tr>\
         <tr><th>acknowledged S3 writes</th><td>{}</td></tr><tr><th>acknowledged messages</th><td>{}</td></tr>\
         <tr><th>deliveries</th><td>{}</td></tr><tr><th>final reads (key × node)</th><td>{}</td></tr></table>",
        result.nodes.len(),
        s.duration_ms as f64 / 1000.0,
        result.faults.len(),
        s.ops,
        s.acknowledged_writes,
        s.acknowledged_messages,
        s.deliveries,
        s.final_reads
    );
    page.push_str("<table><tr><th>operation</th><th>ok</th><th>fail</th><th>unknown</th></tr>");
    let mut kinds: Vec<_> = s.by_kind.iter().collect();
    kinds.sort_by_key(|(kind, _)| kind.as_str());
    for (kind, outcomes) in kinds {
        let count = |name: &str| outcomes.get(name).copied().unwrap_or(0);
        let _ = write!(
            page,
            "<tr><td>{kind}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            count("ok"),
            count("fail"),
            count("unknown")
        );
    }
    page.push_str("</table>");
}

/// Faults per node as bars, then ops/s (acknowledged, and failed or unknown) per second.
fn timeline(page: &mut String, result: &RunResult) {
    let end_ms = result
        .history
        .iter()
        .map(|op| op.complete_ms)
        .max()
        .unwrap_or(0)
        .max(result.stats.duration_ms)
        .max(1);
    let (width, left, row) = (1000.0, 40.0, 22.0);
    let x = |ms: u64| left + (width - left - 10.0) * ms as f64 / end_ms as f64;
    let nodes = result.nodes.len();
    let chart_top = row * nodes as f64 + 20.0;
    let chart_height = 140.0;
    let height = chart_top + chart_height + 30.0;
    let _ = write!(
        page,
        "<h2>Timeline</h2><svg role=img aria-label=\"faults per node and operations per second\" \
         viewBox=\"0 0 {width} {height}\" width=\"100%\">"
    );
    for n in 0..nodes {
        let y = row * n as f64 + 4.0;
        let _ = write!(
            page,
            "<text x=0 y={:.0}>n{}</text><line x1={left} x2={width} y1={:.0} y2={:.0} stroke=#ddd />",
            y + 13.0,
            n + 1,
            y + row / 2.0,
            y + row / 2.0
        );
    }
    for fault in &result.faults {
        let y = row * fault.node as f64 + 4.0;
        let (x0, x1) = (x(fault.start_ms), x(fault.end_ms).max(x(fault.start_ms) + 3.0));
        let _ = write!(
            page,
            "<rect x={x0:.1} y={y:.0} width={:.1} height={:.0} fill={} opacity=.8><title>{} n{} {}–{} ms: {}</title></rect>",
            x1 - x0,
            row - 6.0,
            kind_color(&fault.kind),
            fault.kind,
            fault.node + 1,
            fault.start_ms,
            fault.end_ms,
            escape(&fault.detail)
        );
        let _ = write!(page, "<text x={:.1} y={:.0} fill=#fff>{}</text>", x0 + 2.0, y + 12.0, fault.kind);
    }
    let seconds = (end_ms / 1000 + 1) as usize;
    let (mut ok, mut bad) = (vec![0usize; seconds], vec![0usize; seconds]);
    for op in &result.history {
        let slot = (op.complete_ms / 1000) as usize;
        if slot < seconds {
            if op.outcome == Outcome::Ok { ok[slot] += 1 } else { bad[slot] += 1 }
        }
    }
    let peak = ok.iter().chain(&bad).copied().max().unwrap_or(1).max(1) as f64;
    let y = |count: usize| chart_top + chart_height - chart_height * count as f64 / peak;
    for (series, color) in [(&ok, "#1a7f37"), (&bad, "#c62828")] {
        let points: Vec<String> = series
            .iter()
            .enumerate()
            .map(|(s, count)| format!("{:.1},{:.1}", x(s as u64 * 1000 + 500), y(*count)))
            .collect();
        let _ = write!(
            page,
            "<polyline fill=none stroke={color} stroke-width=1.5 points=\"{}\" />",
            points.join(" ")
        );
    }
    let _ = write!(
        page,
        "<text x=0 y={:.0}>{peak:.0}/s</text><text x=0 y={:.0}>0</text><text x={left} y={:.0}>0 s</text>\
         <text x={:.0} y={:.0} text-anchor=end>{:.1} s</text>",
        chart_top + 10.0,
        chart_top + chart_height,
        height - 5.0,
        width - 10.0,
        height - 5.0,
        end_ms as f64 / 1000.0
    );
    for violation in &result.violations {
        let _ = write!(
            page,
            "<line x1={0:.1} x2={0:.1} y1=0 y2={1:.0} stroke=#c62828 stroke-dasharray=3,2><title>{2}</title></line>",
            x(violation.at_ms),
            chart_top + chart_height,
            escape(&violation.message)
        );
    }
    page.push_str(
        "</svg><p>Bars: faults per node (hover for details). Lines: operations per second \
        acknowledged (green) and failed or unknown (red). Dashed: violations.</p>",
    );
}

fn faults(page: &mut String, result: &RunResult) {
    page.push_str("<h2>Faults</h2>");
    if result.faults.is_empty() {
        page.push_str("<p>None were injected.</p>");
        return;
    }
    page.push_str("<table><tr><th>kind</th><th>node</th><th>start</th><th>healed</th><th>detail</th></tr>");
    for fault in &result.faults {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>n{}</td><td>{} ms</td><td>{} ms</td><td><code>{}</code></td></tr>",
            fault.kind,
            fault.node + 1,
            fault.start_ms,
            fault.end_ms,
            escape(&fault.detail)
        );
    }
    page.push_str("</table>");
}

fn op_rows(page: &mut String, ops: &[&Op]) {
    page.push_str(
        "<table><tr><th>op</th><th>kind</th><th>worker</th><th>node</th><th>target</th><th>value</th>\
         <th>invoked</th><th>completed</th><th>outcome</th><th>detail</th></tr>",
    );
    for op in ops {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>n{}</td><td>{}</td><td>{}</td><td>{} ms</td><td>{} ms</td>\
             <td>{:?}</td><td>{}{}</td></tr>",
            op.id,
            op.kind,
            escape(&op.worker),
            op.node + 1,
            escape(&op.target),
            match (&op.value, &op.hash) {
                (Some(value), Some(hash)) => format!("{value} ({hash})"),
                (value, _) => value.map(|v| v.to_string()).unwrap_or_default(),
            },
            op.invoke_ms,
            op.complete_ms,
            op.outcome,
            if op.redelivered { "redelivered " } else { "" },
            escape(&op.detail.chars().take(160).collect::<String>())
        );
    }
    page.push_str("</table>");
}

/// Violations shown with their operations and faults; the rest are listed a line each.
const DETAILED: usize = 25;

fn violations(page: &mut String, result: &RunResult) {
    let _ = write!(page, "<h2>Violations ({})</h2>", result.violations.len());
    if result.violations.is_empty() {
        page.push_str("<p>Every invariant held.</p>");
        return;
    }
    for violation in result.violations.iter().take(DETAILED) {
        let _ = write!(
            page,
            "<div class=v><h3>{}</h3><p>{}</p><p>Shows at {} ms.</p>",
            violation.invariant,
            escape(&violation.message),
            violation.at_ms
        );
        let involved: Vec<&Op> = result.history.iter().filter(|op| violation.ops.contains(&op.id)).collect();
        if !involved.is_empty() {
            page.push_str("<h4>The operations</h4>");
            op_rows(page, &involved);
        }
        let targets: Vec<&str> = involved.iter().map(|op| op.target.as_str()).collect();
        let around: Vec<&Op> = result
            .history
            .iter()
            .filter(|op| targets.contains(&op.target.as_str()) && !violation.ops.contains(&op.id))
            .filter(|op| {
                involved
                    .iter()
                    .any(|i| op.invoke_ms + 3_000 >= i.invoke_ms && op.invoke_ms <= i.complete_ms + 3_000)
            })
            .take(20)
            .collect();
        if !around.is_empty() {
            page.push_str("<h4>Operations on the same target within 3 s</h4>");
            op_rows(page, &around);
        }
        let from =
            involved.iter().map(|op| op.invoke_ms).min().unwrap_or(violation.at_ms).saturating_sub(5_000);
        let near: Vec<String> = result
            .faults
            .iter()
            .filter(|f| f.end_ms >= from && f.start_ms <= violation.at_ms + 5_000)
            .map(|f| format!("{} n{} {}–{} ms", f.kind, f.node + 1, f.start_ms, f.end_ms))
            .collect();
        let _ = write!(
            page,
            "<p>Faults around it: {}</p></div>",
            if near.is_empty() { "none".to_string() } else { escape(&near.join("; ")) }
        );
    }
    if result.violations.len() > DETAILED {
        let _ = write!(page, "<h3>The other {} violations</h3><ul>", result.violations.len() - DETAILED);
        for violation in result.violations.iter().skip(DETAILED) {
            let _ = write!(
                page,
                "<li>{}: {} ({} ms)</li>",
                violation.invariant,
                escape(&violation.message),
                violation.at_ms
            );
        }
        page.push_str("</ul>");
    }
}
