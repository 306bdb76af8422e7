// Dates and times as a person reads them, in their own locale (Intl).

const timeFormat = new Intl.DateTimeFormat(undefined, {
  hour: 'numeric',
  minute: '2-digit',
});
const weekdayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'short' });
const shortDateFormat = new Intl.DateTimeFormat(undefined, {
  month: 'short',
  day: 'numeric',
});
const dayFormat = new Intl.DateTimeFormat(undefined, {
  weekday: 'long',
  month: 'long',
  day: 'numeric',
});
const dayWithYearFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: 'long',
  day: 'numeric',
});
const fullFormat = new Intl.DateTimeFormat(undefined, {
  dateStyle: 'full',
  timeStyle: 'short',
});

const DAY_MS = 24 * 60 * 60 * 1000;

function startOfDay(d: Date): number {
  return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
}

// Whole calendar days between the two dates' days (0: the same day).
function daysBetween(earlier: Date, later: Date): number {
  return Math.round((startOfDay(later) - startOfDay(earlier)) / DAY_MS);
}

// "14:05" (or "2:05 PM"), the time of a message.
export function formatTime(iso: string): string {
  return timeFormat.format(new Date(iso));
}

// "Tuesday, 4 March 2025 at 14:05", for a tooltip.
export function formatFull(iso: string): string {
  return fullFormat.format(new Date(iso));
}

// A local calendar day, used to split a conversation by day.
export function dayKey(iso: string): string {
  const d = new Date(iso);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

// "Today", "Yesterday", "Monday, March 3" or "March 3, 2024".
export function formatDay(iso: string, now = new Date()): string {
  const d = new Date(iso);
  const days = daysBetween(d, now);
  if (days === 0) return 'Today';
  if (days === 1) return 'Yesterday';
  if (d.getFullYear() === now.getFullYear()) return dayFormat.format(d);
  return dayWithYearFormat.format(d);
}

// Compact relative time for the channel list: "now", "5 min", "14:05",
// "Yesterday", "Mon", "Mar 3".
export function formatRelative(iso: string, now = new Date()): string {
  const d = new Date(iso);
  const ms = now.getTime() - d.getTime();
  if (ms < 60_000) return 'now';
  if (ms < 60 * 60_000) return `${Math.floor(ms / 60_000)} min`;
  const days = daysBetween(d, now);
  if (days === 0) return timeFormat.format(d);
  if (days === 1) return 'Yesterday';
  if (days < 7) return weekdayFormat.format(d);
  return shortDateFormat.format(d);
}
