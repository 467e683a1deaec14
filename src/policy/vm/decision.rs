//! The value `decide` returns, checked field by field into a [`Decision`] with messages a
//! policy author can act on.

use std::time::Duration;

use mlua::Value;

use crate::policy::{Decision, Limit, Refusal};

const DENY_STATUSES: [u16; 4] = [401, 402, 403, 429];

/// Checks the table `decide` returned, as the entry function flattened it:
/// `type, unknown key, allow, bucket, rate, per, burst, cost, status, reason, retry_after`.
pub(super) fn decision(mut v: Vec<Value>) -> Result<Decision, String> {
    v.resize(11, Value::Nil);
    let kind = match &v[0] {
        Value::String(s) => s.to_string_lossy(),
        _ => "nothing".into(),
    };
    if kind != "table" {
        return Err(format!("expected a table, got {kind}"));
    }
    match &v[1] {
        Value::Nil => {}
        Value::String(s) => return Err(format!("unknown field `{}`", s.to_string_lossy())),
        other => return Err(format!("unexpected key of type {}", other.type_name())),
    }
    let field = |name: &str| -> &Value {
        let i = match name {
            "allow" => 2,
            "bucket" => 3,
            "rate" => 4,
            "per" => 5,
            "burst" => 6,
            "cost" => 7,
            "status" => 8,
            "reason" => 9,
            _ => 10,
        };
        &v[i]
    };
    let number = |name: &str| number(field(name), name);
    let string = |name: &str| string(field(name), name);
    let allow = match field("allow") {
        Value::Boolean(b) => *b,
        Value::Nil => return Err("field `allow` is missing (true or false)".into()),
        other => {
            return Err(format!(
                "field `allow` must be a boolean, got {}",
                other.type_name()
            ));
        }
    };
    if !allow {
        let status = match number("status")? {
            None => 403,
            Some(s) if s.fract() == 0.0 && DENY_STATUSES.contains(&(s as u16)) && s < 1000.0 => {
                s as u16
            }
            Some(s) => {
                return Err(format!(
                    "field `status` must be one of 401, 402, 403, 429, got {s}"
                ));
            }
        };
        let reason = string("reason")?.unwrap_or_else(|| "Forbidden by policy".into());
        if reason.len() > 200 {
            return Err("field `reason` is longer than 200 bytes".into());
        }
        let retry_after = match number("retry_after")? {
            None => None,
            Some(s) if (0.0..=86_400.0).contains(&s) => Some(s.ceil() as u64),
            Some(s) => {
                return Err(format!(
                    "field `retry_after` must be between 0 and 86400 seconds, got {s}"
                ));
            }
        };
        return Ok(Decision::Deny(Refusal {
            status,
            reason,
            retry_after,
        }));
    }
    let Some(bucket) = string("bucket")? else {
        for f in ["rate", "per", "burst", "cost"] {
            if !field(f).is_nil() {
                return Err(format!("field `{f}` needs a `bucket`"));
            }
        }
        return Ok(Decision::Allow(None));
    };
    if bucket.is_empty() {
        return Err("field `bucket` is empty".into());
    }
    let positive = |name: &str| -> Result<Option<f64>, String> {
        match number(name)? {
            Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x)),
            Some(x) => Err(format!("field `{name}` must be a positive number, got {x}")),
            None => Ok(None),
        }
    };
    let rate = positive("rate")?.ok_or("field `rate` is missing (requests per `per` seconds)")?;
    let per = positive("per")?.unwrap_or(1.0);
    let whole = |name: &str, default: f64| -> Result<u32, String> {
        let x = positive(name)?.unwrap_or(default);
        if x.fract() != 0.0 || x > 1e9 {
            return Err(format!("field `{name}` must be a whole number, got {x}"));
        }
        Ok(x as u32)
    };
    let burst = whole("burst", rate.ceil().max(1.0))?;
    let cost = whole("cost", 1.0)?;
    if cost > burst {
        return Err(format!(
            "field `cost` ({cost}) is larger than `burst` ({burst}): such a request could never pass"
        ));
    }
    let period = Duration::try_from_secs_f64(per / rate)
        .map_err(|_| format!("`per / rate` is not a usable interval ({per} / {rate})"))?;
    if period.is_zero() || period > Duration::from_secs(86_400 * 365) {
        return Err(format!(
            "`per / rate` must be between 1 ns and a year ({per} / {rate})"
        ));
    }
    Ok(Decision::Allow(Some(Limit {
        bucket,
        rate,
        per,
        burst,
        cost,
        period,
    })))
}

fn number(v: &Value, name: &str) -> Result<Option<f64>, String> {
    match v {
        Value::Nil => Ok(None),
        Value::Integer(i) => Ok(Some(*i as f64)),
        Value::Number(n) => Ok(Some(*n)),
        other => Err(format!(
            "field `{name}` must be a number, got {}",
            other.type_name()
        )),
    }
}

fn string(v: &Value, name: &str) -> Result<Option<String>, String> {
    match v {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some(s.to_string_lossy())),
        // Buckets are often built from numbers (plan ids); accept them as text.
        Value::Integer(i) => Ok(Some(i.to_string())),
        other => Err(format!(
            "field `{name}` must be a string, got {}",
            other.type_name()
        )),
    }
}
