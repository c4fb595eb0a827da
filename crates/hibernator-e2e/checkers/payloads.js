// Parses the messages the controller sent with the official libraries of their formats:
// Microsoft's Adaptive Cards renderer (the card of a Teams message) and the CNCF CloudEvents
// SDK (structured-mode events). Input on stdin: one JSON object per line,
// {"kind": "teams" | "cloudevent", "body": "<the request body>"}. Output on stdout: one JSON
// object per input line, {"errors": [...]} (empty when the library accepts the message).
const readline = require("readline");
const AC = require("adaptivecards/dist/adaptivecards.js");
const { HTTP } = require("cloudevents");

function teams(body) {
  const message = JSON.parse(body);
  const errors = [];
  const attachment = (message.attachments || [])[0];
  if (!attachment || attachment.contentType !== "application/vnd.microsoft.card.adaptive") {
    return ["no Adaptive Card attachment"];
  }
  const card = new AC.AdaptiveCard();
  const context = new AC.SerializationContext();
  card.parse(attachment.content, context);
  for (let i = 0; i < context.eventCount; i++) {
    const e = context.getEventAt(i);
    errors.push(`${AC.ValidationEvent[e.event]}: ${e.message}`);
  }
  for (const e of card.validateProperties().validationEvents) {
    errors.push(`${AC.ValidationEvent[e.event]}: ${e.message}`);
  }
  if (card.version.toString() !== attachment.content.version) {
    errors.push(`version ${attachment.content.version} read as ${card.version}`);
  }
  return errors;
}

function cloudevent(body) {
  try {
    const event = HTTP.toEvent({
      headers: { "content-type": "application/cloudevents+json; charset=utf-8" },
      body,
    });
    event.validate();
    return [];
  } catch (err) {
    return [String(err.message) + " " + JSON.stringify(err.errors || "")];
  }
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  const { kind, body } = JSON.parse(line);
  let errors;
  try {
    errors = kind === "teams" ? teams(body) : kind === "cloudevent" ? cloudevent(body) : [`unknown kind ${kind}`];
  } catch (err) {
    errors = [`could not be read: ${err}`];
  }
  console.log(JSON.stringify({ errors }));
});
