//! Lua 5.4's string patterns (`string.find`, `match`, `gmatch`, `gsub`), matched in Rust
//! with a step budget. Lua's own matcher runs in C where the instruction hook never fires,
//! so `("a"):rep(1e5):find(".-.-.-.-b")` backtracks for hours inside one call; this one
//! charges every matching step to the policy's instruction budget and checks the call's
//! wall-clock deadline, and fails the call (a policy error, not a hung thread) when either
//! runs out. Semantics follow lstrlib.c: classes, sets, quantifiers, anchors, captures
//! (position captures and back-references), `%b`, `%f`, the 200-level recursion limit and
//! 32 captures, and Lua's error messages.

use mlua::{Lua, MultiValue, Value};

const MAX_CAPTURES: usize = 32;
const MAX_DEPTH: usize = 200;
const ESC: u8 = b'%';
const SPECIALS: &[u8] = b"^$*+?.([%-";

/// Charges steps against what the call may still spend.
pub trait Meter {
    /// `Err` (with the reason) once the budget or the deadline is exhausted.
    fn charge(&self, steps: u64) -> Result<(), String>;
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum CapLen {
    Position,
    Unfinished,
    Len(usize),
}

/// Why a match could not be completed.
#[derive(Debug, PartialEq)]
pub enum PatternError {
    /// The pattern is malformed (Lua's message).
    Malformed(String),
    /// The step budget or the deadline ran out.
    Exhausted(String),
}

type R<T> = Result<T, PatternError>;

fn malformed<T>(m: impl Into<String>) -> R<T> {
    Err(PatternError::Malformed(m.into()))
}

/// Steps between charges to the meter (the deadline is a clock read).
const CHARGE_EVERY: u64 = 1024;

struct State<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    capture: [(usize, CapLen); MAX_CAPTURES],
    depth: usize,
    pending: u64,
    meter: &'a dyn Meter,
}

