// asyncmail preview. Message values are only ever set with textContent, never as HTML.
"use strict";

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function sizeText(size) {
  if (size < 1000) return size + " B";
  if (size < 1000000) return (size / 1000).toFixed(1) + " kB";
  return (size / 1000000).toFixed(1) + " MB";
}

function dateText(iso) {
  const date = new Date(iso);
  return isNaN(date) ? iso : date.toLocaleString();
}

async function refreshList() {
  const response = await fetch("/api/messages", { cache: "no-store" });
  const data = await response.json();
  const body = document.querySelector("#messages tbody");
  const rows = data.messages.map((m) => {
    const row = document.createElement("tr");
    row.dataset.id = m.id;
    row.className = "message";
    cell(row, m.from, "from");
    cell(row, m.to.join(", "), "to");
    const subject = cell(row, "", "subject");
    const link = document.createElement("a");
    link.href = "/messages/" + m.id;
    link.textContent = m.subject || "(no subject)";
    subject.appendChild(link);
    cell(row, dateText(m.date || m.received), "date");
    cell(row, sizeText(m.size), "size");
    const clip = cell(row, m.attachments ? String(m.attachments) : "", "attachments");
    if (m.attachments) {
      clip.classList.add("clip");
      clip.title = m.attachments + (m.attachments === 1 ? " attachment" : " attachments");
    }
    row.addEventListener("click", (event) => {
      if (event.target !== link) window.location.href = link.href;
    });
    return row;
  });
  body.replaceChildren(...rows);
  document.getElementById("count").textContent = data.total + (data.total === 1 ? " message" : " messages");
  document.getElementById("empty").hidden = data.total !== 0;
}

function startList() {
  const live = document.getElementById("live");
  const events = new EventSource("/api/events");
  // A burst of mail (asyncmail demo sends 1,000) is one refresh at a time, plus one after it.
  let running = null, again = false;
  function refresh() {
    if (running) { again = true; return; }
    running = refreshList().finally(() => {
      running = null;
      if (again) { again = false; refresh(); }
    });
  }
  events.addEventListener("messages", () => { live.classList.add("on"); refresh(); });
  events.addEventListener("error", () => live.classList.remove("on"));
  document.getElementById("clear").addEventListener("click", async () => {
    if (window.confirm("Delete every message from the preview? (The Maildir keeps them.)")) {
      await fetch("/api/messages", { method: "DELETE" });
    }
  });
  refresh();
}

function startMessage() {
  const buttons = Array.from(document.querySelectorAll(".tabs button"));
  function show(name) {
    for (const button of buttons) button.classList.toggle("active", button.dataset.pane === name);
    for (const pane of document.querySelectorAll(".pane")) pane.hidden = pane.id !== "pane-" + name;
  }
  for (const button of buttons) button.addEventListener("click", () => show(button.dataset.pane));
  if (buttons.length) show(buttons[0].dataset.pane);
}

if (document.body.classList.contains("list-page")) startList();
else startMessage();
