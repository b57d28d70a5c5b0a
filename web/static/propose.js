// Show only the chosen job kind's fields; the others are disabled so that they are not submitted.
(() => {
  const radios = document.querySelectorAll('input[name=job_kind]');
  function showPlan() {
    const kind = document.querySelector('input[name=job_kind]:checked')?.value;
    document.querySelectorAll('.plan').forEach(el => {
      const on = el.dataset.kind === kind;
      el.hidden = !on;
      el.querySelectorAll('input, select').forEach(i => i.disabled = !on);
    });
  }
  radios.forEach(r => r.addEventListener('change', showPlan));
  showPlan();
})();

// The plan's estimated cost beside "Requested GPU-hours", worked out again as the plan changes.
(() => {
  const form = document.querySelector('form.card');
  const out = document.getElementById('estimate');
  if (!form || !out) return;
  let timer = null;
  async function update() {
    const kind = form.querySelector('input[name=job_kind]:checked')?.value;
    if (!kind) return;
    const plan = {kind};
    form.querySelectorAll(`.plan[data-kind="${kind}"] [name]`).forEach(el => {
      const name = el.name.slice(kind.length + 1), value = el.value.trim();
      if (value === '') return;
      plan[name] = el.closest('label').textContent.includes('comma-separated')
        ? value.split(',').map(v => v.trim()).filter(v => v) : value;
    });
    const r = await fetch('/api/job-plans/estimate', {
      method: 'POST', body: JSON.stringify(plan),
      headers: {'Content-Type': 'application/json',
                'X-CSRF-Token': form.querySelector('input[name=csrf_token]').value}});
    if (!r.ok) { out.textContent = 'The estimate waits for a valid plan.'; return; }
    const e = await r.json();
    out.textContent = `The plan below: about ${e.gpu_hours.toFixed(2)} GPU-hours (${Math.floor(e.seconds / 60)} min ` +
      `${Math.floor(e.seconds % 60)} s), from ${e.basis}.`;
  }
  form.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(update, 300); });
  form.addEventListener('change', update);
})();
