//! The report as one self-contained HTML page (inline CSS and SVG, no scripts, no external
//! requests), so it can be archived, mailed and opened offline.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::{Report, SecretReport, Timeliness};

/// Escapes text for HTML element content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d2430;background:#fff}
h1{font-size:1.5rem;margin:0 0 .25rem} h2{font-size:1.15rem;margin:2rem 0 .5rem}
.meta{color:#5b6576;margin-bottom:1.5rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e3e7ee;vertical-align:top}
th{background:#f4f6fa;font-weight:600}
.ok{color:#0a7d38;font-weight:600} .bad{color:#b3261e;font-weight:600} .warn{color:#9a5b00;font-weight:600}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:1rem;font-size:.8rem;font-weight:600}
.badge.ok{background:#e3f5ea} .badge.bad{background:#fbe4e2} .badge.warn{background:#fff1d6}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}
.secret{border:1px solid #e3e7ee;border-radius:.5rem;padding:1rem;margin:1rem 0} .secret h2{margin-top:0}
.legend span{margin-right:1rem}
svg{display:block;margin:.5rem 0}
";

/// Renders the report.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>rekeyd rotation report</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        out,
        "<h1>Secret rotation report</h1><div class=\"meta\">Period {} to {} · policy <code>{}</code> · generated {}</div>",
        time(report.since),
        time(report.until),
        esc(&report.policy),
        time(report.generated_at)
    );
    chain_section(&mut out, report);
    summary_section(&mut out, report);
    for secret in &report.secrets {
        secret_section(&mut out, report, secret);
    }
    out.push_str("</body></html>\n");
    out
}

fn badge(ok: bool, yes: &str, no: &str) -> String {
    if ok {
        format!("<span class=\"badge ok\">{yes}</span>")
    } else {
        format!("<span class=\"badge bad\">{no}</span>")
    }
}

fn chain_section(out: &mut String, report: &Report) {
    let _ = write!(
        out,
        "<h2>Audit log integrity {}</h2><table><tr><th>Log</th><th>Entries</th><th>Head (record it elsewhere)</th><th>Result</th></tr>",
        badge(
            report.chains_verified(),
            "hash chain verified",
            "hash chain BROKEN"
        )
    );
    for log in &report.logs {
        let result = if log.problems.is_empty() {
            "<span class=\"ok\">verified</span>".to_owned()
        } else {
            let items: String = log
                .problems
                .iter()
                .map(|p| format!("<li>{}</li>", esc(p)))
                .collect();
            format!(
                "<span class=\"bad\">{} problems</span><ul>{items}</ul>",
                log.problems.len()
            )
        };
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{result}</td></tr>",
            esc(&log.path),
            log.entries,
            esc(log.head.as_deref().unwrap_or("empty"))
        );
    }
    out.push_str("</table>");
}

fn summary_section(out: &mut String, report: &Report) {
    let compliant = report.secrets.iter().filter(|s| s.compliant).count();
    let _ = write!(
        out,
        "<h2>Summary: {compliant} of {} secrets rotated within policy</h2><table><tr><th>Secret</th><th>Owner</th><th>Schedule</th>\
         <th>Rotations</th><th>On time</th><th>Late</th><th>Missed slots</th><th>Failures</th><th>Manual</th><th>Last rotation</th><th>Status</th></tr>",
        report.secrets.len()
    );
    for s in &report.secrets {
        let last = s
            .rotations
            .last()
            .map(|r| time(r.at))
            .unwrap_or_else(|| "never".into());
        let status = if !s.enabled {
            "<span class=\"badge warn\">disabled</span>".to_owned()
        } else {
            badge(s.compliant, "within policy", "out of policy")
        };
        let _ = write!(
            out,
            "<tr><td><a href=\"#{id}\"><code>{name}</code></a></td><td>{owner}</td><td>{schedule}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{last}</td><td>{status}</td></tr>",
            s.rotations.len(),
            s.on_time(),
            s.late(),
            s.missed.len(),
            s.failures.len(),
            s.manual(),
            id = anchor(&s.name),
            name = esc(&s.name),
            owner = esc(s.owner.as_deref().unwrap_or("")),
            schedule = esc(&s.schedule),
        );
    }
    out.push_str("</table>");
}

fn anchor(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("secret-{cleaned}")
}

/// A timeline of the period: grey ticks for due slots, dots for rotations (green on time,
/// amber late, blue unscheduled), red crosses for missed slots and red bars for failures.
fn timeline(report: &Report, s: &SecretReport) -> String {
    const W: f64 = 960.0;
    const PAD: f64 = 10.0;
    let span = (report.until - report.since).num_seconds().max(1) as f64;
    let x = |t: DateTime<Utc>| {
        PAD + (W - 2.0 * PAD) * ((t - report.since).num_seconds() as f64 / span).clamp(0.0, 1.0)
    };
    let mut svg = format!(
        "<svg viewBox=\"0 0 {W} 44\" width=\"100%\" height=\"44\" role=\"img\" aria-label=\"timeline of {}\">\
         <line x1=\"{PAD}\" y1=\"22\" x2=\"{}\" y2=\"22\" stroke=\"#c5cbd6\" stroke-width=\"2\"/>",
        esc(&s.name),
        W - PAD
    );
    for f in &s.failures {
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"8\" width=\"3\" height=\"28\" fill=\"#b3261e\"><title>failure at {}</title></rect>",
            x(f.at) - 1.5,
            time(f.at)
        );
    }
    for m in &s.missed {
        let cx = x(*m);
        let _ = write!(
            svg,
            "<g stroke=\"#b3261e\" stroke-width=\"2\"><line x1=\"{:.1}\" y1=\"16\" x2=\"{:.1}\" y2=\"28\"/><line x1=\"{:.1}\" y1=\"28\" x2=\"{:.1}\" y2=\"16\"/><title>missed slot {}</title></g>",
            cx - 6.0,
            cx + 6.0,
            cx - 6.0,
            cx + 6.0,
            time(*m)
        );
    }
    for r in &s.rotations {
        let color = match r.timeliness {
            Timeliness::OnTime => "#0a7d38",
            Timeliness::Late => "#d08400",
            Timeliness::Unscheduled => "#2f5fd0",
        };
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"22\" r=\"6\" fill=\"{color}\"><title>{} {}</title></circle>",
            x(r.at),
            esc(&r.trigger),
            time(r.at)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn secret_section(out: &mut String, report: &Report, s: &SecretReport) {
    let _ = write!(
        out,
        "<div class=\"secret\" id=\"{}\"><h2><code>{}</code> {}</h2><div class=\"meta\">{} · owner {} · {} slots judged in the period{} (a slot is judged once its due time is {} minutes past)</div>",
        anchor(&s.name),
        esc(&s.name),
        if s.enabled {
            badge(s.compliant, "within policy", "out of policy")
        } else {
            "<span class=\"badge warn\">disabled</span>".into()
        },
        esc(&s.schedule),
        esc(s.owner.as_deref().unwrap_or("none")),
        s.expected,
        if s.slots_truncated {
            ", only the first checked"
        } else {
            ""
        },
        super::ON_TIME_TOLERANCE.num_minutes()
    );
    out.push_str(&timeline(report, s));
    out.push_str("<div class=\"legend meta\"><span class=\"ok\">● on time</span><span class=\"warn\">● late</span><span style=\"color:#2f5fd0\">● unscheduled (manual, first, max age)</span><span class=\"bad\">✕ missed slot ▮ failure</span></div>");
    if s.rotations.is_empty() {
        out.push_str("<p>No rotation in the period.</p>");
    } else {
        out.push_str("<table><tr><th>Finished</th><th>Version</th><th>Slot</th><th>Trigger</th><th>Requested by</th><th>Timeliness</th></tr>");
        for r in &s.rotations {
            let when = match r.timeliness {
                Timeliness::OnTime => "<span class=\"ok\">on time</span>",
                Timeliness::Late => "<span class=\"warn\">late</span>",
                Timeliness::Unscheduled => "unscheduled",
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{when}</td></tr>",
                time(r.at),
                esc(&r.version),
                r.slot.map(time).unwrap_or_default(),
                esc(&r.trigger),
                esc(r.by.as_deref().unwrap_or("")),
            );
        }
        out.push_str("</table>");
    }
    if !s.missed.is_empty() {
        let items: String = s
            .missed
            .iter()
            .map(|m| format!("<li>{}</li>", time(*m)))
            .collect();
        let _ = write!(
            out,
            "<p class=\"bad\">Missed slots (no rotation): </p><ul>{items}</ul>"
        );
    }
    if !s.failures.is_empty() {
        out.push_str("<table><tr><th>Failed at</th><th>Step</th><th>Error</th></tr>");
        for f in &s.failures {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                time(f.at),
                esc(&f.step),
                esc(&f.error)
            );
        }
        out.push_str("</table>");
    }
    if !s.rollbacks.is_empty() {
        out.push_str("<table><tr><th>Rolled back at</th><th>From</th><th>To</th><th>By</th></tr>");
        for r in &s.rollbacks {
            let _ = write!(
                out,
                "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
                time(r.at),
                esc(&r.from),
                esc(&r.to),
                esc(&r.by)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</div>");
}

#[cfg(test)]
mod tests {
    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            super::esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
