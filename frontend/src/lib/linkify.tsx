// Turns message text into React nodes: the text itself as strings (React
// escapes them) and <a> elements for http(s) links and www. addresses.
// Nothing is ever parsed as HTML.

import type { ReactNode } from 'react';

const CANDIDATE = /(?:\bhttps?:\/\/|\bwww\.)[^\s<>"]+/gi;
const TRAILING = /[.,;:!?'"\])}>*_~]+$/;

function balance(url: string): string {
  // keep a closing bracket that closes one inside the link (Wikipedia
  // style "..._(film)"), drop any other trailing punctuation
  let u = url;
  for (;;) {
    const m = TRAILING.exec(u);
    if (!m) return u;
    let cut = m[0];
    while (cut.length > 0) {
      const last = cut[cut.length - 1]!;
      const open = last === ')' ? '(' : last === ']' ? '[' : last === '}' ? '{' : null;
      if (open) {
        const body = u.slice(0, u.length - cut.length + 1);
        const opens = body.split(open).length - 1;
        const closes = body.split(last).length - 1;
        if (opens >= closes) break; // balanced: this one belongs to the link
      }
      cut = cut.slice(0, -1);
      u = u.slice(0, -1);
    }
    if (cut.length > 0) return u;
  }
}

// The href for a found link, or null when it is not a usable http(s) URL.
export function safeHref(text: string): string | null {
  const candidate = /^www\./i.test(text) ? `https://${text}` : text;
  let url: URL;
  try {
    url = new URL(candidate);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  if (!url.hostname) return null;
  return url.href;
}

export interface LinkPart {
  text: string;
  href?: string;
}

// The text cut into plain parts and links.
export function splitLinks(text: string): LinkPart[] {
  const parts: LinkPart[] = [];
  let at = 0;
  for (const m of text.matchAll(CANDIDATE)) {
    const start = m.index;
    const raw = balance(m[0]);
    const href = raw.length > 0 ? safeHref(raw) : null;
    if (!href || /^(?:https?:\/\/|www\.)$/i.test(raw)) continue;
    if (start > at) parts.push({ text: text.slice(at, start) });
    parts.push({ text: raw, href });
    at = start + raw.length;
  }
  if (at < text.length) parts.push({ text: text.slice(at) });
  return parts;
}

export function linkify(text: string): ReactNode[] {
  return splitLinks(text).map((p, i) =>
    p.href ? (
      <a key={i} href={p.href} rel="noopener noreferrer" target="_blank">
        {p.text}
      </a>
    ) : (
      p.text
    ),
  );
}

export function Linkified({ text }: { text: string }) {
  return <>{linkify(text)}</>;
}
