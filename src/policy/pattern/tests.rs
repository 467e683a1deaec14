//! Lua pattern semantics against lstrlib.c: classes, sets, anchors, captures, `%b`, `%f`,
//! errors, and the step budget on backtracking patterns.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};

struct Steps(AtomicU64);
impl Steps {
    fn new(n: u64) -> Steps {
        Steps(AtomicU64::new(n))
    }
}
impl Meter for Steps {
    fn charge(&self, n: u64) -> Result<(), String> {
        let left = self.0.load(Ordering::Relaxed);
        if n > left {
            return Err("instruction budget of the policy exceeded".into());
        }
        self.0.store(left - n, Ordering::Relaxed);
        Ok(())
    }
}

/// Runs `code` in a plain Lua (its own matcher) and in one whose string functions are
/// ours, and compares the printed results.
fn same_as_lua(code: &str) {
    let reference = Lua::new();
    let expect: String = reference
        .load(code)
        .eval()
        .unwrap_or_else(|e| format!("error: {e}"));
    let ours = Lua::new();
    install_for_test(&ours);
    let got: String = ours
        .load(code)
        .eval()
        .unwrap_or_else(|e| format!("error: {e}"));
    // Lua prefixes its errors with the caller's position; ours come from Rust.
    let norm = |s: &str| {
        let line = s.lines().next().unwrap_or("").to_string();
        match line.split_once("runtime error: ") {
            Some((head, rest)) => {
                let rest = match rest.split_once(": ") {
                    Some((at, msg))
                        if at
                            .rsplit(':')
                            .next()
                            .is_some_and(|n| n.parse::<u32>().is_ok()) =>
                    {
                        msg
                    }
                    _ => rest,
                };
                format!("{head}runtime error: {rest}")
            }
            None => line,
        }
    };
    assert_eq!(norm(&got), norm(&expect), "{code}");
}

fn install_for_test(lua: &Lua) {
    let string: mlua::Table = lua.globals().get("string").unwrap();
    let meter = std::sync::Arc::new(Steps::new(u64::MAX));
    let m = meter.clone();
    string
        .set(
            "find",
            lua
                .create_function(
                    move |lua,
                          (s, p, i, plain): (
                        mlua::String,
                        mlua::String,
                        Option<i64>,
                        Option<bool>,
                    )| {
                        find(
                            lua,
                            &*m,
                            &s.as_bytes(),
                            &p.as_bytes(),
                            i,
                            plain.unwrap_or(false),
                            true,
                        )
                    },
                )
                .unwrap(),
        )
        .unwrap();
    let m = meter.clone();
    string
        .set(
            "match",
            lua.create_function(
                move |lua, (s, p, i): (mlua::String, mlua::String, Option<i64>)| {
                    find(lua, &*m, &s.as_bytes(), &p.as_bytes(), i, false, false)
                },
            )
            .unwrap(),
        )
        .unwrap();
    let m = meter.clone();
    string
        .set(
            "gsub",
            lua.create_function(
                move |lua, (s, p, r, n): (mlua::String, mlua::String, Value, Option<i64>)| {
                    gsub(lua, &*m, &s.as_bytes(), &p.as_bytes(), &r, n)
                },
            )
            .unwrap(),
        )
        .unwrap();
}

#[test]
fn results_match_lua_itself() {
    for code in [
        r#"return table.concat({string.find("hello world", "o w")}, ",")"#,
        r#"return table.concat({string.find("hello world", "l+")}, ",")"#,
        r#"return table.concat({string.find("hello", "l", 1, true)}, ",")"#,
        r#"return tostring(string.find("hello", "xyz"))"#,
        r#"return table.concat({string.find("hello", "", 10)}, ",") .. "|" .. tostring(string.find("hello", "", 7))"#,
        r#"return table.concat({string.find("key=val", "(%w+)=(%w+)")}, ",")"#,
        r#"return table.concat({string.match("  trim  ", "^%s*(.-)%s*$")}, ",")"#,
        r#"return table.concat({string.match("2024-05-01", "(%d+)-(%d+)-(%d+)")}, ",")"#,
        r#"return tostring(string.match("abc", "()b()"))"#,
        r#"return table.concat({string.match("THE (quick) fox", "%((%a+)%)")}, ",")"#,
        r#"return tostring(string.match("f(a(b)c)d", "%b()"))"#,
        r#"return tostring(string.match("THE quick", "%f[%a]%a+", 4))"#,
        r#"return tostring(string.match("hello hello", "(h%a+) %1"))"#,
        r#"return tostring(string.match("a]b", "[]]"))"#,
        r#"return tostring(string.match("a-b", "[a%-]+"))"#,
        r#"return tostring(string.match("x9z", "[^%a]"))"#,
        r#"return tostring(string.match("abc", "a?b?c?d?$"))"#,
        r#"return tostring(string.match("https://Img.Example.com:8080/x", "^%a[%w+.-]*://([^/:?#]+)"))"#,
        r#"return string.gsub("hello world", "o", "0") .. select(2, string.gsub("hello world", "o", "0"))"#,
        r#"return (string.gsub("hello world", "(%w+)", "<%1>"))"#,
        r#"return (string.gsub("abc", "%w", "%0%0"))"#,
        r#"return (string.gsub("abc", "", "-"))"#,
        r#"return (string.gsub("hello", "l", {l = "L"}))"#,
        r#"return (string.gsub("$name is $age", "%$(%w+)", {name = "x", age = 3}))"#,
        r#"return (string.gsub("abc", "%w", function(c) return c:upper() .. "." end))"#,
        r#"return (string.gsub("abc", "b", "%2"))"#,
        r#"return (string.gsub("abc", "b", "%z"))"#,
        r#"return (string.gsub("aaa", "a", "b", 2))"#,
        r#"return (string.gsub("  x  ", "^%s+", ""))"#,
        r#"return tostring(string.find("abc", "[a"))"#,
        r#"return tostring(string.find("abc", "%"))"#,
        r#"return tostring(string.find("abc", "(()"))"#,
        r#"return tostring(string.find("abc", "%f"))"#,
        r#"return tostring(string.match("ab", "(a)(b)%3"))"#,
        r#"return tostring(string.match(string.rep("a", 300), string.rep("(a)", 33)))"#,
        r#"return tostring(string.find("abc", "b", -1)) .. tostring(string.find("abc", "b", -10))"#,
    ] {
        same_as_lua(code);
    }
}

#[test]
fn catastrophic_backtracking_runs_out_of_budget_quickly() {
    let lua = Lua::new();
    let meter = Steps::new(10_000_000);
    let src = vec![b'a'; 100_000];
    let t = std::time::Instant::now();
    let e = find(&lua, &meter, &src, b".-.-.-.-b", None, false, true).unwrap_err();
    assert!(e.to_string().contains("instruction budget"), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    let deep = "(".repeat(250) + &")".repeat(250);
    let e = find(
        &lua,
        &Steps::new(u64::MAX),
        b"x",
        deep.as_bytes(),
        None,
        false,
        true,
    );
    assert!(e.unwrap_err().to_string().contains("too many captures"));
}
