import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from 'react';
import { useVirtualizer } from '@tanstack/react-virtual';
import { loadOlder, usePending, useTimeline } from '../../lib/chat-store';
import { markSeen } from '../../lib/live';
import type { UserRef } from '../../lib/types';
import { MessageItem, PendingItem } from './MessageItem';
import { buildRows, type Row } from './rows';

interface MessageListProps {
  channelId: string;
  channelName: string;
  me: UserRef | null;
}

// The page above starts loading while this many screens (at least
// LOAD_OLDER_MIN px) are still left above the view, so a reader scrolling
// back fast rarely reaches the top before it arrives.
const LOAD_OLDER_SCREENS = 3;
const LOAD_OLDER_MIN = 1200;
// How close to the bottom (px) still counts as "at the bottom".
const AT_END = 48;

// The conversation's history, virtualized: only the rows on screen (and a
// few around them) are in the DOM, each measured as it renders, so 10,000
// messages scroll like 10. The list stays pinned to the newest message while
// the reader is there; older pages load above without moving what is on
// screen (the virtualizer anchors to the first visible row by key).
export function MessageList({ channelId, channelName, me }: MessageListProps) {
  const timeline = useTimeline(channelId);
  const pending = usePending(channelId);
  const rows = useMemo(
    () => buildRows(timeline.messages, pending, me, timeline.hasOlder),
    [timeline.messages, pending, me, timeline.hasOlder],
  );
  const scrollRef = useRef<HTMLDivElement>(null);
  const [atEnd, setAtEnd] = useState(true);
  const [unseenBelow, setUnseenBelow] = useState(false);

  const virtualizer = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scrollRef.current,
    estimateSize: (i) => estimate(rows[i]),
    getItemKey: (i) => rows[i]?.key ?? i,
    overscan: 8,
    paddingEnd: 8,
    anchorTo: 'end',
    followOnAppend: true,
    scrollEndThreshold: AT_END,
  });
  // A row whose top is above the view and that changes size (the oldest
  // loaded message joining the group of the page that arrived above it, an
  // edit up there) keeps what is on screen in place. The virtualizer's
  // default leaves such rows alone while the reader scrolls up, and the
  // view then jumps by the row's lost header.
  virtualizer.shouldAdjustScrollPositionOnItemSizeChange = (item, _delta, v) =>
    item.start < (v.scrollOffset ?? 0);

  // the highest message on screen counts as read while the tab is visible
  const reportSeen = useCallback(() => {
    const el = scrollRef.current;
    if (!el || document.visibilityState !== 'visible') return;
    const bottom = el.scrollTop + el.clientHeight;
    const items = virtualizer.getVirtualItems();
    for (let i = items.length - 1; i >= 0; i--) {
      const item = items[i]!;
      if (item.start + Math.min(item.size, 24) > bottom) continue;
      const row = rows[item.index];
      if (row?.kind === 'message') {
        markSeen(channelId, row.message.seq);
        return;
      }
    }
  }, [channelId, rows, virtualizer]);

  const maybeLoadOlder = useCallback(() => {
    const el = scrollRef.current;
    if (!el || !timeline.loaded || !timeline.hasOlder || timeline.loadingOlder) return;
    const ahead = Math.max(LOAD_OLDER_MIN, LOAD_OLDER_SCREENS * el.clientHeight);
    if (el.scrollTop < ahead) void loadOlder(channelId);
  }, [channelId, timeline.loaded, timeline.hasOlder, timeline.loadingOlder]);

  const onScroll = () => {
    const el = scrollRef.current;
    if (!el) return;
    const end = el.scrollHeight - el.scrollTop - el.clientHeight <= AT_END;
    setAtEnd(end);
    if (end) setUnseenBelow(false);
    maybeLoadOlder();
    reportSeen();
  };

  // the first page: start at the newest message
  const startedRef = useRef(false);
  useLayoutEffect(() => {
    if (!timeline.loaded || startedRef.current || rows.length === 0) return;
    startedRef.current = true;
    virtualizer.scrollToEnd();
  }, [timeline.loaded, rows.length, virtualizer]);

  // something new at the bottom: follow it if the reader is there or wrote
  // it; else offer a jump
  const lastRef = useRef<Row | undefined>(undefined);
  const last = rows[rows.length - 1];
  useEffect(() => {
    const prev = lastRef.current;
    lastRef.current = last;
    if (!prev || !last || prev.key === last.key || !startedRef.current) return;
    if (last.kind === 'pending') {
      virtualizer.scrollToEnd();
      setUnseenBelow(false);
    } else if (!atEnd && last.kind === 'message' && last.message.author.id !== me?.id) {
      setUnseenBelow(true);
    }
  }, [last, atEnd, me, virtualizer]);

  // short pages may not fill the screen: keep loading while the top shows
  useEffect(() => {
    maybeLoadOlder();
    reportSeen();
  }, [rows, maybeLoadOlder, reportSeen]);

  useEffect(() => {
    const onVisible = () => reportSeen();
    document.addEventListener('visibilitychange', onVisible);
    window.addEventListener('focus', onVisible);
    return () => {
      document.removeEventListener('visibilitychange', onVisible);
      window.removeEventListener('focus', onVisible);
    };
  }, [reportSeen]);

  const items = virtualizer.getVirtualItems();

  return (
    <div className="message-list">
      <div
        ref={scrollRef}
        className="message-scroller"
        role="log"
        aria-label="Messages"
        aria-live="polite"
        tabIndex={0}
        onScroll={onScroll}
      >
        {!timeline.loaded ? (
          <TimelineState error={timeline.error} />
        ) : (
          <div className="message-rows" style={{ height: virtualizer.getTotalSize() }}>
            {items.map((item) => {
              const row = rows[item.index];
              if (!row) return null;
              return (
                <div
                  key={item.key}
                  data-index={item.index}
                  ref={virtualizer.measureElement}
                  className="message-row"
                  style={{ transform: `translateY(${item.start}px)` }}
                >
                  {renderRow(row, me, channelName)}
                </div>
              );
            })}
          </div>
        )}
      </div>
      {timeline.loaded && timeline.hasOlder && (timeline.loadingOlder || timeline.error) && (
        <div className="history-loading">
          {timeline.error ? (
            <>
              <span role="alert">{timeline.error}</span>
              <button type="button" className="link-button" onClick={() => void loadOlder(channelId)}>
                Try again
              </button>
            </>
          ) : (
            <>
              <span className="spinner" aria-hidden="true" />
              Loading earlier messages…
            </>
          )}
        </div>
      )}
      {unseenBelow && !atEnd && (
        <button
          type="button"
          className="jump-button"
          onClick={() => {
            // a smooth ride over a long way back would take ages
            const el = scrollRef.current;
            const far = el !== null && el.scrollHeight - el.scrollTop > 4 * el.clientHeight;
            virtualizer.scrollToEnd({ behavior: far ? 'auto' : 'smooth' });
            setUnseenBelow(false);
          }}
        >
          New messages
          <svg viewBox="0 0 20 20" width="14" height="14" aria-hidden="true">
            <path d="M10 4v11M5 10l5 5 5-5" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round" strokeLinejoin="round" />
          </svg>
        </button>
      )}
    </div>
  );
}

function estimate(row: Row | undefined): number {
  if (!row || row.kind === 'start') return 72;
  let h = row.grouped ? 26 : 58;
  if (row.day) h += 40;
  return h;
}

function renderRow(row: Row, me: UserRef | null, channelName: string) {
  switch (row.kind) {
    case 'start':
      return (
        <div className="history-start">
          <strong>This is the beginning of {channelName}.</strong>
          <span>Everyone in the conversation sees the same history.</span>
        </div>
      );
    case 'message':
      return <MessageItem message={row.message} me={me} grouped={row.grouped} day={row.day} />;
    case 'pending':
      return <PendingItem pending={row.pending} me={me} grouped={row.grouped} day={row.day} />;
  }
}

function TimelineState({ error }: { error: string | null }) {
  if (error) {
    return (
      <div className="timeline-state">
        <p role="alert">{error}</p>
      </div>
    );
  }
  return (
    <div className="timeline-state" aria-busy="true">
      <span className="spinner" aria-hidden="true" />
      <span>Loading messages…</span>
    </div>
  );
}
