// The console's chain check: runs VerifyChain for the location and says what it found, with
// the newest signed checkpoint. Loaded before console.js, whose helpers ($, call, report,
// locationBase) it uses once the page runs.
'use strict';

async function verifyChain() {
  const result = $('verify-result');
  result.hidden = false;
  result.className = 'verdict';
  result.textContent = 'Verifying the chain…';
  $('verify').disabled = true;
  try {
    const verdict = await call(`${locationBase()}/verify`);
    const newest = (await call(`${locationBase()}/checkpoints?limit=1`)).checkpoints[0];
    const signed = newest
      ? `. Newest signed checkpoint: #${newest.number} at ${newest.time}, location_seq ${newest.location_seq}`
        + (newest.root ? `, tree size ${newest.tree_size}, root ${newest.root}` : '') + `, key ${newest.key_id}`
      : '. No signed checkpoints';
    if (verdict.ok) {
      result.classList.add('ok');
      result.textContent = (verdict.checked === 0
        ? 'Chain ok: no events yet'
        : `Chain ok: ${verdict.checked} events checked (${verdict.from_seq}–${verdict.to_seq}), head ${verdict.head_chain_hash}`
          + (verdict.checkpoints_checked > 0 ? `, ${verdict.checkpoints_checked} signed checkpoints matched` : ''))
        + signed;
    } else {
      const fault = verdict.fault || { location_seq: 0, kind: 'unknown', detail: '', checkpoint_number: 0 };
      result.classList.add('bad');
      result.textContent = fault.kind === 'checkpoint damaged'
        ? `Evidence damaged: signed checkpoint #${fault.checkpoint_number}: ${fault.detail}`
        : `Chain broken at location_seq ${fault.location_seq}: ${fault.kind}: ${fault.detail}`;
    }
  } catch (failure) {
    result.classList.add('bad');
    report(failure, result);
  } finally {
    $('verify').disabled = false;
  }
}
