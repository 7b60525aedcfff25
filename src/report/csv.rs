//! The report as CSV (RFC 4180): one row per rotation, failure, rollback and missed slot,
//! for spreadsheets and GRC tools.

use std::fmt::Write;

use super::{Report, Timeliness};

fn field(text: &str) -> String {
    // Quote everything that could break a row; a leading = + - @ is neutralised so a
    // spreadsheet never evaluates a logged error as a formula.
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// Renders the report's rows.
pub fn render(report: &Report) -> String {
    let mut out = String::from("secret,owner,kind,time,version,slot,trigger,by,on_time,detail\r\n");
    let time =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for s in &report.secrets {
        let owner = s.owner.as_deref().unwrap_or("");
        let mut row = |cells: [&str; 8]| {
            let mut line = format!("{},{}", field(&s.name), field(owner));
            for cell in cells {
                let _ = write!(line, ",{}", field(cell));
            }
            out.push_str(&line);
            out.push_str("\r\n");
        };
        for r in &s.rotations {
            let on_time = match r.timeliness {
                Timeliness::OnTime => "yes",
                Timeliness::Late => "no",
                Timeliness::Unscheduled => "",
            };
            let slot = r.slot.map(time).unwrap_or_default();
            row([
                "rotation",
                &time(r.at),
                &r.version,
                &slot,
                &r.trigger,
                r.by.as_deref().unwrap_or(""),
                on_time,
                "",
            ]);
        }
        for f in &s.failures {
            let detail = format!("{}: {}", f.step, f.error);
            row(["failure", &time(f.at), "", "", "", "", "", &detail]);
        }
        for r in &s.rollbacks {
            let detail = format!("{} -> {}", r.from, r.to);
            row([
                "rollback",
                &time(r.at),
                &r.to,
                "",
                "manual",
                &r.by,
                "",
                &detail,
            ]);
        }
        for m in &s.missed {
            row([
                "missed_slot",
                &time(*m),
                "",
                &time(*m),
                "",
                "",
                "no",
                "no rotation for this slot",
            ]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
    }
}
