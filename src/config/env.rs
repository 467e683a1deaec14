//! The environment layer: `PIXGATE_<KEY>` overrides any key (values read as TOML where they
//! parse as a bool, number, array or table), and imgproxy's `IMGPROXY_KEY`,
//! `IMGPROXY_SALT` and `IMGPROXY_SIGNATURE_SIZE` become key pairs and the signature size.

use std::collections::BTreeMap;

/// What the environment set: the problems found, and which variable set each key (so a
/// problem with a key is reported under the name the operator wrote).
#[derive(Debug, Default)]
pub struct EnvLayer {
    pub problems: Vec<String>,
    /// Key → the variable that set it.
    pub origins: BTreeMap<String, String>,
}

/// Overrides from `PIXGATE_*` (and imgproxy's variables) applied to a TOML table.
pub fn apply_env(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> EnvLayer {
    let mut problems = Vec::new();
    let mut origins = BTreeMap::new();
    let mut imgproxy: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in vars {
        if let Some(name) = k.strip_prefix("PIXGATE_") {
            let key = name.to_ascii_lowercase();
            table.insert(key.clone(), env_value(&v));
            origins.insert(key, k.clone());
        } else if matches!(
            k.as_str(),
            "IMGPROXY_KEY"
                | "IMGPROXY_SALT"
                | "IMGPROXY_SIGNATURE_SIZE"
                | "IMGPROXY_DEVELOPMENT_ERRORS_MODE"
        ) {
            imgproxy.insert(k, v);
        }
    }
    // PIXGATE_* beats IMGPROXY_*.
    if let Some(v) = imgproxy
        .get("IMGPROXY_DEVELOPMENT_ERRORS_MODE")
        .filter(|_| !origins.contains_key("development_errors"))
    {
        // Go's strconv.ParseBool spellings, as imgproxy reads them.
        let on = match v.trim() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
            _ => None,
        };
        match on {
            Some(b) => {
                table.insert("development_errors".into(), toml::Value::Boolean(b));
                origins.insert(
                    "development_errors".into(),
                    "IMGPROXY_DEVELOPMENT_ERRORS_MODE".into(),
                );
            }
            None => problems.push(format!(
                "IMGPROXY_DEVELOPMENT_ERRORS_MODE: `{v}` is not a boolean"
            )),
        }
    }
    if let Some(size) = imgproxy.get("IMGPROXY_SIGNATURE_SIZE") {
        match size.trim().parse::<i64>() {
            Ok(n) => {
                table.insert("signature_size".into(), toml::Value::Integer(n));
                origins.insert("signature_size".into(), "IMGPROXY_SIGNATURE_SIZE".into());
            }
            Err(_) => problems.push(format!("IMGPROXY_SIGNATURE_SIZE: `{size}` is not a number")),
        }
    }
    match (imgproxy.get("IMGPROXY_KEY"), imgproxy.get("IMGPROXY_SALT")) {
        (Some(keys), Some(salts)) => {
            let keys: Vec<&str> = keys.split(',').map(str::trim).collect();
            let salts: Vec<&str> = salts.split(',').map(str::trim).collect();
            if keys.len() != salts.len() {
                problems.push(format!(
                    "IMGPROXY_KEY has {} values but IMGPROXY_SALT has {}",
                    keys.len(),
                    salts.len()
                ));
            } else {
                let list = keys
                    .iter()
                    .zip(&salts)
                    .enumerate()
                    .map(|(i, (k, s))| {
                        let mut t = toml::Table::new();
                        let tenant = if i == 0 {
                            "default".to_string()
                        } else {
                            format!("key{}", i + 1)
                        };
                        t.insert("tenant".into(), toml::Value::String(tenant));
                        t.insert("key".into(), toml::Value::String(k.to_string()));
                        t.insert("salt".into(), toml::Value::String(s.to_string()));
                        toml::Value::Table(t)
                    })
                    .collect();
                table.insert("keys".into(), toml::Value::Array(list));
                origins.insert("keys".into(), "IMGPROXY_KEY/IMGPROXY_SALT".into());
            }
        }
        (None, None) => {}
        _ => problems.push("IMGPROXY_KEY and IMGPROXY_SALT must be set together".into()),
    }
    EnvLayer { problems, origins }
}

/// An environment value as TOML would read it when it is a bool, number, array or table;
/// otherwise the plain string.
fn env_value(v: &str) -> toml::Value {
    let t = v.trim();
    if let Ok(table) = format!("v = {t}").parse::<toml::Table>() {
        if let Some(val) = table.get("v") {
            if !matches!(val, toml::Value::Datetime(_)) {
                return val.clone();
            }
        }
    }
    toml::Value::String(v.to_string())
}
