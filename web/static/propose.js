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
