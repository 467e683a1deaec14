--[[ pixgate policy: who may transform images, and how fast.

CONTRACT
  pixgate calls decide(req) for every transform request, before the cache (so limits
  count cache hits too), and uses what it returns.

  req (read-only; absent values are nil):
    req.tenant       tenant of the signing key pair that verified the URL
    req.key          API key: X-Api-Key header, "Authorization: Bearer K", or ?key=K
    req.ip           client address as text; X-Forwarded-For / X-Real-IP are believed
                     only from the addresses in the `trusted_proxies` setting
    req.method       "GET", "HEAD", or "POST" for /upload (the image is the body)
    req.path         the URL path (no query string)
    req.source_host  host of the source URL (lower case); nil for local:// sources
                     and uploads
    req.source_url   the source URL; nil for uploads
    req.format       output format when known: "jpg" "png" "webp" "avif" "gif" ...;
                     nil when it follows the source's own format
    req.width        requested output width/height in pixels (dpr applied);
    req.height       nil when the URL leaves that side to the source
    req.referer      Referer header
    req.user_agent   User-Agent header

  return one of:
    { allow = true }                                   -- no limit
    { allow = true, bucket = "key:abc", rate = 10, per = 1, burst = 20, cost = 1 }
        -- GCRA limit: `rate` requests per `per` seconds (default 1), `burst` at once
        -- (default: rate), this request takes `cost` cells (default 1). One quota per
        -- bucket: return the same numbers for the same bucket. Over the limit: 429 with
        -- Retry-After and RateLimit-Limit/-Remaining/-Reset.
    { allow = false, status = 401|402|403|429, reason = "shown to the client",
      retry_after = seconds }                          -- status default 403
  Any other field is an error (typos like `brust` are caught).

  TESTS: the global `tests` table below lists requests and the decision each must get
  (`req` fields default to an anonymous GET from 203.0.113.7; `key = false` means no key;
  `expect` names the fields to compare, `allow` always). `pixgate policy check` and every
  live reload run them and refuse the edit when one fails; `check` also names the lines of
  decide no test reached. Add a test for every branch you add.

  The sandbox: string, table, math, utf8, os.time/clock/date/difftime, print (goes to
  pixgate's log, at most 2 KB a call and 50 lines a second), require (only .lua files in
  this folder: require "keys" reads keys.lua). No io, os.execute, load, dofile, debug,
  bytecode or __gc finalizers. Each call may run `policy_max_instructions` Lua instructions
  and take `policy_timeout` seconds (string patterns count too: find/match/gsub/gmatch are
  pixgate's, with Lua's syntax); each VM may hold `policy_memory_limit` bytes.
  When decide fails at run time (an error, a budget, a bad table), the failure is counted
  and logged with its line, and `policy_on_error` decides: "allow" (the default) serves the
  request within `policy_error_rate` requests a second per key or address; "deny" answers
  503.

  Editing: save the file (or `kill -HUP`); pixgate compiles it in a fresh VM off the
  serving threads, runs it on canned requests and the tests, and swaps only if all of that
  works within 10 s. A broken edit keeps the old policy and logs the error with file:line.
  Try first:  pixgate policy check lua/policy.lua
              pixgate policy eval lua/policy.lua --key demo-free
  More examples in lua/examples/.
]]

local keys = require "keys"

-- Requests per second and burst for each plan.
local plans = {
  free       = { rate = 10,   burst = 20 },
  pro        = { rate = 200,  burst = 400 },
  enterprise = { rate = 2000, burst = 4000 },
}

-- Anonymous clients (no API key): generous per-address limit, so plain `pixgate serve`
-- and <img> tags work out of the box while one address cannot take the whole server.
local anonymous = { rate = 100, burst = 200 }

function decide(req)
  if req.key == nil then
    return { allow = true, bucket = "ip:" .. req.ip,
             rate = anonymous.rate, burst = anonymous.burst }
  end
  local account = keys[req.key]
  if account == nil then
    return { allow = false, status = 401, reason = "Unknown API key" }
  end
  if account.blocked then
    return { allow = false, status = 403, reason = "This API key is blocked" }
  end
  local plan = plans[account.plan]
  if plan == nil then
    return { allow = false, status = 402, reason = "No active plan for this API key" }
  end
  return { allow = true, bucket = "key:" .. req.key, rate = plan.rate, burst = plan.burst }
end

-- Every plan and every key state, checked on each edit (see TESTS above).
tests = {
  { name = "anonymous clients share a per-address bucket",
    req = { key = false, ip = "198.51.100.9" },
    expect = { allow = true, bucket = "ip:198.51.100.9", rate = 100, burst = 200 } },
  { name = "free plan",
    req = { key = "demo-free" },
    expect = { allow = true, bucket = "key:demo-free", rate = 10, burst = 20 } },
  { name = "pro plan",
    req = { key = "demo-pro" },
    expect = { allow = true, bucket = "key:demo-pro", rate = 200, burst = 400 } },
  { name = "enterprise plan",
    req = { key = "demo-enterprise" },
    expect = { allow = true, bucket = "key:demo-enterprise", rate = 2000, burst = 4000 } },
  { name = "blocked key",
    req = { key = "demo-blocked" },
    expect = { allow = false, status = 403, reason = "This API key is blocked" } },
  { name = "key without an active plan",
    req = { key = "demo-lapsed" },
    expect = { allow = false, status = 402 } },
  { name = "unknown key",
    req = { key = "no-such-key" },
    expect = { allow = false, status = 401, reason = "Unknown API key" } },
}
