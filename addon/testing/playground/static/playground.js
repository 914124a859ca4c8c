// The playground page: posts its forms with fetch and polls the server for fresh fragments.
// Plain ES module, no framework: the server renders every piece of HTML (autoescaped).

const $ = (selector) => document.querySelector(selector);

async function post(url, data) {
  const response = await fetch(url, { method: "POST", body: data });
  await refresh();
  return response;
}

function replace(element, html) {
  if (element.dataset.html === html) return false;
  const open = [...element.querySelectorAll("details[open]")].map((d) => d.dataset.id);
  element.innerHTML = html;
  element.dataset.html = html;
  for (const id of open) element.querySelector(`details[data-id="${id}"]`)?.setAttribute("open", "");
  return true;
}

let refreshing = null;
async function refresh() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    try {
      const fragments = await (await fetch("/playground/fragments")).json();
      const messages = $("#messages");
      if (replace(messages, fragments.messages)) messages.scrollTop = messages.scrollHeight;
      replace($("#sidebar"), fragments.sidebar);
      replace($("#log"), fragments.log);
      replace($("#installs"), fragments.installs);
      $(".room-title").firstChild.textContent = `# Room ${$("#room-picker").value} `;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

function open(button) {
  const where = button.dataset.where === "dialog" ? $("#overlay") : $(".panel-frame");
  where.querySelector(".frame-title").textContent = button.dataset.title || "";
  where.querySelector("iframe").src = button.dataset.open;
  where.hidden = false;
}

function close(frame) {
  frame.hidden = true;
  frame.querySelector("iframe").src = "about:blank";
  refresh();
}

document.addEventListener("submit", async (event) => {
  const form = event.target;
  event.preventDefault();
  if (form.id === "composer") {
    const input = form.querySelector("input[name=text]");
    const data = new FormData(form);
    if (!String(data.get("text")).trim()) return;
    input.value = "";
    await post("/playground/send", data);
    input.focus();
  } else if (form.dataset.action) {
    await post(form.dataset.action, new FormData(form));
  }
});

document.addEventListener("change", (event) => {
  if (event.target.closest("#pickers")) post("/playground/select", new FormData($("#pickers")));
});

document.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  if (button.dataset.open) open(button);
  else if (button.dataset.action && button.type === "button") post(button.dataset.action);
  else if (button.classList.contains("close-panel")) close($(".panel-frame"));
  else if (button.classList.contains("close-dialog")) close($("#overlay"));
});

const messages = $("#messages");
messages.scrollTop = messages.scrollHeight;
setInterval(refresh, 1000);
