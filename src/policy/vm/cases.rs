//! A script's own tests (its global `tests` table): each case's request and expectations,
//! read from Lua and compared with the decision.

use mlua::{Table, Value};

use crate::policy::{Decision, PolicyRequest};

/// A test case a policy declares in its global `tests` table.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    pub request: PolicyRequest,
    /// The decision fields the test names, as written.
    pub expect: Vec<(String, ExpectValue)>,
}

/// One expected field of a test.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpectValue {
    Bool(bool),
    Number(f64),
    Text(String),
}

/// A test's `req` table over the canned base request: absent fields keep the base's, and
/// `false` clears a field (`key = false`: no API key).
pub(super) fn request_from(t: &Table, base: &PolicyRequest) -> Result<PolicyRequest, String> {
    let mut r = base.clone();
    for pair in t.pairs::<String, Value>() {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        let text = |v: &Value| -> Result<Option<String>, String> {
            match v {
                Value::String(s) => Ok(Some(s.to_string_lossy())),
                Value::Boolean(false) => Ok(None),
                other => Err(format!(
                    "`req.{k}` must be a string (or false), got {}",
                    other.type_name()
                )),
            }
        };
        let size = |v: &Value| -> Result<Option<u32>, String> {
            match v {
                Value::Integer(n) => u32::try_from(*n)
                    .map(Some)
                    .map_err(|_| format!("`req.{k}` is out of range")),
                Value::Boolean(false) => Ok(None),
                other => Err(format!(
                    "`req.{k}` must be a whole number (or false), got {}",
                    other.type_name()
                )),
            }
        };
        match k.as_str() {
            "tenant" => r.tenant = text(&v)?,
            "key" => r.key = text(&v)?,
            "ip" => r.ip = text(&v)?.unwrap_or_default(),
            "method" => r.method = text(&v)?.unwrap_or_default(),
            "path" => r.path = text(&v)?.unwrap_or_default(),
            "source_host" => r.source_host = text(&v)?,
            "source_url" => r.source_url = text(&v)?,
            "format" => r.format = text(&v)?,
            "width" => r.width = size(&v)?,
            "height" => r.height = size(&v)?,
            "referer" => r.referer = text(&v)?,
            "user_agent" => r.user_agent = text(&v)?,
            other => return Err(format!("`req` has an unknown field `{other}`")),
        }
    }
    Ok(r)
}

/// Whether `d` has every field `expect` names, with that value; the first mismatch.
pub fn expectation_failure(d: &Decision, expect: &[(String, ExpectValue)]) -> Option<String> {
    let json = d.to_json();
    for (k, want) in expect {
        let got = &json[k.as_str()];
        let same = match want {
            ExpectValue::Bool(b) => got.as_bool() == Some(*b),
            ExpectValue::Number(n) => got.as_f64().is_some_and(|g| (g - n).abs() < 1e-9),
            ExpectValue::Text(t) => got.as_str() == Some(t.as_str()),
        };
        if !same {
            let want = match want {
                ExpectValue::Bool(b) => b.to_string(),
                ExpectValue::Number(n) => n.to_string(),
                ExpectValue::Text(t) => format!("{t:?}"),
            };
            return Some(format!("expected {k} = {want}, got {got}"));
        }
    }
    None
}
