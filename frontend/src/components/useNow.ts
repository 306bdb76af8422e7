import { useEffect, useState } from 'react';

// The current time, refreshed every `everyMs`: for labels such as "5 min"
// or a countdown that must move on by themselves.
export function useNow(everyMs: number, enabled = true): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!enabled) return;
    setNow(Date.now());
    const id = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(id);
  }, [everyMs, enabled]);
  return now;
}
