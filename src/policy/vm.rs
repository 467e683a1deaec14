//! One sandboxed Lua 5.4 state running a policy script: what the script may touch, the
//! memory cap, the instruction budget and the wall-clock deadline of every call (checked by
//! the instruction hook and by pixgate's own string-pattern functions, since Lua's run in C
//! where no hook fires), `__gc` refused, `print` capped, the read-only `req` view, the
//! script's own test cases, and turning the returned table into a checked [`Decision`].

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mlua::{
    ChunkMode, DebugEvent, Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table,
    Value, VmState,
};

use super::pattern::{self, Meter};
use super::{Decision, Limit, PolicyRequest};

/// How often the instruction hook runs: the budget and the clock are checked in steps of
/// this size (a step of concatenations of large strings still ends within milliseconds).
const HOOK_EVERY: u32 = 100;
/// Loading a script (its top-level code, `require`d tables) may take this many times the
/// per-call budget: a table of 100,000 keys is legitimate there.
const LOAD_BUDGET_FACTOR: i64 = 100;

/// The sources a VM is built from: the policy file and every module `require` may load,
/// read once per reload so all VMs of a generation see the same files.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// Chunk name of the main file (shown in errors as `file:line:`).
    pub name: String,
    pub source: String,
    /// Module name (`keys`, `plans.pro`) → (chunk name, source).
    pub modules: HashMap<String, (String, String)>,
}

/// Limits of one VM.
#[derive(Debug, Clone, Copy)]
pub struct VmLimits {
    pub memory: usize,
    pub instructions: i64,
    /// Wall time one `decide` call may take (loading a script may take
    /// `LOAD_BUDGET_FACTOR` times this).
    pub timeout: Duration,
}

/// The wall-clock deadline of the call a VM is running, and the watchdog's order to give it
/// up. Shared by the VM's hook, its string functions and the thread that runs it.
#[derive(Debug, Default)]
pub struct CallClock {
    /// Nanoseconds after [`epoch`]; 0 = no call running.
    deadline: AtomicU64,
    abandon: AtomicBool,
}

/// The process-wide origin of [`CallClock`] times.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(epoch())
        .as_nanos()
        .min(u128::from(u64::MAX)) as u64
}

impl CallClock {
    pub fn start(&self, timeout: Duration) {
        self.abandon.store(false, Ordering::Relaxed);
        let at = nanos_since_epoch(Instant::now() + timeout).max(1);
        self.deadline.store(at, Ordering::Relaxed);
    }

    pub fn stop(&self) {
        self.deadline.store(0, Ordering::Relaxed);
    }

    /// Tells the running call to stop at its next check.
    pub fn abandon(&self) {
        self.abandon.store(true, Ordering::Relaxed);
    }

    /// When the running call started being late; `None` when none runs.
    pub fn deadline(&self) -> Option<Instant> {
        let d = self.deadline.load(Ordering::Relaxed);
        (d != 0).then(|| epoch() + Duration::from_nanos(d))
    }

    fn expired(&self) -> Option<&'static str> {
        if self.abandon.load(Ordering::Relaxed) {
            return Some("the policy call was abandoned by the watchdog");
        }
        let d = self.deadline.load(Ordering::Relaxed);
        (d != 0 && nanos_since_epoch(Instant::now()) >= d)
            .then_some("the policy call took longer than policy_timeout")
    }
}

/// What pixgate's string functions charge their matching steps to.
struct VmMeter {
    budget: Arc<AtomicI64>,
    clock: Arc<CallClock>,
}

impl Meter for VmMeter {
    fn charge(&self, steps: u64) -> Result<(), String> {
        let steps = i64::try_from(steps).unwrap_or(i64::MAX);
        if self.budget.fetch_sub(steps, Ordering::Relaxed) <= steps {
            return Err("instruction budget of the policy exceeded (in a string function)".into());
        }
        match self.clock.expired() {
            Some(why) => Err(why.into()),
            None => Ok(()),
        }
    }
}

/// A failure inside the policy: compile, runtime, budget, or a bad decision.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

impl PolicyError {
    fn lua(e: &mlua::Error) -> PolicyError {
        // mlua appends a traceback; the first line carries `file:line: message`.
        let text = match e {
            mlua::Error::CallbackError { cause, .. } => return PolicyError::lua(cause),
            mlua::Error::RuntimeError(m) => m.clone(),
            mlua::Error::MemoryError(_) => "memory limit of the policy VM exceeded".to_string(),
            other => other.to_string(),
        };
        PolicyError(
            text.lines()
                .next()
                .unwrap_or("unknown Lua error")
                .to_string(),
        )
    }
}

