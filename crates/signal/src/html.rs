//! The operator page `GET /calls`: a server-rendered table, every value
//! escaped, no script.

use std::fmt::Write as _;

use crate::store::CallSummary;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
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

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn opt(v: Option<f64>, scale: f64, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{:.*}", digits, v * scale))
}

/// Bytes as MB with one decimal.
fn megabytes(bytes: i64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// The whole page; `filter` is the room hash looked up, if any.
pub(crate) fn calls_page(calls: &[CallSummary], now_ms: i64, filter: Option<&str>) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>OnionRTC calls</title><style>\
         body{font:14px system-ui,sans-serif;margin:2em}\
         table{border-collapse:collapse}th,td{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:right}\
         th:nth-child(-n+2),td:nth-child(-n+2){text-align:left}code{font-size:12px}\
         </style></head><body>\n<h1>Recent calls</h1>\n\
         <form method=\"post\" action=\"/calls/find\"><label>Room name \
         <input name=\"room\" maxlength=\"64\" autocomplete=\"off\" required></label> \
         <button>Find its calls</button></form>\n\
         <p>Rooms are stored as a keyed hash of their name, never the name.</p>\n",
    );
    if let Some(hash) = filter {
        let _ = writeln!(
            out,
            "<p>Calls of the room with hash <code>{}</code> · <a href=\"/calls\">all calls</a></p>",
            escape(hash)
        );
    }
    let _ = writeln!(
        out,
        "<p>{} call(s); times in UTC; generated {}.</p>",
        calls.len(),
        escape(&format_utc(now_ms))
    );
    out.push_str(
        "<table><thead><tr><th>id</th><th>room hash</th><th>started</th><th>duration</th>\
         <th>samples</th><th>RTT mean / max ms</th><th>jitter mean / max ms</th>\
         <th>jitter buffer ms</th><th>packets lost / received</th><th>loss %</th>\
         <th>MB sent / received</th><th>relay protocols</th><th>candidate types</th>\
         <th>states</th></tr></thead><tbody>\n",
    );
    for c in calls {
        let duration = (c.last - c.started).max(0) / 1000;
        let id = escape(&c.id);
        let _ = writeln!(
            out,
            "<tr><td><a href=\"/calls/{id}\"><code>{id}</code></a></td><td><code>{}</code></td>\
             <td>{}</td><td>{}:{:02}</td><td>{}</td><td>{} / {}</td><td>{} / {}</td><td>{}</td>\
             <td>{} / {}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.room_hash),
            escape(&format_utc(c.started)),
            duration / 60,
            duration % 60,
            c.samples,
            escape(&opt(c.rtt_mean, 1000.0, 1)),
            escape(&opt(c.rtt_max, 1000.0, 1)),
            escape(&opt(c.jitter_mean, 1000.0, 1)),
            escape(&opt(c.jitter_max, 1000.0, 1)),
            escape(&opt(c.jitter_buffer_mean, 1000.0, 1)),
            c.packets_lost,
            c.packets_received,
            escape(&opt(c.loss_pct, 1.0, 2)),
            escape(&megabytes(c.bytes_sent)),
            escape(&megabytes(c.bytes_received)),
            escape(&c.relay_protocols.join(", ")),
            escape(&c.candidate_types.join(", ")),
            escape(&c.states.join(", ")),
        );
    }
    out.push_str("</tbody></table>\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_dates() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_763_800_000_123), "2025-11-22 08:26:40");
    }

    #[test]
    fn page_escapes_everything() {
        let c = CallSummary {
            id: "ab".into(),
            room_hash: "<script>alert(1)</script>".into(),
            started: 0,
            last: 61_000,
            samples: 3,
            rtt_mean: Some(0.0125),
            rtt_max: Some(0.02),
            jitter_mean: None,
            jitter_max: None,
            packets_lost: 3,
            packets_received: 197,
            loss_pct: Some(1.5),
            jitter_buffer_mean: None,
            bytes_sent: 2_345_678,
            bytes_received: 0,
            relay_protocols: vec!["udp", "tcp"],
            candidate_types: vec!["relay"],
            states: vec!["connected"],
        };
        let page = calls_page(&[c], 0, Some("<i>"));
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("<code>&lt;i&gt;</code>"));
        assert!(page.contains("<td>1:01</td>"));
        assert!(page.contains("<td>12.5 / 20.0</td>"), "{page}");
        assert!(page.contains("<td>2.3 / 0.0</td>"), "{page}");
        assert!(page.contains("<td>3 / 197</td>"));
        assert!(page.contains("udp, tcp"));
        assert!(page.contains("action=\"/calls/find\""));
        assert!(!calls_page(&[], 0, None).contains("all calls</a>"));
    }
}
