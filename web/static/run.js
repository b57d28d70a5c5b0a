// Follow a run: poll the JSON API, and reload when what the page shows changes state (it starts on its node,
// or ends and has outputs to show).
(() => {
  // The loss so far on a log scale, drawn as web/charts.py draws it on the server.
  const drawLoss = (curve) => {
    const line = document.getElementById('live-loss-line');
    const values = curve.map((p) => p[1]).filter((v) => v > 0 && Number.isFinite(v));
    if (!line || values.length < 2) return;
    const [width, height, pad] = [360, 120, 6];
    const logs = values.map(Math.log10);
    const low = Math.min(...logs), high = Math.max(...logs), span = (high - low) || 1;
    const step = (width - 2 * pad) / (logs.length - 1);
    line.setAttribute('points', logs.map((v, i) =>
      (pad + i * step).toFixed(1) + ',' + (pad + (high - v) / span * (height - 2 * pad)).toFixed(1)).join(' '));
    document.getElementById('live-loss-caption').textContent = 'Training loss so far, log scale: ' +
      values[0].toFixed(4) + ' → ' + values[values.length - 1].toFixed(4);
  };
  const script = document.currentScript;
  const runId = script.dataset.runId;
  const shown = script.dataset.shownState;
  const logFrom = {attempt: Number(script.dataset.logAttempt) || null, offset: Number(script.dataset.logOffset) || 0};
  setInterval(async () => {
    const r = await fetch('/api/runs/' + runId);
    if (!r.ok) return;
    const run = await r.json();
    const state = run.waiting ? 'waiting' : run.state;
    if (state !== shown) { location.reload(); return; }
    if (state === 'waiting') return;
    document.getElementById('run-progress').value = run.progress;
    const d = run.progress_detail;
    const sampling = d.phase === 'sample' && d.sample_total;
    document.getElementById('run-progress-text').textContent = Math.floor(run.progress * 100) + '%' +
      (sampling ? ' · drawing samples: denoising step ' + d.sample_step + ' / ' + d.sample_total
        : (d.phase ? ' · ' + d.phase : '') + (d.step && d.phase === 'train' ? ' · step ' + d.step + ' / ' + d.total : '')) +
      (d.loss !== undefined ? ' · loss ' + d.loss : '') +
      (run.state === 'running' && d.images_per_s ? ' · ' + d.images_per_s + ' images/s' : '') +
      (run.state === 'running' && d.gpu_memory_gb ? ' · ' + d.gpu_memory_gb + ' GB of GPU memory' : '') +
      (run.state === 'running' && d.eta_s ? ' · about ' + d.eta_s + ' s left' : '');
    document.getElementById('run-gpu-seconds').textContent = run.gpu_seconds;
    drawLoss(d.curve || []);
    // The log as the channel receives it: only what arrived since the last answer, appended.
    const box = document.getElementById('run-log');
    if (!box) return;
    const log = await fetch('/api/runs/' + runId + '/log?after=' + logFrom.offset +
      (logFrom.attempt ? '&attempt=' + logFrom.attempt : ''));
    if (log.ok) {
      const tail = await log.json();
      const fresh = tail.attempt !== logFrom.attempt;
      if (tail.lines.length) {
        const kept = fresh || box.dataset.empty === 'true' ? [] : box.textContent.split('\n');
        box.textContent = kept.concat(tail.lines).slice(-400).join('\n');
        box.dataset.empty = 'false';
        box.scrollTop = box.scrollHeight;
      }
      logFrom.attempt = tail.attempt;
      logFrom.offset = tail.offset;
    }
  }, 2000);
})();