pub struct Vm {
    pub generation: u64,
    /// Owns the state `decide` and `entry` live in (mlua functions hold it weakly).
    lua: Lua,
    decide: Function,
    entry: Function,
    budget: Arc<AtomicI64>,
    clock: Arc<CallClock>,
    limits: VmLimits,
    /// `file:line` of `decide`, for decision errors.
    decide_at: String,
    /// Lines run while coverage is recorded (check mode only).
    coverage: Option<Arc<Mutex<BTreeSet<usize>>>>,
    /// The lines of `decide` that hold code (check mode only).
    active_lines: Vec<usize>,
}

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

/// The one Lua entry point per request: builds the read-only `req` view from positional
/// arguments (table constructors with constant keys are far cheaper than setting fields from
/// Rust), calls `decide`, and flattens the returned table so Rust reads it in one go.
/// Captured locals, so a script cannot redirect them.
const ENTRY: &str = r#"
local setmetatable, next, error, rawget, type = setmetatable, next, error, rawget, type
local function readonly() error("req is read-only", 2) end
local known = { allow = true, bucket = true, rate = true, per = true, burst = true,
                cost = true, status = true, reason = true, retry_after = true }
return function(decide, tenant, key, ip, method, path, source_host, source_url, format,
                width, height, referer, user_agent)
  local data = { tenant = tenant, key = key, ip = ip, method = method, path = path,
                 source_host = source_host, source_url = source_url, format = format,
                 width = width, height = height, referer = referer, user_agent = user_agent }
  local req = setmetatable({}, {
    __index = data,
    __newindex = readonly,
    __pairs = function() return next, data, nil end,
    __metatable = false,
  })
  local d = decide(req)
  if type(d) ~= "table" then return type(d) end
  local unknown
  for k in next, d do
    if not known[k] then unknown = k break end
  end
  return "table", unknown, rawget(d, "allow"), rawget(d, "bucket"), rawget(d, "rate"),
         rawget(d, "per"), rawget(d, "burst"), rawget(d, "cost"), rawget(d, "status"),
         rawget(d, "reason"), rawget(d, "retry_after")
end
"#;

impl Vm {
    /// A VM for serving: the script loaded under its load budget and deadline.
    pub fn new(
        script: &Script,
        generation: u64,
        limits: VmLimits,
        clock: Arc<CallClock>,
    ) -> Result<Vm, PolicyError> {
        Vm::build(script, generation, limits, clock, false)
    }

    /// A VM that also records which lines of `decide` run (for `pixgate policy check`).
    pub fn with_coverage(script: &Script, limits: VmLimits) -> Result<Vm, PolicyError> {
        Vm::build(script, 0, limits, Arc::new(CallClock::default()), true)
    }

