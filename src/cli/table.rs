//! The human summary of `plexus exec`.

use crate::report::Report;
use cni::Command;

pub fn render(verb: Command, container_id: &str, report: &Report) -> String {
    let mut out = format!("{verb} {container_id}: ok\n");
    if report.attachments.is_empty() {
        return out;
    }
    let header = ["ATTACHMENT", "INTERFACE", "IPS", "MAC", "DELEGATE", "TIME"];
    let rows: Vec<[String; 6]> = report
        .attachments
        .iter()
        .map(|a| {
            [
                a.network.clone(),
                a.ifname.clone(),
                if a.ips.is_empty() {
                    "-".into()
                } else {
                    a.ips.join(",")
                },
                a.mac.clone().unwrap_or_else(|| "-".into()),
                a.delegates.join("+"),
                format!("{}ms", a.millis),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = widths[i]));
            }
        }
        s.push('\n');
        s
    };
    out.push_str(&line(header.to_vec()));
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    if let Some(ns) = &report.network_status {
        out.push_str("network-status: ");
        out.push_str(&serde_json::to_string_pretty(ns).unwrap_or_default());
        out.push('\n');
    }
    out
}
