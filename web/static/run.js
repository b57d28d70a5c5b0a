// Follow a run: poll the JSON API and reload once it ends, to show its outputs.
(() => {
  const runId = document.currentScript.dataset.runId;
  setInterval(async () => {
    const r = await fetch('/api/runs/' + runId);
    if (!r.ok) return;
    const run = await r.json();
    document.getElementById('run-progress').value = run.progress;
    const d = run.progress_detail;
    document.getElementById('run-progress-text').textContent = Math.floor(run.progress * 100) + '%' +
      (d.phase ? ' · ' + d.phase : '') + (d.step ? ' · step ' + d.step + ' / ' + d.total : '') +
      (d.loss !== undefined ? ' · loss ' + d.loss : '') +
      (run.state === 'running' && d.eta_s ? ' · about ' + d.eta_s + ' s left' : '');
    document.getElementById('run-gpu-seconds').textContent = run.gpu_seconds;
    document.getElementById('run-state').textContent = run.state;
    if (!['queued', 'running'].includes(run.state)) location.reload();
  }, 2000);
})();
