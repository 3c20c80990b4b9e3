// Keeps a dashboard page live: the server sends the page's fragment again
// whenever it changes, over server-sent events. Without JavaScript every
// page still works; it is only not live.
const live = document.querySelector("[data-live]");
const state = document.getElementById("live-state");
const say = (text) => { if (state) state.textContent = text; };

// A form being edited is never replaced under the user's hands.
const busy = () => {
  const active = document.activeElement;
  const typing = active && live.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  return typing || live.querySelector("form[data-dirty]") !== null;
};

let pending = null;
const show = (html) => {
  if (busy()) { pending = html; say("paused while you edit"); return; }
  pending = null;
  // Logs that were scrolled to their end stay at their end.
  const atEnd = [...live.querySelectorAll("pre.log")]
    .map((pre) => pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4);
  live.innerHTML = html;
  live.querySelectorAll("pre.log").forEach((pre, i) => {
    if (atEnd[i] ?? true) pre.scrollTop = pre.scrollHeight;
  });
  live.dataset.updates = String(Number(live.dataset.updates || 0) + 1);
  say("live");
};

document.addEventListener("input", (event) => {
  const input = event.target;
  if (input.matches && input.matches("form.scale input[type=range]")) {
    const output = input.form.querySelector("output");
    if (output) output.value = input.value;
    input.form.dataset.dirty = "1";
  }
});
document.addEventListener("focusout", () => setTimeout(() => {
  if (pending !== null && !busy()) show(pending);
}, 0));

if (live && "EventSource" in window) {
  const source = new EventSource(live.dataset.live);
  source.addEventListener("page", (event) => show(event.data));
  source.addEventListener("open", () => say("live"));
  source.addEventListener("error", () => say("reconnecting…"));
}
document.querySelectorAll("pre.log").forEach((pre) => { pre.scrollTop = pre.scrollHeight; });

// A service's log: lines are added as text, never as markup.
const log = document.querySelector("pre[data-log-stream]");
if (log && "EventSource" in window) {
  const source = new EventSource(log.dataset.logStream);
  const add = (text) => {
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(document.createTextNode(text + "\n"));
    if (atEnd) log.scrollTop = log.scrollHeight;
  };
  source.addEventListener("line", (event) => add(event.data));
  source.addEventListener("note", (event) => add("pier: " + event.data));
  source.addEventListener("open", () => say("live"));
  source.addEventListener("error", () => say("reconnecting…"));
}
