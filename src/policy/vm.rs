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

mod cases;
mod decision;
mod sandbox;

pub use cases::{ExpectValue, TestCase, expectation_failure};

use super::pattern::Meter;
use super::{Decision, PolicyRequest};

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
        sandbox::sandbox(&lua, script, meter, limits.memory).map_err(err)?;
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
                Ok(Value::Table(t)) => cases::request_from(&t, &base).map_err(|m| at(&m))?,
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
        decision::decision(out.into_vec()).map_err(|m| {
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
