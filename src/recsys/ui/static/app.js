// The storefront page: plain DOM, no framework, no build step. Every call goes to this page's own /api/*,
// which forwards to the predictor. The URL holds the view (user_id, visitor profile, q, item_id) so any view
// can be bookmarked, reloaded and opened with /?user_id=U.
"use strict";

const $ = (id) => document.getElementById(id);
const SOURCE_TEXT = {
  stored_embedding: "the shopper's stored vector, published with the model",
  user_tower: "the user tower, run now on the profile and history",
  popularity: "the most popular items (nothing is known about this shopper)",
};
const MODE_TEXT = {
  search: "semantic search over names and descriptions",
  personalised_search: "semantic search, re-ranked for the picked shopper",
  similar: "nearest items by the two-tower item vectors",
};
const EVENT_TEXT = { positive_view: "Viewed", cart: "Added to cart", purchase: "Bought" };
const EVENT_RETRIES = 5; // the predictor promises an online effect within 1 s
const EVENT_RETRY_MS = 250;
const timings = { predictorMs: 0, renderedMs: null };
window.storefrontTimings = timings;
let shownIds = [];
let categories = null;
let eventsAvailable = true;

// ---------------------------------------------------------------------------------------------- helpers
async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const timing = /predictor;dur=([\d.]+)/.exec(response.headers.get("server-timing") || "");
  if (timing) timings.predictorMs = Math.max(timings.predictorMs, Number(timing[1]));
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function params() { return new URLSearchParams(location.search); }

function navigate(changes, replace = false) {
  const next = params();
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === "" || value === undefined) next.delete(key); else next.set(key, value);
  }
  const url = `${location.pathname}?${next}`;
  if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
  render();
}

function notify(message, kind = "info") {
  const notice = $("notice");
  notice.textContent = message;
  notice.dataset.kind = kind;
}

function leaf(category) { return (category || "").split("|").pop(); }

function categoryPath(category) { return (category || "").split("|").join(" › "); }

function money(value) {
  return typeof value === "number" && Number.isFinite(value) ? `$${value.toFixed(2)}` : "";
}

function context() {
  const out = {};
  const p = params();
  for (const key of ["device", "season"]) if (p.get(key)) out[key] = p.get(key);
  if (p.get("at")) out.timestamp = `${p.get("at")}:00`;
  return out;
}

function showView(id) {
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== id;
}

function placeholderFor(item) {
  const query = new URLSearchParams({ category: item.category || "", name: item.product_name || "" });
  return `/placeholder.svg?${query}`;
}

function picture(item, props = {}) {
  const img = el("img", { src: item.image_url || placeholderFor(item), alt: "", width: 400, height: 400, ...props });
  img.addEventListener("error", () => { img.src = placeholderFor(item); }, { once: true });
  return img;
}

// ---------------------------------------------------------------------------------------------- cards
function itemHref(itemId) {
  const next = new URLSearchParams(params());
  next.delete("q");
  next.set("item_id", itemId);
  return `/?${next}`;
}

function eventButtons(item) {
  const user = params().get("user_id");
  const box = el("div", { class: "actions" });
  for (const [type, label] of [["positive_view", "View"], ["cart", "Add to cart"], ["purchase", "Buy"]]) {
    const button = el("button", { type: "button", class: type === "purchase" ? "" : "secondary",
      dataset: { action: type }, textContent: label });
    button.setAttribute("aria-label", `${label}: ${item.product_name}`);
    if (!user) { button.disabled = true; button.title = "Pick a shopper to record events"; }
    button.addEventListener("click", () => sendEvent(type, item));
    box.append(button);
  }
  return box;
}

