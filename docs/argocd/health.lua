-- Argo CD health of a securemodel.io object (PrivacyBudget, SecureModel, FederatedRound), by the
-- rules of kstatus (what Flux uses), so that Argo CD and Flux agree:
--   Progressing  the operator has not yet observed metadata.generation (status.observedGeneration
--                is missing or older), or Reconciling is True, or Ready is missing, Unknown,
--                False for a reason other than failure, or about an older generation;
--   Degraded     Stalled is True (it cannot progress without a change), or Ready is False in
--                phase Failed;
--   Healthy      Ready is True for the current generation, and neither Reconciling nor Stalled.
-- A condition that carries an observedGeneration older than metadata.generation is stale and
-- ignored. Plain Lua 5.1 (Argo CD runs gopher-lua), using only `obj`.
local hs = {}
local generation = obj.metadata.generation
local status = obj.status or {}

local function current(condition)
  return condition.observedGeneration == nil or generation == nil or condition.observedGeneration >= generation
end

local function find(kind)
  for _, condition in ipairs(status.conditions or {}) do
    if condition.type == kind and current(condition) then
      return condition
    end
  end
  return nil
end

local function say(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  if condition ~= nil and condition.reason ~= nil and condition.reason ~= "" then
    return condition.reason
  end
  return fallback
end

if status.observedGeneration == nil or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local stalled = find("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = say(stalled, "Stalled")
  return hs
end

local reconciling = find("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = say(reconciling, "Reconciling")
  return hs
end

local ready = find("Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. tostring(generation)
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = say(ready, "Ready")
  return hs
end
if ready.status == "False" and status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = say(ready, "Failed")
  return hs
end
hs.status = "Progressing"
hs.message = say(ready, "Not ready")
return hs
