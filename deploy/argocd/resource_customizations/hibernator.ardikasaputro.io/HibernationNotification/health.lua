-- Argo CD health check for hibernator.ardikasaputro.io/HibernationNotification (Lua 5.1, as
-- Argo CD runs it). Healthy while the controller can deliver (Ready=True); Degraded when a
-- sink cannot be used (a Secret or key missing, an http:// URL) or gave up on a message, or the
-- spec is invalid (Stalled=True); Progressing while there is no status, the status is for an
-- older generation, or no plan is selected yet (plans applied in the same sync come a moment
-- later).
local hs = {}

local function find(conditions, kind)
  if type(conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c)
  local text = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to report status"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if status.observedGeneration ~= nil and generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to take in generation " .. tostring(generation)
    .. " (status is for generation " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local stalled = find(status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

local ready = find(status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end
if ready.reason == "SinkNotUsable" or ready.reason == "DeliveryFailed" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end
hs.status = "Progressing"
hs.message = describe(ready)
return hs