function card(item, fresh) {
  const link = el("a", { href: itemHref(item.item_id), class: "card-link" },
    picture(item, { loading: "lazy" }), el("span", { class: "name", textContent: item.product_name || item.item_id }));
  link.addEventListener("click", (event) => {
    if (event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    navigate({ item_id: item.item_id, q: null });
  });
  const price = money(item.discounted_price ?? item.actual_price);
  return el("li", { class: fresh ? "card fresh" : "card", dataset: { itemId: item.item_id } },
    link,
    el("p", { class: "category", textContent: categoryPath(item.category), title: categoryPath(item.category) }),
    el("p", { class: "meta" },
      el("span", { class: "price", textContent: price }),
      el("span", { class: "score", textContent: `score ${Number(item.score).toFixed(3)}` })),
    fresh ? el("span", { class: "badge", textContent: "new" }) : null,
    eventButtons(item));
}

function fillCards(list, items, previous = null) {
  list.replaceChildren(...items.map((item) => card(item, previous !== null && !previous.includes(item.item_id))));
  if (!items.length) list.append(el("li", { class: "empty", textContent: "Nothing to show: every candidate was filtered out." }));
}

function filteredText(filtered) {
  const parts = Object.entries(filtered || {}).map(([rule, n]) => `${rule} ${n}`);
  return parts.length ? parts.join(", ") : "none";
}

function fillWhy(box, rows) {
  box.replaceChildren(el("h2", { textContent: "Why these items" }),
    el("dl", {}, ...rows.flatMap(([term, value]) => [el("dt", { textContent: term }), el("dd", { textContent: value })])));
}

function showVersion(version) { if (version) $("model-version").textContent = `model_version ${version}`; }

// ---------------------------------------------------------------------------------------------- views
async function renderShopper(request, label) {
  const k = Number(params().get("k") || 8);
  const [prediction, profile] = await Promise.all([
    api("/api/recommend", { ...request, k, context: context() }),
    request.user_id ? api(`/api/users/${encodeURIComponent(request.user_id)}`).catch(() => null) : null,
  ]);
  showView("shopper-view");
  $("shopper-title").textContent = label;
  const previous = shownIds.length && prediction.user_id === (params().get("user_id") || null) ? shownIds : null;
  fillCards($("recommendations"), prediction.items, previous);
  shownIds = prediction.items.map((item) => item.item_id);
  fillWhy($("why"), [
    ["Cold start", prediction.cold_start ? "yes: the model has not seen this shopper" : "no: a known shopper"],
    ["Source", SOURCE_TEXT[prediction.source] || prediction.source || "?"],
    ["Removed by filters", filteredText(prediction.filtered)],
    ["Context", Object.entries(context()).map(([key, v]) => `${key} ${v}`).join(", ") || "now, any device"],
  ]);
  showVersion(prediction.model_version);
  renderProfile(request, profile);
  return prediction;
}

function renderProfile(request, profile) {
  const who = profile || request.user || {};
  const facts = [who.user_name, who.age != null ? `age ${who.age}` : null, who.gender ? `gender ${who.gender}` : null,
    who.preferences ? `likes ${who.preferences.split("|").join(", ")}` : null].filter(Boolean);
  $("profile").textContent = facts.join(" · ") || "No profile: an anonymous visitor.";
  const list = $("history");
  const recent = profile ? profile.recent || [] : [];
  const counts = profile ? profile.history_counts || {} : {};
  $("history-section").hidden = !request.user_id;
  $("history-title").textContent = request.user_id
    ? `Recent activity (history: ${counts.purchased ?? 0} bought, ${counts.carted ?? 0} carted, ${counts.viewed ?? 0} viewed)`
    : "Recent activity";
  list.replaceChildren(...recent.map((item) => el("li", {},
    el("a", { href: itemHref(item.item_id), title: item.product_name },
      picture(item, { loading: "lazy", width: 96, height: 96 }),
      el("span", { class: "history-kind", textContent: item.interaction_type ? EVENT_TEXT[item.interaction_type] || item.interaction_type : "" }),
      el("span", { textContent: item.product_name || item.item_id })))));
  if (request.user_id && !recent.length) list.append(el("li", { class: "empty", textContent: "No recent activity." }));
}

async function renderSearch(query) {
  const user = params().get("user_id");
  const k = Number(params().get("k") || 8);
  const answer = await api("/api/search", { query, k, context: context(), ...(user ? { user_id: user } : {}) });
  showView("search-view");
  $("search-title").textContent = `Results for “${query}”`;
  fillCards($("search-results"), answer.items);
  fillWhy($("search-why"), [
    ["How", MODE_TEXT[answer.mode] || answer.mode],
    ["Removed by filters", filteredText(answer.filtered)],
    ["Personalised for", user || "nobody (pick a shopper to personalise)"],
  ]);
  showVersion(answer.model_version);
}

async function renderItem(itemId) {
  const at = params().get("at");
  const answer = await api(`/api/items/${encodeURIComponent(itemId)}${at ? `?timestamp=${encodeURIComponent(at + ":00")}` : ""}`);
  const item = answer.item;
  showView("item-view");
  const image = $("item-image");
  image.src = item.image_url || placeholderFor(item);
  image.alt = item.product_name || item.item_id;
  image.onerror = () => { image.onerror = null; image.src = placeholderFor(item); };
  $("item-title").textContent = item.product_name || item.item_id;
  $("item-category").textContent = categoryPath(item.category);
  const discount = item.discount_percentage ? ` (−${Math.round(item.discount_percentage)}%, was ${money(item.actual_price)})` : "";
  $("item-price").textContent = money(item.discounted_price ?? item.actual_price) + discount;
  $("item-rating").textContent = item.rating != null ? `rated ${item.rating} (${item.rating_count ?? 0} ratings)` : "";
  $("item-about").textContent = item.about_product || "";
  $("item-stock").textContent = item.stock_quantity > 0 ? `${item.stock_quantity} in stock` : "out of stock";
  $("item-actions").replaceWith(Object.assign(eventButtons({ ...item, score: 0 }), { id: "item-actions" }));
  fillCards($("similar"), answer.similar.items);
  showVersion(answer.similar.model_version);
}

function visitorProfile() {
  const p = params();
  const profile = {};
  if (p.get("prefs")) profile.preferences = p.get("prefs");
  if (p.get("age")) profile.age = Number(p.get("age"));
  if (p.get("gender")) profile.gender = p.get("gender");
  return profile;
}

async function render() {
  document.body.dataset.state = "loading";
  const p = params();
  syncControls(p);
  try {
    if (p.get("item_id")) await renderItem(p.get("item_id"));
    else if (p.get("q")) await renderSearch(p.get("q"));
    else if (p.get("user_id")) await renderShopper({ user_id: p.get("user_id") }, `Recommended for ${p.get("user_id")}`);
    else if (p.get("visitor")) await renderShopper({ user: visitorProfile() }, "Recommended for a new visitor");
    else showView("welcome-view");
    document.body.dataset.state = "ready";
  } catch (error) {
    notify(error.message, "error");
    document.body.dataset.state = "error";
  }
  if (timings.renderedMs === null) timings.renderedMs = performance.now();
}

// ---------------------------------------------------------------------------------------------- events
async function sendEvent(type, item) {
  const user = params().get("user_id");
  if (!user) return;
  if (!eventsAvailable) { notify("Events are not available on this predictor.", "warning"); return; }
  try {
    const result = await api("/api/events", { user_id: user, item_id: item.item_id, interaction_type: type });
    if (!result.available) {
      eventsAvailable = false;
      notify(`${result.message}. The recommendations stay as they are.`, "warning");
      return;
    }
    for (let attempt = 0; attempt < EVENT_RETRIES; attempt += 1) {
      await render();
      const stillShown = shownIds.includes(item.item_id);
      if (type !== "purchase" || !stillShown || params().get("item_id")) break;
      await new Promise((resolve) => setTimeout(resolve, EVENT_RETRY_MS));
    }
    notify(`${EVENT_TEXT[type]}: ${item.product_name || item.item_id}. Recommendations refreshed.`);
  } catch (error) {
    notify(`Could not record the event: ${error.message}`, "error");
  }
}

// ---------------------------------------------------------------------------------------------- controls
function syncControls(p) {
  $("user-select").value = p.get("user_id") || "";
  $("device-select").value = p.get("device") || "";
  $("season-select").value = p.get("season") || "";
  $("moment-input").value = p.get("at") || "";
  $("k-select").value = p.get("k") || "8";
  if (!p.get("q")) $("search-input").value = "";
}

async function loadUsers() {
  try {
    const { users } = await api("/api/users");
    const select = $("user-select");
    const current = params().get("user_id");
    const ids = new Set(users.map((u) => u.user_id));
    if (current && !ids.has(current)) users.unshift({ user_id: current });
    select.append(...users.map((u) => el("option", { value: u.user_id,
      textContent: u.user_name ? `${u.user_name} (${u.user_id})` : u.user_id })));
    select.value = current || "";
  } catch (error) {
    notify(`Could not load the shoppers: ${error.message}`, "error");
  }
}

async function openVisitorForm() {
  const form = $("visitor-form");
  form.hidden = !form.hidden;
  $("visitor-button").setAttribute("aria-expanded", String(!form.hidden));
  if (form.hidden) return;
  if (categories === null) {
    const answer = await api("/api/categories").catch((error) => { notify(error.message, "error"); return { categories: [] }; });
    categories = [...new Set(answer.categories.map(leaf))].filter(Boolean).sort();
    $("preference-choices").replaceChildren(...categories.map((name, i) => el("label", { class: "choice" },
      el("input", { type: "checkbox", value: name, id: `pref-${i}` }), el("span", { textContent: name }))));
  }
  form.querySelector("input")?.focus();
}

function wireControls() {
  $("user-select").addEventListener("change", (event) => {
    shownIds = [];
    navigate({ user_id: event.target.value, visitor: null, prefs: null, age: null, gender: null, item_id: null, q: null });
  });
  for (const [id, key] of [["device-select", "device"], ["season-select", "season"], ["moment-input", "at"], ["k-select", "k"]]) {
    $(id).addEventListener("change", (event) => navigate({ [key]: event.target.value }, true));
  }
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = $("search-input").value.trim();
    if (query) navigate({ q: query, item_id: null });
  });
  $("visitor-button").addEventListener("click", openVisitorForm);
  $("visitor-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const prefs = [...document.querySelectorAll("#preference-choices input:checked")].map((box) => box.value);
    shownIds = [];
    navigate({ visitor: "1", user_id: null, item_id: null, q: null, prefs: prefs.join("|"),
      age: $("visitor-age").value, gender: $("visitor-gender").value });
  });
  window.addEventListener("popstate", render);
}

wireControls();
const usersLoaded = loadUsers();
render().then(() => usersLoaded);
