-- Argo CD health check for hibernator.ardikasaputro.io/HibernationPlan (Lua 5.1, as Argo CD
-- runs it). The plan follows kstatus:
--   Progressing  being deleted (the wake-on-delete finalizer is waking the targets up), no
--                status yet, status written for an older generation, Reconciling=True, or
--                Ready False/Unknown/absent without Stalled (a retry is pending, a connector
--                is not there yet)
--   Degraded     Stalled=True: a person must act (invalid spec, a reference that stayed
--                unresolved, retries exhausted)
--   Suspended    spec.suspend is true (the targets are held awake on purpose)
--   Healthy      Ready=True, whatever the phase: a hibernated plan is healthy, sleeping on
--                schedule is its steady state, and so is a plan held awake by suspendUntil
--                or partly awake by a ScheduleException for some targets (PartlyAwake)
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

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted: the targets are woken up before the plan goes"
  return hs
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

local reconciling = find(status.conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling)
  return hs
end

local stalled = find(status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

local ready = find(status.conditions, "Ready")
if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended by spec.suspend: the targets are kept awake"
  if ready ~= nil and ready.status ~= "True" then
    hs.message = hs.message .. "; " .. describe(ready)
  end
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
else
  hs.status = "Progressing"
end
hs.message = describe(ready)
return hs
