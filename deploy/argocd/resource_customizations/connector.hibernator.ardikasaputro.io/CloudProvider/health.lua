-- Argo CD health check for the connectors, connector.hibernator.ardikasaputro.io/CloudProvider
-- and K8SCluster (Lua 5.1, as Argo CD runs it). A connector is configuration: it is Healthy
-- as long as nothing reports a problem with it, so a connector without status (or without
-- conditions) is Healthy. When conditions are reported they follow kstatus: Degraded on
-- Stalled=True, Progressing while the status is for an older generation or Ready is not
-- True, Healthy on Ready=True.
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
if status == nil or type(status.conditions) ~= "table" or #status.conditions == 0 then
  hs.status = "Healthy"
  hs.message = "No problem reported"
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
if ready == nil or ready.status == "True" then
  hs.status = "Healthy"
  if ready ~= nil then
    hs.message = describe(ready)
  else
    hs.message = "No problem reported"
  end
  return hs
end
hs.status = "Progressing"
hs.message = describe(ready)
return hs
