// The safety-number screen of an encrypted DM (docs/e2e.md): the 60 digits computed from both
// identity keys, one number per device of the contact, and "Mark verified" once compared.

import { $, confirmAction, toast } from '../dom.js';

const grouped = (digits) => digits.match(/.{1,5}/g).join(' ');

export function setupSafety({ store, actions, current }) {
  $('chat-safety').addEventListener('click', async () => {
    const conv = store.conversations.get(current());
    const partner = store.partnerOf(conv);
    if (!partner || !actions.e2e) return;
    const numbers = await actions.e2e.safetyNumbers(partner);
    const name = store.nameOf(partner);
    if (!numbers.length) {
      toast(`${name} has no device with encryption keys yet.`, 'error');
      return;
    }
    const shown = numbers.map((n, i) => `Device ${i + 1}${n.verified ? ' (verified)' : ''}: ${grouped(n.number)}`).join('\n');
    const sure = await confirmAction({
      title: `Safety number with ${name}`,
      message: `Compare these numbers with ${name}'s screen, in person or on a call. If they match, nobody is in between.\n${shown}`,
      confirm: 'Mark verified',
      danger: false,
    });
    if (!sure) return;
    for (const n of numbers) await actions.e2e.markVerified(n.number);
    toast(`${name} is verified.`, 'success');
  });
}
