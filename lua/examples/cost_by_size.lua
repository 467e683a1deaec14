-- Heavier transforms cost more: one cell per started megapixel of requested output, so a
-- key's budget of 100 cells per second buys 100 thumbnails or about 12 full-HD images.
-- A URL that leaves the size to the source is charged as 8 MP (a typical photo).
local budget = { rate = 100, burst = 100 }

function decide(req)
  local w, h = req.width, req.height
  local megapixels
  if w and h then
    megapixels = w * h / 1e6
  elseif w or h then
    local side = w or h
    megapixels = side * side * 0.75 / 1e6   -- assume a 4:3 photo
  else
    megapixels = 8
  end
  local cost = math.max(1, math.ceil(megapixels))
  -- Never ask for more than the burst: such a request could never pass.
  cost = math.min(cost, budget.burst)
  local who = req.key and ("key:" .. req.key) or ("ip:" .. req.ip)
  return { allow = true, bucket = who, rate = budget.rate, burst = budget.burst, cost = cost }
end

tests = {
  { name = "300x200 costs one cell", req = { width = 300, height = 200, key = false },
    expect = { allow = true, bucket = "ip:203.0.113.7", cost = 1 } },
  { name = "4000x3000 costs twelve", req = { width = 4000, height = 3000, key = "k" },
    expect = { allow = true, bucket = "key:k", cost = 12 } },
  { name = "one side given: a 4:3 photo", req = { width = 4000, height = false },
    expect = { allow = true, cost = 12 } },
  { name = "no size: the source's, as 8 MP", req = { width = false, height = false },
    expect = { allow = true, cost = 8 } },
  { name = "never more than the burst", req = { width = 20000, height = 20000 },
    expect = { allow = true, cost = 100 } },
}
