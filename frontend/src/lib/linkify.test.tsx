import { describe, expect, it } from 'vitest';
import { render } from '@testing-library/react';
import { Linkified, safeHref, splitLinks } from './linkify';

function view(text: string) {
  const { container } = render(
    <p>
      <Linkified text={text} />
    </p>,
  );
  return container.querySelector('p')!;
}

describe('linkify', () => {
  it('links http and https URLs, safely', () => {
    const p = view('see https://example.com/a?b=1#c and http://x.org now');
    const links = [...p.querySelectorAll('a')];
    expect(links.map((a) => a.getAttribute('href'))).toEqual([
      'https://example.com/a?b=1#c',
      'http://x.org/',
    ]);
    for (const a of links) {
      expect(a.getAttribute('rel')).toBe('noopener noreferrer');
      expect(a.getAttribute('target')).toBe('_blank');
    }
    expect(p.textContent).toBe('see https://example.com/a?b=1#c and http://x.org now');
  });

  it('leaves trailing punctuation out of the link', () => {
    expect(splitLinks('Go to https://example.com/x. Then (https://a.org/b), ok!')).toEqual([
      { text: 'Go to ' },
      { text: 'https://example.com/x', href: 'https://example.com/x' },
      { text: '. Then (' },
      { text: 'https://a.org/b', href: 'https://a.org/b' },
      { text: '), ok!' },
    ]);
    expect(splitLinks('"https://example.com/?q=1"!?')[1]).toEqual({
      text: 'https://example.com/?q=1',
      href: 'https://example.com/?q=1',
    });
  });

  it('keeps a balanced closing parenthesis inside the link', () => {
    const parts = splitLinks('https://en.wikipedia.org/wiki/Foo_(bar).');
    expect(parts[0]).toEqual({
      text: 'https://en.wikipedia.org/wiki/Foo_(bar)',
      href: 'https://en.wikipedia.org/wiki/Foo_(bar)',
    });
    expect(parts[1]).toEqual({ text: '.' });
  });

  it('links www. addresses over https', () => {
    const p = view('at www.example.com, later');
    expect(p.querySelector('a')!.getAttribute('href')).toBe('https://www.example.com/');
    expect(p.querySelector('a')!.textContent).toBe('www.example.com');
  });

  it('renders HTML as text, never as elements', () => {
    const text = '<img src=x onerror=alert(1)> <script>alert(2)</script> <b>bold</b>';
    const p = view(text);
    expect(p.querySelector('img')).toBeNull();
    expect(p.querySelector('script')).toBeNull();
    expect(p.querySelector('b')).toBeNull();
    expect(p.children.length).toBe(0);
    expect(p.textContent).toBe(text);
  });

  it('never links javascript:, data: or other schemes', () => {
    const text =
      'javascript:alert(1) JAVASCRIPT://x%0aalert(1) data:text/html,<b>x</b> vbscript:x ftp://x.org';
    const p = view(text);
    expect(p.querySelectorAll('a').length).toBe(0);
    expect(p.textContent).toBe(text);
    expect(safeHref('javascript:alert(1)')).toBeNull();
    expect(safeHref('data:text/html,x')).toBeNull();
  });

  it('does not let a link swallow markup or quotes', () => {
    const p = view('https://example.com/"><img src=x onerror=alert(1)>');
    const a = p.querySelector('a')!;
    expect(a.getAttribute('href')).toBe('https://example.com/');
    expect(p.querySelector('img')).toBeNull();
    expect(p.textContent).toBe('https://example.com/"><img src=x onerror=alert(1)>');
  });

  it('leaves a bare scheme and ordinary text alone', () => {
    expect(splitLinks('http:// and https://')).toEqual([{ text: 'http:// and https://' }]);
    expect(splitLinks('')).toEqual([]);
    expect(splitLinks('no links here')).toEqual([{ text: 'no links here' }]);
  });
});
