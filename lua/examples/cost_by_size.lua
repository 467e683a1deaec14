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
