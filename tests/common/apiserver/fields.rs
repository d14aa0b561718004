//! Field selectors as the apiserver reads them for list and watch: comma-separated
//! `path=value`, `path==value` or `path!=value` terms, all of which must hold, on dotted
//! paths into the object (`metadata.name`, `spec.nodeName`). A path the object lacks reads as
//! the empty string, as it does for the fields the apiserver indexes.

use serde_json::Value;

pub(super) fn selects(selector: Option<&str>, obj: &Value) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (path, want, equal) = if let Some((p, v)) = term.split_once("!=") {
            (p, v, false)
        } else if let Some((p, v)) = term.split_once("==") {
            (p, v, true)
        } else if let Some((p, v)) = term.split_once('=') {
            (p, v, true)
        } else {
            return false;
        };
        let got = path
            .split('.')
            .try_fold(obj, |v, key| v.get(key))
            .and_then(Value::as_str)
            .unwrap_or("");
        (got == want) == equal
    })
}