    fn build(
        script: &Script,
        generation: u64,
        limits: VmLimits,
        clock: Arc<CallClock>,
        coverage: bool,
    ) -> Result<Vm, PolicyError> {
        let err = |e: mlua::Error| PolicyError::lua(&e);
        // Lua 5.4 rather than LuaJIT: per-call cost was measured the same (~0.9 µs), but only 5.4
        // enforces both the allocator cap and instruction-count hooks (LuaJIT's JIT-compiled
        // loops skip count hooks, so `while true do end` could not be stopped).
        let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8 | StdLib::OS;
        let lua = if coverage {
            // The debug library only to read `decide`'s active lines; it is removed from the
            // globals before any script code runs.
            // SAFETY: the library is taken out of reach of scripts below (sandbox).
            unsafe { Lua::unsafe_new_with(libs | StdLib::DEBUG, LuaOptions::default()) }
        } else {
            Lua::new_with(libs, LuaOptions::default()).map_err(err)?
        };
        let getinfo: Option<Function> = if coverage {
            let debug: Table = lua.globals().get("debug").map_err(err)?;
            Some(debug.get("getinfo").map_err(err)?)
        } else {
            None
        };
        let budget = Arc::new(AtomicI64::new(limits.instructions * LOAD_BUDGET_FACTOR));
        clock.start(limits.timeout * LOAD_BUDGET_FACTOR as u32);
        let lines = coverage.then(|| Arc::new(Mutex::new(BTreeSet::new())));
        let (b, c, seen) = (budget.clone(), clock.clone(), lines.clone());
        // Lines of the main file only (other chunks, pixgate's own entry included, have
        // line numbers of their own).
        let main_chunk = script.name.clone();
        let triggers = HookTriggers {
            every_line: coverage,
            ..HookTriggers::new().every_nth_instruction(HOOK_EVERY)
        };
        lua.set_hook(triggers, move |_, debug| {
            if debug.event() == DebugEvent::Line {
                if let (Some(seen), Some(line)) = (&seen, debug.current_line())
                    && debug.source().source.as_deref() == Some(main_chunk.as_str())
                {
                    seen.lock().unwrap_or_else(|p| p.into_inner()).insert(line);
                }
                return Ok(VmState::Continue);
            }
            let why = if b.fetch_sub(i64::from(HOOK_EVERY), Ordering::Relaxed) <= 0 {
                Some("instruction budget of the policy exceeded")
            } else {
                c.expired()
            };
            match why {
                Some(why) => {
                    let at = debug
                        .source()
                        .short_src
                        .map(|s| s.into_owned())
                        .unwrap_or_default();
                    let line = debug.current_line().unwrap_or(0);
                    Err(mlua::Error::runtime(format!("{at}:{line}: {why}")))
                }
                None => Ok(VmState::Continue),
            }
        })
        .map_err(err)?;
        let meter = Arc::new(VmMeter {
            budget: budget.clone(),
            clock: clock.clone(),
        });
        sandbox(&lua, script, meter, limits.memory).map_err(err)?;
        lua.set_memory_limit(limits.memory).map_err(err)?;
        let entry: Function = lua
            .load(ENTRY)
            .set_name("=pixgate")
            .set_mode(ChunkMode::Text)
            .call(())
            .map_err(err)?;
        let loaded = lua
            .load(script.source.as_str())
            .set_name(script.name.as_str())
            .set_mode(ChunkMode::Text)
            .exec();
        clock.stop();
        loaded.map_err(err)?;
        let decide = match lua.globals().get::<Value>("decide").map_err(err)? {
            Value::Function(f) => f,
            _ => {
                return Err(PolicyError(format!(
                    "{}: the script does not define a function decide(req)",
                    display_name(&script.name)
                )));
            }
        };
        let info = decide.info();
        let decide_at = format!(
            "{}:{}",
            info.short_src.unwrap_or_else(|| display_name(&script.name)),
            info.line_defined.unwrap_or(0)
        );
        let mut active_lines = Vec::new();
        if let Some(getinfo) = getinfo {
            let t: Table = getinfo.call((&decide, "L")).map_err(err)?;
            if let Ok(lines) = t.get::<Table>("activelines") {
                for pair in lines.pairs::<usize, bool>() {
                    let (line, _) = pair.map_err(err)?;
                    active_lines.push(line);
                }
            }
            active_lines.sort_unstable();
            // The `end` of decide is "active" (its implicit return) but says nothing.
            if let Some(last) = info.last_line_defined {
                active_lines.retain(|&l| l != last);
            }
        }
        if let Some(l) = &lines {
            l.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        Ok(Vm {
            generation,
            lua,
            decide,
            entry,
            budget,
            clock,
            limits,
            decide_at,
            coverage: lines,
            active_lines,
        })
    }

    /// `file:line` where `decide` is defined.
    pub fn decide_at(&self) -> &str {
        &self.decide_at
    }

    /// Lines of `decide` with code that no call since the last [`Vm::reset_coverage`] ran
    /// (check mode; empty otherwise).
    pub fn uncovered_lines(&self) -> Vec<usize> {
        let Some(seen) = &self.coverage else {
            return Vec::new();
        };
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        self.active_lines
            .iter()
            .copied()
            .filter(|l| !seen.contains(l))
            .collect()
    }

    pub fn reset_coverage(&self) {
        if let Some(seen) = &self.coverage {
            seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// The test cases the script declares in its global `tests` table (none: empty).
    pub fn tests(&self) -> Result<Vec<TestCase>, PolicyError> {
        let bad = |m: String| PolicyError(format!("tests: {m}"));
        let tests = match self.lua.globals().get::<Value>("tests") {
            Ok(Value::Table(t)) => t,
            Ok(Value::Nil) => return Ok(Vec::new()),
            Ok(other) => return Err(bad(format!("must be a table, got {}", other.type_name()))),
            Err(e) => return Err(PolicyError::lua(&e)),
        };
        let base = super::canned_requests().remove(0);
        let mut out = Vec::new();
        for (i, case) in tests.sequence_values::<Value>().enumerate() {
            let Ok(Value::Table(case)) = case else {
                return Err(bad(format!("test #{} is not a table", i + 1)));
            };
            let name = match case.get::<Value>("name") {
                Ok(Value::String(s)) => s.to_string_lossy(),
                _ => format!("#{}", i + 1),
            };
            let at = |m: &str| bad(format!("test `{name}`: {m}"));
            let req = match case.get::<Value>("req") {
                Ok(Value::Table(t)) => request_from(&t, &base).map_err(|m| at(&m))?,
                Ok(Value::Nil) => base.clone(),
                _ => return Err(at("`req` must be a table")),
            };
            let Ok(Value::Table(expect)) = case.get::<Value>("expect") else {
                return Err(at("`expect` (the decision it must return) is missing"));
            };
            let mut fields = Vec::new();
            for pair in expect.pairs::<String, Value>() {
                let (k, v) = pair.map_err(|e| at(&e.to_string()))?;
                if !matches!(
                    k.as_str(),
                    "allow"
                        | "bucket"
                        | "rate"
                        | "per"
                        | "burst"
                        | "cost"
                        | "status"
                        | "reason"
                        | "retry_after"
                ) {
                    return Err(at(&format!("`expect` has an unknown field `{k}`")));
                }
                let v = match v {
                    Value::Boolean(b) => ExpectValue::Bool(b),
                    Value::Integer(n) => ExpectValue::Number(n as f64),
                    Value::Number(n) => ExpectValue::Number(n),
                    Value::String(s) => ExpectValue::Text(s.to_string_lossy()),
                    other => {
                        return Err(at(&format!(
                            "`expect.{k}` must be a boolean, number or string, got {}",
                            other.type_name()
                        )));
                    }
                };
                fields.push((k, v));
            }
            if !fields.iter().any(|(k, _)| k == "allow") {
                return Err(at("`expect.allow` is missing"));
            }
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            out.push(TestCase {
                name,
                request: req,
                expect: fields,
            });
        }
        Ok(out)
    }

    /// Runs `decide(req)` under the per-call budget and deadline.
    pub fn decide(&self, r: &PolicyRequest) -> Result<Decision, PolicyError> {
        self.budget
            .store(self.limits.instructions, Ordering::Relaxed);
        self.clock.start(self.limits.timeout);
        let out = self.call(r);
        self.clock.stop();
        let out = out.map_err(|e| PolicyError::lua(&e))?;
        decision(out.into_vec()).map_err(|m| {
            PolicyError(format!(
                "{}: decide() returned a bad decision: {m}",
                self.decide_at
            ))
        })
    }

    fn call(&self, r: &PolicyRequest) -> mlua::Result<MultiValue> {
        self.entry.call((
            &self.decide,
            r.tenant.as_deref(),
            r.key.as_deref(),
            r.ip.as_str(),
            r.method.as_str(),
            r.path.as_str(),
            r.source_host.as_deref(),
            r.source_url.as_deref(),
            r.format.as_deref(),
            r.width,
            r.height,
            r.referer.as_deref(),
            r.user_agent.as_deref(),
        ))
    }
}

/// A test's `req` table over the canned base request: absent fields keep the base's, and
/// `false` clears a field (`key = false`: no API key).
fn request_from(t: &Table, base: &PolicyRequest) -> Result<PolicyRequest, String> {
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

fn display_name(chunk: &str) -> String {
    chunk.trim_start_matches(['@', '=']).to_string()
}

/// An error raised from a Rust function, located at the Lua line that called it (as
/// Lua's own `luaL_error` does).
fn located(lua: &Lua, e: mlua::Error) -> mlua::Error {
    let message = match &e {
        mlua::Error::RuntimeError(m) => m.clone(),
        _ => return e,
    };
    let at = lua.inspect_stack(1, |d| {
        let src = d
            .source()
            .short_src
            .map(|s| s.into_owned())
            .unwrap_or_default();
        format!("{src}:{}: ", d.current_line().unwrap_or(0))
    });
    mlua::Error::runtime(format!("{}{message}", at.unwrap_or_default()))
}

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
fn sandbox(lua: &Lua, script: &Script, meter: Arc<VmMeter>, memory: usize) -> mlua::Result<()> {
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

const DENY_STATUSES: [u16; 4] = [401, 402, 403, 429];

/// Checks the table `decide` returned, as the entry function flattened it:
/// `type, unknown key, allow, bucket, rate, per, burst, cost, status, reason, retry_after`.
fn decision(mut v: Vec<Value>) -> Result<Decision, String> {
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
        return Ok(Decision::Deny {
            status,
            reason,
            retry_after,
        });
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
