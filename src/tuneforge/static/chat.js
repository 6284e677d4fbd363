// tuneforge chat page: talks to this server's OpenAI API and streams the answer as it arrives.
// Plain JavaScript with no libraries and no CDN, so it works offline. Model output is shown
// with textContent, never innerHTML, so an answer can't inject markup or script.
"use strict";

const $ = (id) => document.getElementById(id);
const conversation = []; // {role, content} turns sent with every request
let running = null; // AbortController of the answer being streamed

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function say(text) {
  $("status").textContent = text;
}

function bubble(role, text) {
  const box = document.createElement("div");
  box.className = "msg " + role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : $("model").value;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  box.append(who, body);
  $("log").append(box);
  box.scrollIntoView({ block: "end" });
  return body;
}

async function errorText(response) {
  try {
    const data = await response.json();
    return (data.error && data.error.message) || response.statusText;
  } catch (_) {
    return response.status + " " + response.statusText;
  }
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) {
    say(response.status === 401 ? "This server needs an API key: enter it above." : await errorText(response));
    return;
  }
  const select = $("model");
  const previous = select.value;
  select.replaceChildren();
  for (const model of (await response.json()).data) {
    const option = document.createElement("option");
    option.value = option.textContent = model.id;
    select.append(option);
  }
  // Default to the first adapter (the tuned model) rather than the base.
  const ids = Array.from(select.options, (o) => o.value);
  select.value = ids.includes(previous) ? previous : ids.find((id) => id !== "base") || ids[0];
  say("");
}

// Server-sent events: blocks separated by a blank line, each with "data: ..." lines.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

function request() {
  const body = { model: $("model").value, messages: conversation, stream: true };
  const maxTokens = parseInt($("max-tokens").value, 10);
  const temperature = parseFloat($("temperature").value);
  if (maxTokens > 0) body.max_tokens = maxTokens;
  if (temperature >= 0) body.temperature = temperature;
  return body;
}

async function stream(target) {
  running = new AbortController();
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers(), body: JSON.stringify(request()), signal: running.signal,
  });
  if (!response.ok) throw new Error(await errorText(response));
  let answer = "";
  for await (const chunk of events(response)) {
    if (chunk.error) throw new Error(chunk.error.message);
    const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
    if (delta && delta.content) {
      answer += delta.content;
      target.textContent = answer;
      target.parentElement.scrollIntoView({ block: "end" });
    }
  }
  return answer;
}

async function send(event) {
  event.preventDefault();
  if (running) { running.abort(); return; } // the Send button is a Stop button while answering
  const text = $("prompt").value.trim();
  if (!text || !$("model").value) return;
  $("prompt").value = "";
  conversation.push({ role: "user", content: text });
  bubble("user", text);
  const target = bubble("assistant", "");
  target.parentElement.classList.add("streaming");
  $("send").textContent = "Stop";
  say("");
  try {
    const answer = await stream(target);
    conversation.push({ role: "assistant", content: answer });
  } catch (err) {
    if (err.name === "AbortError" && target.textContent) {
      conversation.push({ role: "assistant", content: target.textContent }); // keep what arrived
    } else {
      conversation.pop(); // the question had no answer: don't send it again next time
    }
    say(err.name === "AbortError" ? "Stopped." : "Error: " + err.message);
  } finally {
    target.parentElement.classList.remove("streaming");
    target.parentElement.classList.add("done");
    running = null;
    $("send").textContent = "Send";
  }
}

function clear() {
  if (running) running.abort();
  conversation.length = 0;
  $("log").replaceChildren();
  say("");
  $("prompt").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = sessionStorage.getItem("tuneforge-key") || "";
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("tuneforge-key", $("api-key").value.trim());
    loadModels();
  });
  $("ask").addEventListener("submit", send);
  $("clear").addEventListener("click", clear);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask").requestSubmit(); }
  });
  loadModels().catch((err) => say("Can't reach the server: " + err.message));
});
