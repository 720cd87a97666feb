// Dates and times for people: local time of day, day separators, "last seen".

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long' });
const yearDayFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'long', year: 'numeric' });
const shortDayFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });

const DAY_MS = 86400000;

export const parseTime = (iso) => (iso ? new Date(iso) : null);

/** A local-day key: two messages with the same key get no separator between them. */
export function dayKey(date) {
  return `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
}

function startOfDay(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
}

export function dayLabel(date, now = new Date()) {
  const days = Math.round((startOfDay(now) - startOfDay(date)) / DAY_MS);
  if (days === 0) return 'Today';
  if (days === 1) return 'Yesterday';
  if (days < 7 && days > 0) return dayFormat.format(date);
  return date.getFullYear() === now.getFullYear() ? dayFormat.format(date) : yearDayFormat.format(date);
}

export const timeOfDay = (date) => timeFormat.format(date);
export const fullTime = (date) => fullFormat.format(date);

/** Short "when" for the conversation list: time today, else the day. */
export function shortWhen(date, now = new Date()) {
  if (!date) return '';
  const days = Math.round((startOfDay(now) - startOfDay(date)) / DAY_MS);
  if (days === 0) return timeOfDay(date);
  if (days === 1) return 'Yesterday';
  return shortDayFormat.format(date);
}

/** "online", "last seen 5 min ago", "last seen yesterday at 14:05", "offline". */
export function presenceText(status, lastSeenIso, now = new Date()) {
  if (status === 'online') return 'online';
  const seen = parseTime(lastSeenIso);
  if (!seen) return 'offline';
  const secs = Math.max(0, (now - seen) / 1000);
  if (secs < 60) return 'last seen just now';
  if (secs < 3600) return `last seen ${Math.floor(secs / 60)} min ago`;
  const days = Math.round((startOfDay(now) - startOfDay(seen)) / DAY_MS);
  if (days === 0) return `last seen today at ${timeOfDay(seen)}`;
  if (days === 1) return `last seen yesterday at ${timeOfDay(seen)}`;
  return `last seen ${shortDayFormat.format(seen)}`;
}
