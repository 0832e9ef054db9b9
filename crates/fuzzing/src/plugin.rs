//! What a plugin process writes: its stdout split into bounded lines and each line read as the
//! protocol's JSON (replies and logs), and the JSON a plugin describes its space and values in.

use std::sync::mpsc::sync_channel;

use doin_plugin::{
    adapters::{names_from_json, space_from_json, values_from_json},
    host::{Line, LineKind, interpret_line, read_lines},
};
use serde_json::Value as Json;

/// The line limit the target reads with (small, so that oversized lines are reached).
const MAX_LINE: usize = 512;

/// Any bytes as a plugin's stdout: lines never exceed the limit (the reader stops at the first
/// longer one), and no line, however malformed, panics the interpretation; a line read as the
/// result of call 7 is a reply to call 7. The same bytes as JSON: space, names and values
/// parse or say why.
pub fn plugin_lines(data: &[u8]) {
    let (tx, rx) = sync_channel(data.len() + 2);
    read_lines(data, MAX_LINE, tx);
    for line in rx.try_iter() {
        match line {
            Line::Text(text) => {
                // Invalid UTF-8 is replaced (up to 3 bytes per input byte).
                assert!(text.len() <= 3 * MAX_LINE, "a line over the limit was handed on");
                if let LineKind::Result(_) = interpret_line(&text, 7) {
                    let v: Json = serde_json::from_str(&text).unwrap_or_default();
                    assert_eq!(v.get("id").and_then(Json::as_u64), Some(7), "{text}");
                }
            }
            Line::Oversized | Line::Eof => break,
        }
    }
    if let Ok(v) = serde_json::from_slice::<Json>(data) {
        let names = names_from_json(&v);
        if let Ok(space) = space_from_json(&v) {
            if let Ok(names) = names {
                assert_eq!(names.len(), space.len());
            }
            let _ = values_from_json(&space, &v);
            if let Some(first) = v.get(0) {
                let _ = values_from_json(&space, first);
            }
        }
    }
}

pub(crate) fn seeds() -> Vec<Vec<u8>> {
    [
        "{\"id\": 7, \"result\": {\"performance\": 0.5, \"metrics\": {\"loss\": 1.0}}}\n",
        "{\"log\": \"training\"}\n{\"id\": 7, \"error\": {\"message\": \"boom\"}}\n",
        "{\"id\": 8, \"result\": 1}\n\n{\"protocol\": 1}\n",
        "[{\"kind\": \"float\", \"low\": 0, \"high\": 1, \"name\": \"dropout\"}, {\"kind\": \"int\", \"low\": 1, \"high\": 3}]",
        "[{\"kind\": \"categorical\", \"choices\": 3}, {\"kind\": \"log\", \"low\": 1e-5, \"high\": 1e-1}]",
        "[0.5, 2]",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
