//! The Lua sandbox of a policy VM: which standard functions a script sees, the string
//! functions replaced by budgeted ones (patterns, rep), a rate-limited print, and the memory
//! cap and instruction meter wired in.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlua::{ChunkMode, Function, Lua, MultiValue, Table, Value};

use super::{Script, VmMeter, located};
use crate::policy::pattern;
use crate::policy::pattern::Meter;

/// `print` lines that reach the log, process-wide, per second; the rest are counted and
/// reported once a second.
const PRINT_LINES_PER_SECOND: u32 = 50;

/// Bytes of one `print` call that reach the log.
const PRINT_MAX_BYTES: usize = 2048;

/// Whether one more `print` line may be logged now; every second, the lines dropped in the
/// second before.
fn print_allowed() -> (bool, u32) {
    static WINDOW: Mutex<Option<(Instant, u32, u32)>> = Mutex::new(None);
    let mut w = WINDOW.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let (start, used, dropped) = w.get_or_insert((now, 0, 0));
    let mut report = 0;
    if now.duration_since(*start) >= Duration::from_secs(1) {
        report = *dropped;
        *start = now;
        *used = 0;
        *dropped = 0;
    }
    if *used < PRINT_LINES_PER_SECOND {
        *used += 1;
        (true, report)
    } else {
        *dropped += 1;
        (false, report)
    }
}

/// Removes everything that reaches outside the VM; installs `require` over the script's
/// own modules, `print` into the log (capped), the bounded string functions and a
/// `setmetatable` that refuses `__gc` (finalizers run at collection, outside any call's
/// budget).
pub(super) fn sandbox(
    lua: &Lua,
    script: &Script,
    meter: Arc<VmMeter>,
    memory: usize,
) -> mlua::Result<()> {
    let g = lua.globals();
    for name in [
        "dofile",
        "loadfile",
        "load",
        "loadstring",
        "collectgarbage",
        "debug",
    ] {
        g.raw_set(name, Value::Nil)?;
    }
    let string: Table = g.get("string")?;
    string.raw_set("dump", Value::Nil)?;
    install_string_functions(lua, &string, meter, memory)?;
    let original: Function = g.get("setmetatable")?;
    let guarded = lua.create_function(move |lua, (t, mt): (Value, Value)| {
        if let Value::Table(m) = &mt
            && !m.raw_get::<Value>("__gc")?.is_nil()
        {
            return Err(located(
                lua,
                mlua::Error::runtime("__gc metamethods are not allowed in policies"),
            ));
        }
        original.call::<Value>((t, mt))
    })?;
    g.raw_set("setmetatable", guarded)?;
    let os: Table = g.get("os")?;
    let safe_os = lua.create_table()?;
    for name in ["time", "clock", "date", "difftime"] {
        safe_os.raw_set(name, os.get::<Value>(name)?)?;
    }
    g.raw_set("os", safe_os)?;

    let modules = Arc::new(script.modules.clone());
    let loaded = lua.create_table()?;
    let require = lua.create_function(move |lua, name: String| {
        if let Some(v) = loaded.raw_get::<Option<Value>>(name.as_str())? {
            return Ok(v);
        }
        let Some((chunk, source)) = modules.get(&name) else {
            return Err(mlua::Error::runtime(format!(
                "module '{name}' not found (require loads only .lua files of the policy folder)"
            )));
        };
        let v: Value = lua
            .load(source.as_str())
            .set_name(chunk.as_str())
            .set_mode(ChunkMode::Text)
            .call(())?;
        let v = if v.is_nil() { Value::Boolean(true) } else { v };
        loaded.raw_set(name.as_str(), v.clone())?;
        Ok(v)
    })?;
    g.raw_set("require", require)?;
    let print = lua.create_function(|_, args: mlua::Variadic<Value>| {
        let (allowed, dropped) = print_allowed();
        if dropped > 0 {
            tracing::warn!(target: "pixgate::policy", dropped, "policy print lines dropped (over {PRINT_LINES_PER_SECOND} a second)");
        }
        if !allowed {
            return Ok(());
        }
        let mut text = String::new();
        for (i, v) in args.iter().enumerate() {
            if i > 0 {
                text.push('\t');
            }
            // Strings and numbers only: a `__tostring` here would run outside any budget
            // check of the caller's own code.
            match v {
                Value::String(s) => text.push_str(&s.to_string_lossy()),
                Value::Integer(_) | Value::Number(_) | Value::Boolean(_) | Value::Nil => {
                    text.push_str(&v.to_string().unwrap_or_default())
                }
                other => text.push_str(other.type_name()),
            }
            if text.len() > PRINT_MAX_BYTES {
                break;
            }
        }
        if text.len() > PRINT_MAX_BYTES {
            let mut cut = PRINT_MAX_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(" [cut]");
        }
        tracing::info!(target: "pixgate::policy", "{text}");
        Ok(())
    })?;
    g.raw_set("print", print)?;
    Ok(())
}