impl<'a> State<'a> {
    fn new(src: &'a [u8], pat: &'a [u8], meter: &'a dyn Meter) -> State<'a> {
        State {
            src,
            pat,
            level: 0,
            capture: [(0, CapLen::Unfinished); MAX_CAPTURES],
            depth: MAX_DEPTH,
            pending: 0,
            meter,
        }
    }

    fn reset(&mut self) {
        self.level = 0;
        self.depth = MAX_DEPTH;
    }

    fn step(&mut self) -> R<()> {
        self.pending += 1;
        if self.pending >= CHARGE_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> R<()> {
        let n = std::mem::take(&mut self.pending);
        self.meter.charge(n).map_err(PatternError::Exhausted)
    }

    fn class_end(&self, mut p: usize) -> R<usize> {
        let pat = self.pat;
        let c = pat[p];
        p += 1;
        if c == ESC {
            if p >= pat.len() {
                return malformed("malformed pattern (ends with '%')");
            }
            return Ok(p + 1);
        }
        if c == b'[' {
            if p < pat.len() && pat[p] == b'^' {
                p += 1;
            }
            // The first character after `[` (or `[^`) is part of the set, even `]`.
            loop {
                if p >= pat.len() {
                    return malformed("malformed pattern (missing ']')");
                }
                let c = pat[p];
                p += 1;
                if c == ESC && p < pat.len() {
                    p += 1;
                }
                if p < pat.len() && pat[p] == b']' {
                    break;
                }
                if p >= pat.len() {
                    return malformed("malformed pattern (missing ']')");
                }
            }
            return Ok(p + 1);
        }
        Ok(p)
    }

    /// `pat[p..ep]` is one class (a literal, `.`, `%x` or `[set]`).
    fn single_match(&self, s: usize, p: usize, ep: usize) -> bool {
        let Some(&c) = self.src.get(s) else {
            return false;
        };
        match self.pat[p] {
            b'.' => true,
            ESC => match_class(c, self.pat[p + 1]),
            b'[' => self.bracket_class(c, p, ep - 1),
            lit => lit == c,
        }
    }

    /// `pat[p]` is `[`, `pat[ec]` its closing `]`.
    fn bracket_class(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let pat = self.pat;
        let mut sig = true;
        if pat[p + 1] == b'^' {
            sig = false;
            p += 1;
        }
        p += 1;
        while p < ec {
            if pat[p] == ESC {
                p += 1;
                if match_class(c, pat[p]) {
                    return sig;
                }
            } else if pat[p + 1] == b'-' && p + 2 < ec {
                if pat[p] <= c && c <= pat[p + 2] {
                    return sig;
                }
                p += 2;
            } else if pat[p] == c {
                return sig;
            }
            p += 1;
        }
        !sig
    }

    fn do_match(&mut self, s: usize, p: usize) -> R<Option<usize>> {
        if self.depth == 0 {
            return malformed("pattern too complex");
        }
        self.depth -= 1;
        let r = self.match_inner(s, p);
        self.depth += 1;
        r
    }

    fn match_inner(&mut self, mut s: usize, mut p: usize) -> R<Option<usize>> {
        let plen = self.pat.len();
        loop {
            self.step()?;
            if p == plen {
                return Ok(Some(s));
            }
            match self.pat[p] {
                b'(' => {
                    return if p + 1 < plen && self.pat[p + 1] == b')' {
                        self.start_capture(s, p + 2, CapLen::Position)
                    } else {
                        self.start_capture(s, p + 1, CapLen::Unfinished)
                    };
                }
                b')' => return self.end_capture(s, p + 1),
                b'$' if p + 1 == plen => {
                    return Ok((s == self.src.len()).then_some(s));
                }
                ESC if p + 1 < plen && self.pat[p + 1] == b'b' => {
                    match self.match_balance(s, p + 2)? {
                        Some(e) => {
                            s = e;
                            p += 4;
                            continue;
                        }
                        None => return Ok(None),
                    }
                }
                ESC if p + 1 < plen && self.pat[p + 1] == b'f' => {
                    p += 2;
                    if p >= plen || self.pat[p] != b'[' {
                        return malformed("missing '[' after '%f' in pattern");
                    }
                    let ep = self.class_end(p)?;
                    let prev = if s == 0 { 0 } else { self.src[s - 1] };
                    let cur = self.src.get(s).copied().unwrap_or(0);
                    if !self.bracket_class(prev, p, ep - 1) && self.bracket_class(cur, p, ep - 1) {
                        p = ep;
                        continue;
                    }
                    return Ok(None);
                }
                ESC if p + 1 < plen && self.pat[p + 1].is_ascii_digit() => {
                    match self.match_capture(s, self.pat[p + 1])? {
                        Some(e) => {
                            s = e;
                            p += 2;
                            continue;
                        }
                        None => return Ok(None),
                    }
                }
                _ => {
                    let ep = self.class_end(p)?;
                    let m = self.single_match(s, p, ep);
                    match self.pat.get(ep) {
                        Some(b'?') => {
                            if m && let Some(r) = self.do_match(s + 1, ep + 1)? {
                                return Ok(Some(r));
                            }
                            p = ep + 1;
                        }
                        Some(b'+') => {
                            return if m {
                                self.max_expand(s + 1, p, ep)
                            } else {
                                Ok(None)
                            };
                        }
                        Some(b'*') => return self.max_expand(s, p, ep),
                        Some(b'-') => return self.min_expand(s, p, ep),
                        _ => {
                            if !m {
                                return Ok(None);
                            }
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        }
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> R<Option<usize>> {
        let mut i = 0usize;
        while self.single_match(s + i, p, ep) {
            self.step()?;
            i += 1;
        }
        loop {
            if let Some(r) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(r));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> R<Option<usize>> {
        loop {
            if let Some(r) = self.do_match(s, ep + 1)? {
                return Ok(Some(r));
            }
            if self.single_match(s, p, ep) {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: CapLen) -> R<Option<usize>> {
        if self.level >= MAX_CAPTURES {
            return malformed("too many captures");
        }
        self.capture[self.level] = (s, what);
        self.level += 1;
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.level -= 1;
        }
        Ok(r)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> R<Option<usize>> {
        let l = (0..self.level)
            .rev()
            .find(|&l| self.capture[l].1 == CapLen::Unfinished);
        let Some(l) = l else {
            return malformed("invalid pattern capture");
        };
        self.capture[l].1 = CapLen::Len(s - self.capture[l].0);
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.capture[l].1 = CapLen::Unfinished;
        }
        Ok(r)
    }

    fn match_balance(&mut self, s: usize, p: usize) -> R<Option<usize>> {
        if p + 1 >= self.pat.len() {
            return malformed("malformed pattern (missing arguments to '%b')");
        }
        let (b, e) = (self.pat[p], self.pat[p + 1]);
        if self.src.get(s) != Some(&b) {
            return Ok(None);
        }
        let mut depth = 1;
        for i in s + 1..self.src.len() {
            self.step()?;
            let c = self.src[i];
            if c == e {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some(i + 1));
                }
            } else if c == b {
                depth += 1;
            }
        }
        Ok(None)
    }

    fn match_capture(&mut self, s: usize, digit: u8) -> R<Option<usize>> {
        let l = i32::from(digit) - i32::from(b'1');
        if l < 0 || l as usize >= self.level || self.capture[l as usize].1 == CapLen::Unfinished {
            return malformed(format!("invalid capture index %{}", l + 1));
        }
        let (init, len) = match self.capture[l as usize] {
            (init, CapLen::Len(n)) => (init, n),
            // A position capture has no text: it never matches (as in Lua).
            _ => return Ok(None),
        };
        if self.src.len() - s >= len && self.src[init..init + len] == self.src[s..s + len] {
            Ok(Some(s + len))
        } else {
            Ok(None)
        }
    }

    /// Capture `i` of the match `s..e` as a Lua value.
    fn capture_value(&self, lua: &Lua, i: usize, s: usize, e: usize) -> mlua::Result<Value> {
        if i >= self.level {
            if i != 0 {
                return Err(mlua::Error::runtime(format!(
                    "invalid capture index %{}",
                    i + 1
                )));
            }
            return Ok(Value::String(lua.create_string(&self.src[s..e])?));
        }
        let (init, len) = self.capture[i];
        match len {
            CapLen::Unfinished => Err(mlua::Error::runtime("unfinished capture")),
            CapLen::Position => Ok(Value::Integer(init as i64 + 1)),
            CapLen::Len(n) => Ok(Value::String(lua.create_string(&self.src[init..init + n])?)),
        }
    }

    /// All captures of `s..e` (the whole match when the pattern has none; nothing for
    /// `find` without captures, `whole = false`).
    fn captures(&self, lua: &Lua, s: usize, e: usize, whole: bool) -> mlua::Result<Vec<Value>> {
        let n = if self.level == 0 && whole {
            1
        } else {
            self.level
        };
        (0..n).map(|i| self.capture_value(lua, i, s, e)).collect()
    }
}

fn match_class(c: u8, class: u8) -> bool {
    let res = match class.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => c.is_ascii_whitespace() || c == 0x0B,
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        _ => return class == c,
    };
    if class.is_ascii_uppercase() {
        !res
    } else {
        res
    }
}

/// Lua's `posrelat` for an initial position: 1-based, negative from the end; the 0-based
/// start, or `None` past the end.
fn start_at(init: Option<i64>, len: usize) -> Option<usize> {
    let len_i = len as i64;
    let pos = match init.unwrap_or(1) {
        p if p > 0 => p,
        0 => 1,
        p if p < -len_i => 1,
        p => len_i + p + 1,
    };
    let start = (pos - 1) as u64;
    (start <= len as u64).then_some(start as usize)
}

fn to_lua_err(e: PatternError) -> mlua::Error {
    match e {
        PatternError::Malformed(m) | PatternError::Exhausted(m) => mlua::Error::runtime(m),
    }
}

/// `string.find(s, pattern [, init [, plain]])` and `string.match(s, pattern [, init])`.
pub fn find(
    lua: &Lua,
    meter: &dyn Meter,
    src: &[u8],
    pat: &[u8],
    init: Option<i64>,
    plain: bool,
    is_find: bool,
) -> mlua::Result<MultiValue> {
    let Some(start) = start_at(init, src.len()) else {
        return Ok(MultiValue::from_vec(vec![Value::Nil]));
    };
    if is_find && (plain || !pat.iter().any(|c| SPECIALS.contains(c))) {
        // One comparison per position: charged like matching steps.
        meter
            .charge((src.len() - start) as u64 / 8 + 1)
            .map_err(mlua::Error::runtime)?;
        let found = if pat.is_empty() {
            Some(0)
        } else {
            src[start..].windows(pat.len()).position(|w| w == pat)
        };
        return Ok(MultiValue::from_vec(match found {
            Some(i) => vec![
                Value::Integer((start + i + 1) as i64),
                Value::Integer((start + i + pat.len()) as i64),
            ],
            None => vec![Value::Nil],
        }));
    }
    let (anchor, pat) = match pat.strip_prefix(b"^") {
        Some(rest) => (true, rest),
        None => (false, pat),
    };
    let mut ms = State::new(src, pat, meter);
    let mut s = start;
    loop {
        ms.reset();
        if let Some(e) = ms.do_match(s, 0).map_err(to_lua_err)? {
            ms.flush().map_err(to_lua_err)?;
            let mut out = Vec::new();
            if is_find {
                out.push(Value::Integer(s as i64 + 1));
                out.push(Value::Integer(e as i64));
                out.extend(ms.captures(lua, s, e, false)?);
            } else {
                out = ms.captures(lua, s, e, true)?;
            }
            return Ok(MultiValue::from_vec(out));
        }
        s += 1;
        if anchor || s > src.len() {
            break;
        }
    }
    ms.flush().map_err(to_lua_err)?;
    Ok(MultiValue::from_vec(vec![Value::Nil]))
}

/// One step of `string.gmatch`: the next match at or after `from` that does not end at
/// `last` (an empty match right after the previous one); the captures and where to go on.
pub fn gmatch_next(
    lua: &Lua,
    meter: &dyn Meter,
    src: &[u8],
    pat: &[u8],
    from: usize,
    last: Option<usize>,
) -> mlua::Result<Option<(Vec<Value>, usize)>> {
    let mut ms = State::new(src, pat, meter);
    let mut s = from;
    while s <= src.len() {
        ms.reset();
        if let Some(e) = ms.do_match(s, 0).map_err(to_lua_err)?
            && Some(e) != last
        {
            ms.flush().map_err(to_lua_err)?;
            return Ok(Some((ms.captures(lua, s, e, true)?, e)));
        }
        s += 1;
    }
    ms.flush().map_err(to_lua_err)?;
    Ok(None)
}

/// `string.gsub(s, pattern, repl [, n])`: the new string and the number of matches.
pub fn gsub(
    lua: &Lua,
    meter: &dyn Meter,
    src: &[u8],
    pat: &[u8],
    repl: &Value,
    max: Option<i64>,
) -> mlua::Result<(mlua::String, i64)> {
    match repl {
        Value::String(_)
        | Value::Integer(_)
        | Value::Number(_)
        | Value::Table(_)
        | Value::Function(_) => {}
        other => {
            return Err(mlua::Error::runtime(format!(
                "bad argument #3 to 'gsub' (string/function/table expected, got {})",
                other.type_name()
            )));
        }
    }
    let repl_text = match repl {
        Value::String(_) | Value::Integer(_) | Value::Number(_) => Some(value_text(lua, repl)?),
        _ => None,
    };
    let max = max.unwrap_or(src.len() as i64 + 1);
    let (anchor, pat) = match pat.strip_prefix(b"^") {
        Some(rest) => (true, rest),
        None => (false, pat),
    };
    let mut ms = State::new(src, pat, meter);
    let mut out: Vec<u8> = Vec::new();
    let (mut s, mut n, mut last) = (0usize, 0i64, None);
    while n < max {
        ms.reset();
        let m = ms.do_match(s, 0).map_err(to_lua_err)?;
        if let Some(e) = m
            && Some(e) != last
        {
            n += 1;
            ms.flush().map_err(to_lua_err)?;
            add_value(lua, &ms, &mut out, s, e, repl, repl_text.as_deref())?;
            s = e;
            last = Some(e);
        } else if s < src.len() {
            out.push(src[s]);
            s += 1;
        } else {
            break;
        }
        if anchor {
            break;
        }
    }
    ms.flush().map_err(to_lua_err)?;
    out.extend_from_slice(&src[s.min(src.len())..]);
    Ok((lua.create_string(&out)?, n))
}

fn add_value(
    lua: &Lua,
    ms: &State<'_>,
    out: &mut Vec<u8>,
    s: usize,
    e: usize,
    repl: &Value,
    text: Option<&[u8]>,
) -> mlua::Result<()> {
    if let Some(t) = text {
        let mut i = 0;
        while i < t.len() {
            let c = t[i];
            if c != ESC {
                out.push(c);
                i += 1;
                continue;
            }
            i += 1;
            match t.get(i) {
                Some(&ESC) => out.push(ESC),
                Some(&d) if d.is_ascii_digit() => {
                    let v = if d == b'0' {
                        Value::String(lua.create_string(&ms.src[s..e])?)
                    } else {
                        ms.capture_value(lua, usize::from(d - b'1'), s, e)?
                    };
                    out.extend_from_slice(&value_text(lua, &v)?);
                }
                _ => {
                    return Err(mlua::Error::runtime(
                        "invalid use of '%' in replacement string",
                    ));
                }
            }
            i += 1;
        }
        return Ok(());
    }
    let first = ms.capture_value(lua, 0, s, e)?;
    let v = match repl {
        Value::Table(t) => t.get::<Value>(first)?,
        Value::Function(f) => {
            let args = ms.captures(lua, s, e, true)?;
            f.call::<Value>(MultiValue::from_vec(args))?
        }
        _ => Value::Nil,
    };
    match v {
        Value::Nil | Value::Boolean(false) => out.extend_from_slice(&ms.src[s..e]),
        Value::String(_) | Value::Integer(_) | Value::Number(_) => {
            out.extend_from_slice(&value_text(lua, &v)?)
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "invalid replacement value (a {})",
                other.type_name()
            )));
        }
    }
    Ok(())
}

/// A string or number as Lua writes it (`3`, `3.0`, `0.1`).
fn value_text(lua: &Lua, v: &Value) -> mlua::Result<Vec<u8>> {
    Ok(match v {
        Value::String(s) => s.as_bytes().to_vec(),
        other => lua
            .coerce_string(other.clone())?
            .map(|s| s.as_bytes().to_vec())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests;
