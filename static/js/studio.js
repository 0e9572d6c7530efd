// The studio's token meter: how much of the prompt budget the persona, greeting and example
// dialogues take, as the server's tokenizer counts them (POST /api/v1/creator/meter).
(() => {
  const form = document.getElementById("draft-form");
  const meter = document.getElementById("meter");
  if (!form || !meter) return;
  const field = (name) => form.querySelector(`[name="${name}"]`);
  const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;
  let timer = null;
  async function measure() {
    const body = {
      persona: field("persona").value,
      greeting: field("greeting").value,
      examples: field("examples").value,
    };
    const answer = await fetch(form.dataset.meterUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      credentials: "same-origin",
      body: JSON.stringify(body),
    });
    if (!answer.ok) return;
    const { tokens, room } = await answer.json();
    meter.textContent = `${tokens} of ${room} prompt tokens`;
    meter.dataset.over = tokens > room ? "true" : "false";
  }
  for (const name of ["persona", "greeting", "examples"]) {
    field(name).addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(measure, 300);
    });
  }
  measure();
})();