/// `string.find`, `match`, `gmatch`, `gsub` through [`pattern`] (budgeted), and `rep` with
/// its size checked before any work (Lua's loops forever copying nothing for
/// `("").rep(1e18)`).
fn install_string_functions(
    lua: &Lua,
    string: &Table,
    meter: Arc<VmMeter>,
    memory: usize,
) -> mlua::Result<()> {
    type S = mlua::String;
    let m = meter.clone();
    string.raw_set(
        "find",
        lua.create_function(
            move |lua, (s, p, init, plain): (S, S, Option<i64>, Option<Value>)| {
                let plain = plain.is_some_and(|v| !matches!(v, Value::Nil | Value::Boolean(false)));
                pattern::find(lua, &*m, &s.as_bytes(), &p.as_bytes(), init, plain, true)
                    .map_err(|e| located(lua, e))
            },
        )?,
    )?;
    let m = meter.clone();
    string.raw_set(
        "match",
        lua.create_function(move |lua, (s, p, init): (S, S, Option<i64>)| {
            pattern::find(lua, &*m, &s.as_bytes(), &p.as_bytes(), init, false, false)
                .map_err(|e| located(lua, e))
        })?,
    )?;
    let m = meter.clone();
    string.raw_set(
        "gsub",
        lua.create_function(move |lua, (s, p, repl, n): (S, S, Value, Option<i64>)| {
            pattern::gsub(lua, &*m, &s.as_bytes(), &p.as_bytes(), &repl, n)
                .map_err(|e| located(lua, e))
        })?,
    )?;
    let m = meter.clone();
    string.raw_set(
        "gmatch",
        lua.create_function(move |lua, (s, p, init): (S, S, Option<i64>)| {
            let len = s.as_bytes().len();
            // Lua 5.4: a start past the end leaves nothing to match.
            let from = match init.unwrap_or(1) {
                i if i > 0 => (i - 1) as usize,
                0 => 0,
                i if i < -(len as i64) => 0,
                i => (len as i64 + i) as usize,
            }
            .min(len + 1);
            let state = Arc::new(Mutex::new((from, None::<usize>)));
            let m = m.clone();
            lua.create_function(move |lua, ()| {
                let (from, last) = *state.lock().unwrap_or_else(|p| p.into_inner());
                let src = s.as_bytes();
                if from > src.len() {
                    return Ok(MultiValue::new());
                }
                match pattern::gmatch_next(lua, &*m, &src, &p.as_bytes(), from, last)
                    .map_err(|e| located(lua, e))?
                {
                    Some((caps, end)) => {
                        *state.lock().unwrap_or_else(|p| p.into_inner()) = (end, Some(end));
                        Ok(MultiValue::from_vec(caps))
                    }
                    None => {
                        *state.lock().unwrap_or_else(|p| p.into_inner()) = (src.len() + 1, last);
                        Ok(MultiValue::new())
                    }
                }
            })
        })?,
    )?;
    string.raw_set(
        "rep",
        lua.create_function(move |lua, (s, n, sep): (S, i64, Option<S>)| {
            let s = s.as_bytes();
            let sep = sep
                .as_ref()
                .map(|x| x.as_bytes().to_vec())
                .unwrap_or_default();
            if n <= 0 || s.is_empty() && sep.is_empty() {
                return lua.create_string("");
            }
            let total = (s.len() as u128) * (n as u128) + (sep.len() as u128) * (n as u128 - 1);
            if total > memory as u128 {
                return Err(located(
                    lua,
                    mlua::Error::runtime(
                        "resulting string too large (over the policy memory limit)",
                    ),
                ));
            }
            meter
                .charge(total as u64 / 1024 + 1)
                .map_err(|e| located(lua, mlua::Error::runtime(e)))?;
            let mut out = Vec::with_capacity(total as usize);
            for i in 0..n {
                if i > 0 {
                    out.extend_from_slice(&sep);
                }
                out.extend_from_slice(&s);
            }
            lua.create_string(&out)
        })?,
    )?;
    Ok(())
}
