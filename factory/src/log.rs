//! Structured logs: one JSON object per line on stderr (`ts`, `level`, `msg`, then the
//! fields), for log collectors; control characters in values (C0, DEL and C1, which JSON
//! would pass raw) are escaped first, so no terminal control byte from a request or a
//! registry reaches a terminal.

use std::time::{SystemTime, UNIX_EPOCH};

fn line(level: &str, msg: &str, fields: &[(&str, &str)]) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut m = serde_json::Map::new();
    m.insert("ts".into(), civil::rfc3339(ts).into());
    m.insert("level".into(), level.into());
    m.insert("msg".into(), crate::http::clean(msg).into());
    for (k, v) in fields {
        m.insert((*k).into(), crate::http::clean(v).into());
    }
    eprintln!("{}", serde_json::Value::Object(m));
}

/// An informational line.
pub fn info(msg: &str, fields: &[(&str, &str)]) {
    line("info", msg, fields);
}

/// A warning.
pub fn warn(msg: &str, fields: &[(&str, &str)]) {
    line("warn", msg, fields);
}

/// An error.
pub fn error(msg: &str, fields: &[(&str, &str)]) {
    line("error", msg, fields);
}
