// Siyu console: live segment counts, tags, guide tasks. Calls the same API as any
// integration, with the session cookie and the page's CSRF token.
"use strict";

const csrf = () => document.body.dataset.csrf || "";

async function api(method, path, body) {
  const init = { method, headers: { "x-csrf-token": csrf() }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: { message: text } }; }
  return { ok: res.ok, status: res.status, data };
}

function segmentBuilder() {
  const rule = document.getElementById("rule");
  if (!rule) return;
  const count = document.getElementById("live-count");
  const error = document.getElementById("rule-error");
  const sample = document.getElementById("sample");
  let timer = null;
  let asked = 0;
  const refresh = async () => {
    const text = rule.value.trim();
    if (!text) { count.textContent = "–"; error.hidden = true; sample.replaceChildren(); return; }
    const mine = ++asked;
    const r = await api("POST", "/api/v1/segments/preview", { rule: text, sample: 5 });
    if (mine !== asked) return; // a later keystroke has its own answer coming
    if (r.ok) {
      error.hidden = true;
      count.textContent = r.data.count.toLocaleString();
      sample.replaceChildren(...r.data.sample.map((p) => {
        const li = document.createElement("li");
        const a = document.createElement("a");
        a.href = "/console/customers/" + p.id;
        a.textContent = (p.name || ("#" + p.id)) + (p.city ? " · " + p.city : "");
        li.append(a);
        return li;
      }));
    } else {
      count.textContent = "–";
      sample.replaceChildren();
      error.textContent = (r.data && r.data.error && r.data.error.message) || ("HTTP " + r.status);
      error.hidden = false;
    }
  };
  rule.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refresh, 200); });
  document.querySelectorAll("[data-insert]").forEach((b) => b.addEventListener("click", () => {
    const add = b.dataset.insert;
    rule.value = rule.value.trim() ? rule.value.trim() + " and " + add : add;
    refresh();
  }));
  const form = document.getElementById("save-segment");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = new FormData(form).get("name");
    const r = await api("POST", "/api/v1/segments", { name, rule: rule.value.trim() });
    const out = document.getElementById("save-result");
    out.textContent = r.ok ? "✓ " + r.data.name + ": " + r.data.members.toLocaleString() : (r.data.error.message || "HTTP " + r.status);
    if (r.ok) setTimeout(() => location.reload(), 600);
  });
}

function tags() {
  document.querySelectorAll("[data-add-tag]").forEach((form) => form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const tag = new FormData(form).get("tag").trim();
    const r = await api("PUT", "/api/v1/profiles/" + form.dataset.addTag + "/tags/" + encodeURIComponent(tag));
    if (r.ok) location.reload(); else alert(r.data.error.message);
  }));
  document.querySelectorAll("[data-remove-tag]").forEach((b) => b.addEventListener("click", async () => {
    const r = await api("DELETE", "/api/v1/profiles/" + b.dataset.profile + "/tags/" + encodeURIComponent(b.dataset.removeTag));
    if (r.ok) location.reload(); else alert(r.data.error.message);
  }));
}

function guideTasks() {
  document.querySelectorAll(".task").forEach((card) => card.addEventListener("click", async (e) => {
    const button = e.target.closest("button[data-act]");
    if (!button) return;
    const item = button.closest(".item");
    button.disabled = true;
    const r = await api("POST", "/api/v1/tasks/" + card.dataset.task + "/items/" + item.dataset.delivery, { action: button.dataset.act });
    if (r.ok) {
      const state = document.createElement("div");
      state.className = "state";
      state.textContent = button.dataset.act === "confirm" ? "✓ " + button.textContent : button.textContent;
      item.querySelector(".actions").replaceWith(state);
      item.classList.add("done");
    } else {
      button.disabled = false;
      alert(r.data.error.message);
    }
  }));
}

document.addEventListener("DOMContentLoaded", () => { segmentBuilder(); tags(); guideTasks(); });
