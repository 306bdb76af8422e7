/*
 * ws-load: a WebSocket fan-out load client for the Foko chat module and
 * for nchan, with the same measurement for both.
 *
 * It opens subscriber connections to 127.0.0.1 (for the module: GET /ws,
 * then {"type":"auth","token":...} and a wait for "ready"; for nchan:
 * GET /sub/<channel>), then publishes over HTTP/1.1 keep-alive POSTs at a
 * fixed offered rate (module: POST /api/channels/:id/messages with a
 * Bearer token; nchan: POST /pub/<channel>).  The schedule is open-loop:
 * each message carries its scheduled send time (CLOCK_MONOTONIC, ns) in
 * its text, "t=<ns>;r=<room>;n=<number>;xxx...", and a delivery's latency
 * is its receive time minus that scheduled time, so a late send shows up
 * as latency instead of lowering the offered rate.
 *
 * Phases: connect, settle (until no frame arrives for 300 ms), then for
 * each rate step (--steps) over the same connections: warm-up, the
 * measured window, the drain.  Messages scheduled inside the window are
 * the measured ones: their deliveries give the latency, and their expected
 * deliveries (accepted messages x ready subscribers of the room) minus the
 * deliveries received give the loss.  "Slow" subscribers stop reading
 * after the handshake (small SO_RCVBUF): they are left out of every count.
 *
 * One JSON line of results per step goes to stdout, progress to stderr.
 * Build:
 *
 *     gcc -O2 -o ws-load ws-load.c
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


#define MAX_GROUPS     8
#define MAX_STEPS      32
#define MAX_PIDS       16
#define RBUF_SIZE      (1 << 20)
#define PUB_IN_SIZE    16384
#define WS_GUID        "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#define T_FOKO         0
#define T_NCHAN        1

/* subscriber states */
#define S_IDLE         0
#define S_CONNECTING   1
#define S_UPGRADING    2
#define S_AUTH         3
#define S_READY        4
#define S_CLOSED       5
#define S_FAILED       6

/* publisher states */
#define P_CONNECTING   1
#define P_IDLE         2
#define P_BUSY         3

/* run phases */
#define PH_CONNECT     0
#define PH_SETTLE      1
#define PH_PUBCONNECT  2
#define PH_RUN         3
#define PH_DRAIN       4
#define PH_DONE        5


typedef struct {
    char          name[64];
    uint32_t      rooms;
    uint32_t      members;
    double        base_rate;      /* messages/s over the group's rooms */
    double        rate;           /* base_rate x the step */
    uint32_t      room_base;
    uint64_t      next_k;         /* next message of the schedule */
    uint64_t      total_k;        /* messages in warm-up + window */
    uint32_t      nmax;           /* highest n per room */
} group_t;


typedef struct {
    char         *id;             /* channel id (module), name (nchan) */
    char        **tok;            /* member tokens (module) */
    uint32_t      group;
    uint32_t      subs;           /* ready, non-slow subscribers */
    uint64_t      acc_win;        /* accepted window messages */
    uint8_t      *acc;            /* their numbers, a bitmap */
    uint32_t      acc_len;
} room_t;


typedef struct {
    int           fd;
    uint8_t       state;
    uint8_t       slow;           /* one of the slow ones */
    uint8_t       stopped;        /* ... and it no longer reads */
    uint8_t       want_out;
    uint32_t      room;
    uint32_t      member;
    char          key[25];
    char         *in;             /* a partial frame or header */
    uint32_t      in_len;
    char         *out;            /* bytes not written yet */
    uint32_t      out_len;
    uint64_t      recv_win;
    int64_t       last_seq;
    uint8_t      *seen;           /* bitmap of window message numbers */
    uint32_t      seen_len;
} sub_t;


typedef struct {
    int           fd;
    uint8_t       state;
    uint8_t       want_out;
    char         *out;
    uint32_t      out_len;
    uint32_t      out_cap;
    char          in[PUB_IN_SIZE];
    uint32_t      in_len;
    int64_t       sched;
    uint32_t      room;
    uint32_t      num;
} pub_t;


typedef struct {
    uint64_t      count;
    uint64_t      max;
    uint64_t      b[64 * 128 + 256];
} hist_t;


/* configuration */
static int          target = -1;
static int          port;
static group_t      groups[MAX_GROUPS];
static int          ngroups;
static const char  *rooms_file;
static char         tag[64];
static const char  *ws_path = "/ws";
static const char  *sub_prefix = "/sub/";
static const char  *pub_prefix = "/pub/";
static int          npubs = 32;
static int          text_size = 100;
static double       warmup_s = 2, duration_s = 10, drain_s = 5;
static double       slow_frac;
static int          slow_from = 1;
static int          slow_rcvbuf = 4096;
static int          pids[MAX_PIDS];
static int          npids;
static int          db_pids[MAX_PIDS];
static int          ndb_pids;
static int          idle_mode;
static double       hold_s;
static int          max_pending = 256;
static double       connect_timeout_s = 120;
static double       settle_s = 1, settle_max_s = 60;
static double       time_limit_s = 300;
static double       steps[MAX_STEPS] = { 1 };
static int          nsteps = 1;
static const char  *label = "";
static uint64_t     seed = 0x9e3779b97f4a7c15ULL;

/* state */
static struct sockaddr_in  addr;
static int          ep;
static room_t      *rooms;
static uint32_t     nrooms;
static sub_t       *subs;
static uint32_t     nsubs;
static pub_t       *pubs;
static int         *idle_pubs;
static int          nidle;
static char        *rbuf;
static int          phase;
static int64_t      t_start, t_phase, t0, win_start, win_end, deadline;
static double       step = 1;
static int64_t      last_frame;
static int          aborted;
static const char  *abort_reason = "";

/* counters */
static uint32_t     opened, pending, ready, failed, nslow, slow_ready;
static uint64_t     connect_events;
static uint64_t     http_status[6];
static uint64_t     close_codes_ready, closed_unexpected, reset_unexpected;
static char         close_seen[256];
static uint64_t     offered_win, sent_win, unsent, accepted_win, sent_all;
static uint64_t     failed_win, pub_errors, pub_reconnects;
static uint64_t     expected, received, arrivals_win, other_events;
static uint64_t     stale, foreign, dups, out_of_order, unparsed;
static uint64_t     warm_deliveries, late_n;
static uint64_t     unanswered, delivered_unanswered;
static uint32_t     slow_gone;
static int64_t      send_lag_max;
static int          dup_check = 1;
static hist_t       lat, post_lat;
static double       connect_s, settle_time_s;
static uint64_t     rss_before[4], rss_after[4], rss_end[4];
static uint64_t     cpu_win0, cpu_win1, db_win0, db_win1;
static struct rusage  ru0, ru1;
static char         errors[1024];


static void
die(const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    fprintf(stderr, "ws-load: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}


static void
note(const char *fmt, ...)
{
    va_list  ap;
    size_t   n;

    n = strlen(errors);
    if (n + 80 >= sizeof(errors)) {
        return;
    }
    if (n) {
        errors[n++] = ';';
        errors[n++] = ' ';
    }
    va_start(ap, fmt);
    vsnprintf(errors + n, sizeof(errors) - n, fmt, ap);
    va_end(ap);
}


static void *
xalloc(size_t n)
{
    void  *p;

    p = calloc(1, n ? n : 1);
    if (p == NULL) {
        die("out of memory (%zu bytes)", n);
    }
    return p;
}


static int64_t
now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}


static uint64_t
rnd(void)
{
    /* xorshift64* */
    seed ^= seed >> 12;
    seed ^= seed << 25;
    seed ^= seed >> 27;
    return seed * 0x2545f4914f6cdd1dULL;
}


/* SHA-1 (RFC 3174), for Sec-WebSocket-Accept only */

static uint32_t
rol(uint32_t v, int n)
{
    return (v << n) | (v >> (32 - n));
}


static void
sha1(const uint8_t *data, size_t len, uint8_t out[20])
{
    size_t    total, off;
    uint8_t  *m;
    uint32_t  h[5] = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476,
                       0xc3d2e1f0 };
    uint32_t  w[80], a, b, c, d, e, f, k, t;
    uint64_t  bits;
    int       j;

    /* the message, 0x80, zeros, and the length in bits (big-endian) */
    total = ((len + 8) / 64 + 1) * 64;
    m = xalloc(total);
    memcpy(m, data, len);
    m[len] = 0x80;
    bits = (uint64_t) len * 8;
    for (j = 0; j < 8; j++) {
        m[total - 1 - j] = (uint8_t) (bits >> (8 * j));
    }

    for (off = 0; off < total; off += 64) {
        for (j = 0; j < 16; j++) {
            w[j] = (uint32_t) m[off + 4 * j] << 24
                   | (uint32_t) m[off + 4 * j + 1] << 16
                   | (uint32_t) m[off + 4 * j + 2] << 8
                   | (uint32_t) m[off + 4 * j + 3];
        }
        for (j = 16; j < 80; j++) {
            w[j] = rol(w[j - 3] ^ w[j - 8] ^ w[j - 14] ^ w[j - 16], 1);
        }

        a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4];

        for (j = 0; j < 80; j++) {
            if (j < 20) {
                f = (b & c) | (~b & d);
                k = 0x5a827999;
            } else if (j < 40) {
                f = b ^ c ^ d;
                k = 0x6ed9eba1;
            } else if (j < 60) {
                f = (b & c) | (b & d) | (c & d);
                k = 0x8f1bbcdc;
            } else {
                f = b ^ c ^ d;
                k = 0xca62c1d6;
            }
            t = rol(a, 5) + f + e + k + w[j];
            e = d; d = c; c = rol(b, 30); b = a; a = t;
        }

        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }

    free(m);

    for (j = 0; j < 5; j++) {
        out[4 * j] = (uint8_t) (h[j] >> 24);
        out[4 * j + 1] = (uint8_t) (h[j] >> 16);
        out[4 * j + 2] = (uint8_t) (h[j] >> 8);
        out[4 * j + 3] = (uint8_t) h[j];
    }
}


static void
base64(const uint8_t *in, size_t len, char *out)
{
    static const char  tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t             i;
    uint32_t           v;

    for (i = 0; i + 2 < len; i += 3) {
        v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8 | in[i + 2];
        *out++ = tab[v >> 18];
        *out++ = tab[(v >> 12) & 63];
        *out++ = tab[(v >> 6) & 63];
        *out++ = tab[v & 63];
    }

    if (len - i == 1) {
        v = (uint32_t) in[i] << 16;
        *out++ = tab[v >> 18];
        *out++ = tab[(v >> 12) & 63];
        *out++ = '=';
        *out++ = '=';

    } else if (len - i == 2) {
        v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8;
        *out++ = tab[v >> 18];
        *out++ = tab[(v >> 12) & 63];
        *out++ = tab[(v >> 6) & 63];
        *out++ = '=';
    }

    *out = '\0';
}


/* a log-linear histogram of microseconds: exact below 256, then 128
 * sub-buckets per power of two (under 0.8% error) */

static uint32_t
hist_index(uint64_t v)
{
    int  msb, shift;

    if (v < 256) {
        return (uint32_t) v;
    }

    msb = 63 - __builtin_clzll(v);
    shift = msb - 7;

    return ((uint32_t) shift << 7) + (uint32_t) (v >> shift);
}


static uint64_t
hist_value(uint32_t i)
{
    uint32_t  shift;
    uint64_t  m;

    if (i < 256) {
        return i;
    }

    shift = (i >> 7) - 1;
    m = (i & 127) + 128;

    /* the middle of the bucket */
    return (m << shift) + ((1ULL << shift) >> 1);
}


static void
hist_add(hist_t *h, int64_t ns)
{
    uint64_t  us;

    us = ns > 0 ? (uint64_t) ns / 1000 : 0;
    h->b[hist_index(us)]++;
    h->count++;
    if (us > h->max) {
        h->max = us;
    }
}


static uint64_t
hist_pct(hist_t *h, double p)
{
    uint64_t  want, seen;
    uint32_t  i;

    if (h->count == 0) {
        return 0;
    }

    want = (uint64_t) (p / 100.0 * (double) h->count);
    if (want >= h->count) {
        want = h->count - 1;
    }

    seen = 0;
    for (i = 0; i < sizeof(h->b) / sizeof(h->b[0]); i++) {
        seen += h->b[i];
        if (seen > want) {
            return hist_value(i) < h->max ? hist_value(i) : h->max;
        }
    }

    return h->max;
}


/* /proc: the CPU ticks of the given pids, and their memory */

static uint64_t
cpu_ticks(int *list, int count)
{
    char      path[64], buf[1024], *p;
    uint64_t  sum, ut, st;
    ssize_t   n;
    int       i, fd, f;

    sum = 0;

    for (i = 0; i < count; i++) {
        snprintf(path, sizeof(path), "/proc/%d/stat", list[i]);
        fd = open(path, O_RDONLY);
        if (fd == -1) {
            note("cannot read %s", path);
            continue;
        }
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0) {
            continue;
        }
        buf[n] = '\0';

        /* fields after the command name: 3 state ... 14 utime 15 stime */
        p = strrchr(buf, ')');
        if (p == NULL) {
            continue;
        }
        p += 2;
        for (f = 3; f < 14 && p; f++) {
            p = strchr(p, ' ');
            if (p) {
                p++;
            }
        }
        if (p && sscanf(p, "%lu %lu", &ut, &st) == 2) {
            sum += ut + st;
        }
    }

    return sum;
}


/* VmRSS, RssAnon, RssFile, RssShmem in kB, summed over the pids */

static void
memory(uint64_t out[4])
{
    static const char  *keys[4] = { "VmRSS:", "RssAnon:", "RssFile:",
                                    "RssShmem:" };
    char                path[64], line[256];
    unsigned long       v;
    FILE               *f;
    int                 i, k;

    memset(out, 0, 4 * sizeof(uint64_t));

    for (i = 0; i < npids; i++) {
        snprintf(path, sizeof(path), "/proc/%d/status", pids[i]);
        f = fopen(path, "r");
        if (f == NULL) {
            continue;
        }
        while (fgets(line, sizeof(line), f)) {
            for (k = 0; k < 4; k++) {
                if (strncmp(line, keys[k], strlen(keys[k])) == 0
                    && sscanf(line + strlen(keys[k]), "%lu", &v) == 1)
                {
                    out[k] += v;
                }
            }
        }
        fclose(f);
    }
}


/* rooms */

/*
 * The module's rooms, written by setup.py:
 *
 *     group NAME ROOMS MEMBERS
 *     room CHANNEL_ID
 *     tok TOKEN           (MEMBERS lines, the first one publishes)
 */

static void
load_rooms(void)
{
    struct stat   st;
    group_t      *g;
    room_t       *r;
    uint32_t      fr, fm, ri, mi, want, nlines, l, k;
    char        **lines, *data, *p, name[64];
    ssize_t       n;
    int           fd, gi, found;

    for (gi = 0; gi < ngroups; gi++) {
        nrooms += groups[gi].rooms;
    }
    rooms = xalloc(nrooms * sizeof(room_t));

    if (target == T_NCHAN) {
        ri = 0;
        for (gi = 0; gi < ngroups; gi++) {
            g = &groups[gi];
            g->room_base = ri;
            for (fr = 0; fr < g->rooms; fr++, ri++) {
                rooms[ri].id = xalloc(strlen(tag) + strlen(g->name) + 16);
                sprintf(rooms[ri].id, "%s-%s-%u", tag, g->name, fr);
                rooms[ri].group = gi;
            }
        }
        return;
    }

    if (rooms_file == NULL) {
        die("--rooms-file is needed for --target foko");
    }

    fd = open(rooms_file, O_RDONLY);
    if (fd == -1 || fstat(fd, &st) == -1) {
        die("cannot open %s: %s", rooms_file, strerror(errno));
    }
    data = xalloc(st.st_size + 1);
    n = read(fd, data, st.st_size);
    close(fd);
    if (n != st.st_size) {
        die("cannot read %s", rooms_file);
    }

    /* the lines, cut in place */
    nlines = 0;
    for (p = data; *p; p++) {
        if (*p == '\n') {
            nlines++;
        }
    }
    lines = xalloc((nlines + 2) * sizeof(char *));
    nlines = 0;
    for (p = data; *p; ) {
        lines[nlines++] = p;
        p = strchr(p, '\n');
        if (p == NULL) {
            break;
        }
        *p++ = '\0';
    }

    ri = 0;
    for (gi = 0; gi < ngroups; gi++) {
        g = &groups[gi];
        g->room_base = ri;
        found = 0;

        for (l = 0; l < nlines; l++) {
            if (sscanf(lines[l], "group %63s %u %u", name, &fr, &fm) != 3
                || strcmp(name, g->name) != 0)
            {
                continue;
            }
            if (fr < g->rooms || fm < g->members) {
                die("group %s in %s has %u rooms of %u, %u of %u wanted",
                    g->name, rooms_file, fr, fm, g->rooms, g->members);
            }
            found = 1;
            k = l + 1;

            for (want = 0; want < g->rooms; want++) {
                if (k >= nlines || strncmp(lines[k], "room ", 5) != 0) {
                    die("%s: a \"room\" line expected", rooms_file);
                }
                r = &rooms[ri++];
                r->id = lines[k++] + 5;
                r->group = gi;
                r->tok = xalloc(g->members * sizeof(char *));
                for (mi = 0; mi < fm; mi++, k++) {
                    if (k >= nlines || strncmp(lines[k], "tok ", 4) != 0) {
                        die("%s: a \"tok\" line expected", rooms_file);
                    }
                    if (mi < g->members) {
                        r->tok[mi] = lines[k] + 4;
                    }
                }
            }
            break;
        }

        if (!found) {
            die("group %s is not in %s", g->name, rooms_file);
        }
    }

    free(lines);
}


/* sockets */

static void
ep_set(int fd, uint64_t id, int out, int op)
{
    struct epoll_event  ev;

    ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
    ev.data.u64 = id;
    if (epoll_ctl(ep, op, fd, &ev) == -1) {
        die("epoll_ctl: %s", strerror(errno));
    }
}


static int
open_socket(int rcvbuf)
{
    int  fd, one;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        note("socket: %s", strerror(errno));
        return -1;
    }

    one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (rcvbuf) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    }

    if (connect(fd, (struct sockaddr *) &addr, sizeof(addr)) == -1
        && errno != EINPROGRESS)
    {
        note("connect: %s", strerror(errno));
        close(fd);
        return -1;
    }

    return fd;
}


/* close at once with a reset: no TIME_WAIT left behind across runs */

static void
close_reset(int fd)
{
    struct linger  l;

    if (fd < 0) {
        return;
    }
    l.l_onoff = 1;
    l.l_linger = 0;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
}


/* writes, or keeps what did not fit; 0 on success */

static int
send_buf(int fd, char **out, uint32_t *out_len, const char *p, size_t n)
{
    ssize_t  w;

    if (*out_len == 0) {
        w = write(fd, p, n);
        if (w == (ssize_t) n) {
            return 0;
        }
        if (w == -1) {
            if (errno != EAGAIN) {
                return -1;
            }
            w = 0;
        }
        p += w;
        n -= w;
    }

    *out = realloc(*out, *out_len + n);
    if (*out == NULL) {
        die("out of memory");
    }
    memcpy(*out + *out_len, p, n);
    *out_len += n;

    return 0;
}


static int
flush_buf(int fd, char **out, uint32_t *out_len)
{
    ssize_t  w;

    if (*out_len == 0) {
        return 0;
    }

    w = write(fd, *out, *out_len);
    if (w == -1) {
        return errno == EAGAIN ? 0 : -1;
    }

    memmove(*out, *out + w, *out_len - w);
    *out_len -= w;

    return 0;
}


/* subscribers */

static void sub_open(uint32_t i);


static int
sub_send_frame(sub_t *s, int op, const char *p, size_t n)
{
    uint8_t   hdr[14], *f;
    uint32_t  mask;
    size_t    h, i;
    int       rc;

    h = 0;
    hdr[h++] = 0x80 | op;
    if (n < 126) {
        hdr[h++] = 0x80 | n;
    } else if (n < 65536) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = n >> 8;
        hdr[h++] = n & 0xff;
    } else {
        return -1;
    }

    mask = (uint32_t) rnd();
    memcpy(hdr + h, &mask, 4);
    h += 4;

    f = xalloc(h + n);
    memcpy(f, hdr, h);
    for (i = 0; i < n; i++) {
        f[h + i] = p[i] ^ hdr[h - 4 + (i & 3)];
    }

    rc = send_buf(s->fd, &s->out, &s->out_len, (char *) f, h + n);
    free(f);

    if (rc == 0 && s->out_len && !s->want_out) {
        s->want_out = 1;
        ep_set(s->fd, s - subs, 1, EPOLL_CTL_MOD);
    }

    return rc;
}


static void
sub_stop(sub_t *s, int state)
{
    if (s->state < S_READY) {
        pending--;
        if (state == S_FAILED) {
            failed++;
        }
    }

    if (s->state == S_READY && !s->stopped) {
        rooms[s->room].subs--;
        closed_unexpected++;
    }

    if (s->fd >= 0) {
        close_reset(s->fd);
        s->fd = -1;
    }

    free(s->in);
    s->in = NULL;
    s->in_len = 0;
    free(s->out);
    s->out = NULL;
    s->out_len = 0;
    s->state = state;
}


/* from now on, never read: the server's output piles up */

static void
sub_stop_reading(sub_t *s)
{
    if (s->stopped || s->state != S_READY) {
        return;
    }
    s->stopped = 1;
    rooms[s->room].subs--;
    epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
}


static void
sub_ready(sub_t *s)
{
    pending--;
    ready++;
    s->state = S_READY;

    rooms[s->room].subs++;

    if (s->slow) {
        slow_ready++;
        if (slow_from <= 1) {
            sub_stop_reading(s);
        }
    }
}


static void
sub_open(uint32_t i)
{
    sub_t     *s = &subs[i];
    room_t    *r = &rooms[s->room];
    uint8_t    raw[16];
    uint64_t   v;
    char       req[1024];
    int        n;

    s->fd = open_socket(s->slow ? slow_rcvbuf : 0);
    opened++;
    pending++;

    if (s->fd == -1) {
        sub_stop(s, S_FAILED);
        return;
    }

    v = rnd();
    memcpy(raw, &v, 8);
    v = rnd();
    memcpy(raw + 8, &v, 8);
    base64(raw, 16, s->key);

    if (target == T_FOKO) {
        n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\n", ws_path);
    } else {
        n = snprintf(req, sizeof(req), "GET %s%s HTTP/1.1\r\n",
                     sub_prefix, r->id);
    }
    n += snprintf(req + n, sizeof(req) - n,
                  "Host: 127.0.0.1:%d\r\n"
                  "Upgrade: websocket\r\n"
                  "Connection: Upgrade\r\n"
                  "Sec-WebSocket-Key: %s\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n", port, s->key);

    /* the request goes out once the connection is up */
    s->out = xalloc(n);
    memcpy(s->out, req, n);
    s->out_len = n;
    s->want_out = 1;
    s->state = S_CONNECTING;
    ep_set(s->fd, i, 1, EPOLL_CTL_ADD);
}


static const char *
header_value(const char *h, size_t len, const char *name, size_t *vlen)
{
    const char  *p, *e, *end, *v;
    size_t       nl;

    nl = strlen(name);
    end = h + len;
    p = memchr(h, '\n', len);

    while (p && p < end) {
        p++;
        e = memchr(p, '\n', end - p);
        if (e == NULL) {
            break;
        }
        if ((size_t) (e - p) > nl && p[nl] == ':'
            && strncasecmp(p, name, nl) == 0)
        {
            v = p + nl + 1;
            while (v < e && (*v == ' ' || *v == '\t')) {
                v++;
            }
            *vlen = e - v;
            while (*vlen && (v[*vlen - 1] == '\r' || v[*vlen - 1] == ' ')) {
                (*vlen)--;
            }
            return v;
        }
        p = e;
    }

    return NULL;
}


/* the 101 answer; returns the header length, 0 for more, -1 on error */

static ssize_t
sub_upgrade(sub_t *s, char *p, size_t n)
{
    char         *e, want[64], cat[64];
    uint8_t       dig[20];
    const char   *v;
    size_t        vlen;
    char          auth[4096];
    int           len;
    room_t       *r;

    e = memmem(p, n, "\r\n\r\n", 4);
    if (e == NULL) {
        return n > 16384 ? -1 : 0;
    }
    e += 4;

    if (n < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0) {
        if (!close_seen[0]) {
            snprintf(close_seen, sizeof(close_seen), "upgrade answered %.*s",
                     (int) (memchr(p, '\r', n) ? (char *) memchr(p, '\r', n)
                                                 - p : 12), p);
        }
        return -1;
    }

    snprintf(cat, sizeof(cat), "%s%s", s->key, WS_GUID);
    sha1((uint8_t *) cat, strlen(cat), dig);
    base64(dig, 20, want);

    v = header_value(p, e - p, "Sec-WebSocket-Accept", &vlen);
    if (v == NULL || vlen != strlen(want) || memcmp(v, want, vlen) != 0) {
        note("bad Sec-WebSocket-Accept");
        return -1;
    }

    if (target == T_NCHAN) {
        sub_ready(s);

    } else {
        r = &rooms[s->room];
        len = snprintf(auth, sizeof(auth),
                       "{\"type\":\"auth\",\"token\":\"%s\"}",
                       r->tok[s->member]);
        if (len >= (int) sizeof(auth)
            || sub_send_frame(s, 1, auth, len) != 0)
        {
            return -1;
        }
        s->state = S_AUTH;
    }

    return e - p;
}


static int64_t
parse_num(const char **pp, const char *end)
{
    const char  *p = *pp;
    int64_t      v = 0;
    int          neg = 0;

    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    while (p < end && *p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        p++;
    }
    *pp = p;

    return neg ? -v : v;
}


static void
sub_message(sub_t *s, const char *p, size_t n, int64_t now)
{
    const char  *q, *end, *x;
    int64_t      t, seq;
    uint32_t     room, num;
    group_t     *g;

    end = p + n;
    seq = -1;

    if (target == T_FOKO) {
        if (memmem(p, n, "\"type\":\"message\"", 16) == NULL) {
            other_events++;
            if (phase <= PH_SETTLE) {
                connect_events++;
            }
            return;
        }
        q = memmem(p, n, "\"text\":\"t=", 10);
        if (q == NULL) {
            unparsed++;
            return;
        }
        q += 10;
        x = memmem(p, n, "\"seq\":", 6);
        if (x) {
            x += 6;
            seq = parse_num(&x, end);
        }

    } else {
        if (n < 2 || p[0] != 't' || p[1] != '=') {
            unparsed++;
            return;
        }
        q = p + 2;
    }

    t = parse_num(&q, end);
    if (end - q < 3 || memcmp(q, ";r=", 3) != 0) {
        unparsed++;
        return;
    }
    q += 3;
    room = (uint32_t) parse_num(&q, end);
    if (end - q < 3 || memcmp(q, ";n=", 3) != 0) {
        unparsed++;
        return;
    }
    q += 3;
    num = (uint32_t) parse_num(&q, end);

    if (room != s->room) {
        foreign++;
        return;
    }

    if (seq >= 0) {
        if (seq <= s->last_seq) {
            out_of_order++;
        } else {
            s->last_seq = seq;
        }
    }

    if (phase < PH_RUN) {
        stale++;
        return;
    }

    if (now >= win_start && now < win_end) {
        arrivals_win++;
    }

    if (t < win_start || t >= win_end) {
        warm_deliveries++;
        return;
    }

    g = &groups[rooms[room].group];
    if (num == 0 || num > g->nmax
        || (s->seen && num > s->seen_len * 8))
    {
        late_n++;
        return;
    }

    if (s->seen) {
        if (s->seen[(num - 1) >> 3] & (1 << ((num - 1) & 7))) {
            dups++;
            return;
        }
        s->seen[(num - 1) >> 3] |= 1 << ((num - 1) & 7);
    }

    s->recv_win++;
    received++;
    hist_add(&lat, now - t);
}


static void
sub_frames(sub_t *s, char *p, size_t n, int64_t now, size_t *used)
{
    uint8_t   b0, b1, *m;
    uint64_t  plen;
    size_t    off, h, i;
    char     *pl;
    int       op, code;

    off = 0;

    while (n - off >= 2) {
        b0 = p[off];
        b1 = p[off + 1];
        op = b0 & 0x0f;
        plen = b1 & 0x7f;
        h = 2;

        if (plen == 126) {
            if (n - off < 4) {
                break;
            }
            plen = (uint64_t) (uint8_t) p[off + 2] << 8
                   | (uint8_t) p[off + 3];
            h = 4;

        } else if (plen == 127) {
            if (n - off < 10) {
                break;
            }
            plen = 0;
            for (i = 0; i < 8; i++) {
                plen = plen << 8 | (uint8_t) p[off + 2 + i];
            }
            h = 10;
        }

        if (b1 & 0x80) {
            h += 4;
        }

        if (plen + h > RBUF_SIZE / 2) {
            note("a frame of %lu bytes", (unsigned long) plen);
            *used = (size_t) -1;
            return;
        }

        if (n - off < h + plen) {
            break;
        }

        pl = p + off + h;
        if (b1 & 0x80) {
            m = (uint8_t *) p + off + h - 4;
            for (i = 0; i < plen; i++) {
                pl[i] ^= m[i & 3];
            }
        }

        off += h + plen;
        if (op <= 0x2) {
            /* a ping does not count: the settle waits for data to end */
            last_frame = now;
        }

        switch (op) {

        case 0x1:    /* text */
            if (s->state == S_AUTH) {
                if (memmem(pl, plen, "\"type\":\"ready\"", 14)) {
                    sub_ready(s);
                    if (s->stopped) {
                        *used = off;
                        return;
                    }
                } else {
                    connect_events++;
                }
            } else {
                sub_message(s, pl, plen, now);
            }
            break;

        case 0x0:    /* a continuation: the first fragment was counted */
        case 0x2:
            break;

        case 0x9:    /* ping */
            if (sub_send_frame(s, 0xa, pl, plen) != 0) {
                *used = (size_t) -1;
                return;
            }
            break;

        case 0x8:    /* close */
            code = plen >= 2 ? ((uint8_t) pl[0] << 8 | (uint8_t) pl[1]) : 0;
            if (s->state == S_READY) {
                close_codes_ready++;
            }
            if (strlen(close_seen) < sizeof(close_seen) - 24) {
                snprintf(close_seen + strlen(close_seen),
                         sizeof(close_seen) - strlen(close_seen),
                         "%s%d%s", close_seen[0] ? "," : "", code,
                         s->state == S_READY ? "" : "(before ready)");
            }
            *used = (size_t) -2;
            return;

        default:
            break;
        }
    }

    *used = off;
}


static void
sub_read(uint32_t i, int64_t now)
{
    sub_t    *s = &subs[i];
    ssize_t   n, hl;
    size_t    len, used;

    if (s->in_len) {
        memcpy(rbuf, s->in, s->in_len);
    }
    len = s->in_len;

    n = read(s->fd, rbuf + len, RBUF_SIZE - len);
    if (n == 0 || (n == -1 && errno != EAGAIN)) {
        if (s->state == S_READY && !s->stopped) {
            reset_unexpected++;
        }
        sub_stop(s, s->state == S_READY ? S_CLOSED : S_FAILED);
        return;
    }
    if (n == -1) {
        return;
    }
    now = now_ns();
    len += n;

    used = 0;

    if (s->state == S_UPGRADING) {
        hl = sub_upgrade(s, rbuf, len);
        if (hl < 0) {
            sub_stop(s, S_FAILED);
            return;
        }
        if (hl == 0) {
            goto keep;
        }
        used = hl;
        if (s->stopped) {
            goto keep;
        }
    }

    if (used < len) {
        size_t  u;

        sub_frames(s, rbuf + used, len - used, now, &u);
        if (u == (size_t) -1 || u == (size_t) -2) {
            sub_stop(s, s->state == S_READY ? S_CLOSED : S_FAILED);
            return;
        }
        used += u;
    }

keep:

    if (s->stopped) {
        free(s->in);
        s->in = NULL;
        s->in_len = 0;
        return;
    }

    len -= used;
    if (len == 0) {
        free(s->in);
        s->in = NULL;
        s->in_len = 0;
        return;
    }

    if (len > s->in_len || s->in == NULL) {
        free(s->in);
        s->in = xalloc(len);
    }
    memcpy(s->in, rbuf + used, len);
    s->in_len = len;
}


static void
sub_event(uint32_t i, uint32_t ev, int64_t now)
{
    sub_t  *s = &subs[i];
    int     err;

    socklen_t  sl;

    if (s->state == S_CONNECTING) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            return;
        }
        err = 0;
        sl = sizeof(err);
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &sl);
        if (err) {
            if (!close_seen[0]) {
                snprintf(close_seen, sizeof(close_seen), "connect: %s",
                         strerror(err));
            }
            sub_stop(s, S_FAILED);
            return;
        }
        s->state = S_UPGRADING;
    }

    if (ev & EPOLLOUT) {
        if (flush_buf(s->fd, &s->out, &s->out_len) != 0) {
            sub_stop(s, s->state == S_READY ? S_CLOSED : S_FAILED);
            return;
        }
        if (s->out_len == 0 && s->want_out) {
            s->want_out = 0;
            ep_set(s->fd, i, 0, EPOLL_CTL_MOD);
        }
    }

    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        sub_read(i, now);
    }
}


/* publishers */

static void
pub_open(int j)
{
    pub_t  *p = &pubs[j];

    p->fd = open_socket(0);
    if (p->fd == -1) {
        die("cannot open a publisher connection");
    }
    p->state = P_CONNECTING;
    p->in_len = 0;
    p->out_len = 0;
    p->want_out = 1;
    ep_set(p->fd, nsubs + j, 1, EPOLL_CTL_ADD);
}


static void
pub_idle(int j)
{
    pubs[j].state = P_IDLE;
    idle_pubs[nidle++] = j;
}


static void
pub_fail(int j)
{
    pub_t  *p = &pubs[j];
    int     k;

    if (p->state == P_BUSY) {
        pub_errors++;
        if (p->sched >= win_start && p->sched < win_end) {
            failed_win++;
        }
    }

    if (p->state == P_IDLE) {
        for (k = 0; k < nidle; k++) {
            if (idle_pubs[k] == j) {
                idle_pubs[k] = idle_pubs[--nidle];
                break;
            }
        }
    }

    close_reset(p->fd);
    p->fd = -1;
    pub_reconnects++;

    pub_open(j);
}


static void
pub_send(int j, uint32_t room, uint32_t num, int64_t sched)
{
    pub_t   *p = &pubs[j];
    room_t  *r = &rooms[room];
    char     text[4096], hdr[4096];
    int      tl, hl, bl;

    tl = snprintf(text, sizeof(text), "t=%ld;r=%u;n=%u;", (long) sched,
                  room, num);
    while (tl < text_size && tl < (int) sizeof(text) - 1) {
        text[tl++] = 'x';
    }
    text[tl] = '\0';

    if (target == T_FOKO) {
        bl = tl + 11;       /* {"text":"...."} */
        hl = snprintf(hdr, sizeof(hdr),
                      "POST /api/channels/%s/messages HTTP/1.1\r\n"
                      "Host: 127.0.0.1:%d\r\n"
                      "Authorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\n"
                      "Content-Length: %d\r\n\r\n{\"text\":\"%s\"}",
                      r->id, port, r->tok[0], bl, text);
    } else {
        hl = snprintf(hdr, sizeof(hdr),
                      "POST %s%s HTTP/1.1\r\n"
                      "Host: 127.0.0.1:%d\r\n"
                      "Content-Type: text/plain\r\n"
                      "Content-Length: %d\r\n\r\n%s",
                      pub_prefix, r->id, port, tl, text);
    }

    p->state = P_BUSY;
    p->sched = sched;
    p->room = room;
    p->num = num;
    p->in_len = 0;
    sent_all++;
    if (sched >= win_start && sched < win_end) {
        sent_win++;
    }

    if (send_buf(p->fd, &p->out, &p->out_len, hdr, hl) != 0) {
        pub_fail(j);
        return;
    }
    if (p->out_len && !p->want_out) {
        p->want_out = 1;
        ep_set(p->fd, nsubs + j, 1, EPOLL_CTL_MOD);
    }
}


/* a complete answer in p->in: 1, more needed: 0, broken: -1 */

static int
pub_answer(pub_t *p, int *status)
{
    char        *e, *b, *end, *x;
    const char  *v;
    size_t       vlen;
    long         cl, sz;

    e = memmem(p->in, p->in_len, "\r\n\r\n", 4);
    if (e == NULL) {
        return p->in_len >= PUB_IN_SIZE ? -1 : 0;
    }
    b = e + 4;
    end = p->in + p->in_len;

    if (p->in_len < 12 || memcmp(p->in, "HTTP/1.", 7) != 0) {
        return -1;
    }
    *status = atoi(p->in + 9);

    v = header_value(p->in, b - p->in, "Content-Length", &vlen);
    if (v) {
        cl = strtol(v, NULL, 10);
        return end - b >= cl ? 1 : (p->in_len >= PUB_IN_SIZE ? -1 : 0);
    }

    v = header_value(p->in, b - p->in, "Transfer-Encoding", &vlen);
    if (v && vlen >= 7 && strncasecmp(v, "chunked", 7) == 0) {
        x = b;
        for ( ;; ) {
            e = memmem(x, end - x, "\r\n", 2);
            if (e == NULL) {
                return p->in_len >= PUB_IN_SIZE ? -1 : 0;
            }
            sz = strtol(x, NULL, 16);
            x = e + 2;
            if (sz == 0) {
                return end - x >= 2 ? 1 : 0;
            }
            if (end - x < sz + 2) {
                return p->in_len >= PUB_IN_SIZE ? -1 : 0;
            }
            x += sz + 2;
        }
    }

    /* no body (204, 304) */
    return 1;
}


static void
pub_event(int j, uint32_t ev, int64_t now)
{
    pub_t      *p = &pubs[j];
    room_t     *r;
    ssize_t     n;
    int         err, status, rc;
    socklen_t   sl;

    if (p->state == P_CONNECTING) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            return;
        }
        err = 0;
        sl = sizeof(err);
        getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &sl);
        if (err) {
            die("publisher connect: %s", strerror(err));
        }
        p->want_out = 0;
        ep_set(p->fd, nsubs + j, 0, EPOLL_CTL_MOD);
        pub_idle(j);
        return;
    }

    if (ev & EPOLLOUT) {
        if (flush_buf(p->fd, &p->out, &p->out_len) != 0) {
            pub_fail(j);
            return;
        }
        if (p->out_len == 0 && p->want_out) {
            p->want_out = 0;
            ep_set(p->fd, nsubs + j, 0, EPOLL_CTL_MOD);
        }
    }

    if (!(ev & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
        return;
    }

    n = read(p->fd, p->in + p->in_len, PUB_IN_SIZE - p->in_len);
    if (n <= 0) {
        if (n == -1 && errno == EAGAIN) {
            return;
        }
        pub_fail(j);
        return;
    }
    now = now_ns();

    if (p->state != P_BUSY) {
        /* nothing was asked */
        pub_fail(j);
        return;
    }

    p->in_len += n;
    status = 0;
    rc = pub_answer(p, &status);
    if (rc == 0) {
        return;
    }
    if (rc == -1) {
        note("a publisher answer could not be parsed");
        pub_fail(j);
        return;
    }

    http_status[status / 100 <= 5 ? status / 100 : 0]++;
    hist_add(&post_lat, now - p->sched);

    if (p->sched >= win_start && p->sched < win_end) {
        if (status / 100 == 2) {
            r = &rooms[p->room];
            accepted_win++;
            r->acc_win++;
            if (r->acc && p->num > 0 && p->num <= r->acc_len * 8) {
                r->acc[(p->num - 1) >> 3] |= 1 << ((p->num - 1) & 7);
            }
            expected += r->subs;
        } else {
            failed_win++;
        }
    }

    p->in_len = 0;
    pub_idle(j);
}


/* the schedule: the group whose next message is due first */

static int
next_due(int64_t *when)
{
    group_t  *g;
    int64_t   t, best;
    int       gi, bg;

    bg = -1;
    best = INT64_MAX;

    for (gi = 0; gi < ngroups; gi++) {
        g = &groups[gi];
        if (g->rate <= 0 || g->next_k >= g->total_k) {
            continue;
        }
        t = t0 + (int64_t) ((double) g->next_k * 1e9 / g->rate);
        if (t < best) {
            best = t;
            bg = gi;
        }
    }

    *when = best;
    return bg;
}


static void
dispatch(int64_t now)
{
    group_t  *g;
    int64_t   when;
    uint32_t  room, num;
    int       gi;

    for ( ;; ) {
        gi = next_due(&when);
        if (gi < 0 || when > now) {
            return;
        }

        if (when >= win_end) {
            return;
        }

        if (nidle == 0) {
            if (now - when > send_lag_max) {
                send_lag_max = now - when;
            }
            return;
        }

        g = &groups[gi];
        room = g->room_base + (uint32_t) (g->next_k % g->rooms);
        num = (uint32_t) (g->next_k / g->rooms) + 1;
        g->next_k++;

        if (now - when > send_lag_max) {
            send_lag_max = now - when;
        }

        pub_send(idle_pubs[--nidle], room, num, when);
    }
}


/* messages of the window that could not be sent before it ended */

static void
count_unsent(void)
{
    group_t  *g;
    int64_t   t;
    int       gi;

    for (gi = 0; gi < ngroups; gi++) {
        g = &groups[gi];
        while (g->rate > 0 && g->next_k < g->total_k) {
            t = t0 + (int64_t) ((double) g->next_k * 1e9 / g->rate);
            if (t >= win_end) {
                break;
            }
            if (t >= win_start) {
                unsent++;
            }
            g->next_k++;
        }
    }
}


/* the report */

static void
json_hist(FILE *f, const char *name, hist_t *h)
{
    fprintf(f, "\"%s\":{\"count\":%lu,\"p50\":%lu,\"p90\":%lu,"
            "\"p99\":%lu,\"p999\":%lu,\"max\":%lu}", name,
            (unsigned long) h->count,
            (unsigned long) hist_pct(h, 50),
            (unsigned long) hist_pct(h, 90),
            (unsigned long) hist_pct(h, 99),
            (unsigned long) hist_pct(h, 99.9),
            (unsigned long) h->max);
}


static uint32_t
nstopped(void)
{
    uint32_t  i, n;

    n = 0;
    for (i = 0; i < nsubs; i++) {
        if (subs[i].stopped) {
            n++;
        }
    }
    return n;
}


static double
tv_s(struct timeval *tv)
{
    return tv->tv_sec + tv->tv_usec / 1e6;
}


static void
report(void)
{
    double     win, cpu_s, db_s, tool_s, hz;
    uint32_t   conns;
    int64_t    loss;
    int        gi, k;
    FILE      *f = stdout;

    win = duration_s;
    hz = (double) sysconf(_SC_CLK_TCK);
    cpu_s = (double) (cpu_win1 - cpu_win0) / hz;
    db_s = (double) (db_win1 - db_win0) / hz;
    tool_s = tv_s(&ru1.ru_utime) + tv_s(&ru1.ru_stime)
             - tv_s(&ru0.ru_utime) - tv_s(&ru0.ru_stime);
    loss = (int64_t) expected - (int64_t) received;
    conns = ready - nstopped();

    fprintf(f, "{\"tool\":\"ws-load\",\"target\":\"%s\",\"label\":\"%s\",",
            target == T_FOKO ? "foko" : "nchan", label);
    fprintf(f, "\"mode\":\"%s\",\"step\":%g,\"aborted\":%s,"
            "\"abort_reason\":\"%s\",", idle_mode ? "idle" : "load", step,
            aborted ? "true" : "false", abort_reason);

    fprintf(f, "\"groups\":[");
    for (gi = 0; gi < ngroups; gi++) {
        fprintf(f, "%s{\"name\":\"%s\",\"rooms\":%u,\"members\":%u,"
                "\"rate\":%g}", gi ? "," : "", groups[gi].name,
                groups[gi].rooms, groups[gi].members, groups[gi].rate);
    }
    fprintf(f, "],\"pids\":[");
    for (k = 0; k < npids; k++) {
        fprintf(f, "%s%d", k ? "," : "", pids[k]);
    }
    fprintf(f, "],\"publishers\":%d,\"text_size\":%d,\"warmup_s\":%g,"
            "\"window_s\":%g,\"drain_s\":%g,\"slow_fraction\":%g,",
            npubs, text_size, warmup_s, duration_s, drain_s, slow_frac);

    fprintf(f, "\"subscribers\":%u,\"ready\":%u,\"slow\":%u,"
            "\"connect_failed\":%u,\"connect_s\":%.3f,\"settle_s\":%.3f,"
            "\"events_during_connect\":%lu,",
            nsubs, conns, nstopped(), nsubs - ready, connect_s,
            settle_time_s, (unsigned long) connect_events);

    fprintf(f, "\"rss_kb\":{\"before\":%lu,\"after_connect\":%lu,"
            "\"end\":%lu,\"anon_before\":%lu,\"anon_after\":%lu,"
            "\"shmem_before\":%lu,\"shmem_after\":%lu},"
            "\"rss_bytes_per_conn\":%.0f,\"anon_bytes_per_conn\":%.0f,",
            (unsigned long) rss_before[0], (unsigned long) rss_after[0],
            (unsigned long) rss_end[0],
            (unsigned long) rss_before[1], (unsigned long) rss_after[1],
            (unsigned long) rss_before[3], (unsigned long) rss_after[3],
            ready ? ((double) rss_after[0] - rss_before[0]) * 1024 / ready
                  : 0,
            ready ? ((double) rss_after[1] - rss_before[1]) * 1024 / ready
                  : 0);

    if (!idle_mode) {
        fprintf(f, "\"offered_msgs_per_s\":%.1f,\"sent_msgs_per_s\":%.1f,"
                "\"accepted_msgs_per_s\":%.1f,\"unsent\":%lu,"
                "\"failed_posts\":%lu,\"unanswered_posts\":%lu,"
                "\"delivered_unanswered\":%lu,\"publisher_errors\":%lu,"
                "\"send_lag_max_ms\":%.1f,",
                offered_win / win, sent_win / win, accepted_win / win,
                (unsigned long) unsent, (unsigned long) failed_win,
                (unsigned long) unanswered,
                (unsigned long) delivered_unanswered,
                (unsigned long) pub_errors, send_lag_max / 1e6);
        fprintf(f, "\"http_status\":{\"2xx\":%lu,\"3xx\":%lu,\"4xx\":%lu,"
                "\"5xx\":%lu,\"other\":%lu},",
                (unsigned long) http_status[2],
                (unsigned long) http_status[3],
                (unsigned long) http_status[4],
                (unsigned long) http_status[5],
                (unsigned long) (http_status[0] + http_status[1]));
        fprintf(f, "\"offered_deliveries_per_s\":%.1f,"
                "\"delivered_per_s\":%.1f,\"expected\":%lu,"
                "\"received\":%lu,\"loss\":%ld,\"loss_pct\":%.4f,",
                expected / win, arrivals_win / win,
                (unsigned long) expected, (unsigned long) received,
                (long) loss, expected ? 100.0 * loss / expected : 0.0);
        json_hist(f, "latency_us", &lat);
        fprintf(f, ",");
        json_hist(f, "post_latency_us", &post_lat);
        fprintf(f, ",\"duplicates\":%lu,\"duplicate_check\":%s,"
                "\"out_of_order\":%lu,\"foreign\":%lu,\"stale\":%lu,"
                "\"unparsed\":%lu,\"other_events\":%lu,",
                (unsigned long) dups, dup_check ? "true" : "false",
                (unsigned long) out_of_order, (unsigned long) foreign,
                (unsigned long) stale, (unsigned long) unparsed,
                (unsigned long) other_events);
        fprintf(f, "\"server_cpu_s\":%.3f,\"server_cpu_cores\":%.3f,"
                "\"server_cpu_us_per_delivery\":%.3f,"
                "\"db_cpu_cores\":%.3f,\"tool_cpu_cores\":%.3f,",
                cpu_s, cpu_s / win,
                arrivals_win ? cpu_s * 1e6 / arrivals_win : 0.0,
                db_s / win, tool_s / win);
    }

    fprintf(f, "\"slow_closed_by_server\":%u,", slow_gone);
    fprintf(f, "\"closed_while_ready\":%lu,\"close_frames\":%lu,"
            "\"closes\":\"%s\",\"notes\":\"%s\",\"elapsed_s\":%.3f}\n",
            (unsigned long) closed_unexpected,
            (unsigned long) close_codes_ready, close_seen, errors,
            (now_ns() - t_start) / 1e9);
    fflush(f);
}


/* the main loop */

static void
enter(int ph, int64_t now)
{
    static const char  *names[] = { "connect", "settle", "publishers",
                                    "run", "drain", "done" };

    phase = ph;
    t_phase = now;
    fprintf(stderr, "ws-load: %.1f s: %s (step %g, ready %u/%u, failed %u)"
            "\n", (now - t_start) / 1e9, names[ph], step, ready, nsubs,
            failed);
}


/* one turn of the event loop: at most "wait" ns of sleep */

static void
pump(int64_t wait)
{
    struct epoll_event  evs[1024];
    struct timespec     ts;
    uint32_t            id;
    int64_t             now;
    int                 n, k;

    now = now_ns();
    if (now >= deadline) {
        aborted = 1;
        abort_reason = "time limit";
        return;
    }
    if (wait > deadline - now) {
        wait = deadline - now;
    }
    if (wait < 0) {
        wait = 0;
    }

    ts.tv_sec = wait / 1000000000;
    ts.tv_nsec = wait % 1000000000;

    n = epoll_pwait2(ep, evs, 1024, &ts, NULL);
    if (n == -1) {
        if (errno == EINTR) {
            return;
        }
        die("epoll_pwait2: %s", strerror(errno));
    }

    now = now_ns();

    for (k = 0; k < n; k++) {
        id = (uint32_t) evs[k].data.u64;
        if (id < nsubs) {
            if (subs[id].fd >= 0) {
                sub_event(id, evs[k].events, now);
            }
        } else if (pubs[id - nsubs].fd >= 0) {
            pub_event(id - nsubs, evs[k].events, now);
        }
    }
}


/* subscribers: connected, authenticated, and the server quiet again */

static void
connect_all(void)
{
    uint32_t  next_sub, id;
    int64_t   now, quiet;

    next_sub = 0;
    quiet = 300 * 1000000LL;

    now = now_ns();
    memory(rss_before);
    enter(PH_CONNECT, now);

    while (!aborted) {
        now = now_ns();
        while (next_sub < nsubs && pending < (uint32_t) max_pending) {
            sub_open(next_sub++);
        }
        if (next_sub == nsubs && pending == 0) {
            break;
        }
        if (now - t_phase > (int64_t) (connect_timeout_s * 1e9)) {
            note("connect timeout: %u not ready", pending);
            for (id = 0; id < nsubs; id++) {
                if (subs[id].state < S_READY && subs[id].state != S_IDLE) {
                    sub_stop(&subs[id], S_FAILED);
                }
            }
            break;
        }
        pump(10 * 1000000LL);
    }

    now = now_ns();
    connect_s = (now - t_phase) / 1e9;
    last_frame = now;
    enter(PH_SETTLE, now);

    while (!aborted) {
        now = now_ns();
        if ((now - t_phase >= (int64_t) (settle_s * 1e9)
             && now - last_frame >= quiet)
            || now - t_phase >= (int64_t) (settle_max_s * 1e9))
        {
            break;
        }
        pump(10 * 1000000LL);
    }

    settle_time_s = (now_ns() - t_phase) / 1e9;
    memory(rss_after);
}


static void
reset_step(double mult)
{
    group_t  *g;
    uint32_t  i;
    int       gi;

    offered_win = sent_win = unsent = accepted_win = failed_win = 0;
    pub_errors = pub_reconnects = 0;
    expected = received = arrivals_win = other_events = 0;
    stale = foreign = dups = out_of_order = unparsed = 0;
    warm_deliveries = late_n = 0;
    unanswered = delivered_unanswered = 0;
    closed_unexpected = close_codes_ready = reset_unexpected = 0;
    send_lag_max = 0;
    memset(http_status, 0, sizeof(http_status));
    memset(&lat, 0, sizeof(lat));
    memset(&post_lat, 0, sizeof(post_lat));
    cpu_win0 = cpu_win1 = db_win0 = db_win1 = 0;

    step = mult;

    for (gi = 0; gi < ngroups; gi++) {
        g = &groups[gi];
        g->rate = g->base_rate * mult;
        g->next_k = 0;
        g->total_k = (uint64_t) (g->rate * (warmup_s + duration_s) + 0.999);
        g->nmax = (uint32_t) ((g->total_k + g->rooms - 1) / g->rooms) + 1;
        offered_win += g->total_k
                       - (uint64_t) (g->rate * warmup_s + 0.999);
    }

    for (i = 0; i < nrooms; i++) {
        rooms[i].acc_win = 0;
        if (rooms[i].acc) {
            memset(rooms[i].acc, 0, rooms[i].acc_len);
        }
    }

    for (i = 0; i < nsubs; i++) {
        subs[i].recv_win = 0;
        if (subs[i].seen) {
            memset(subs[i].seen, 0, subs[i].seen_len);
        }
    }
}


/*
 * The deliveries counted against the expected ones are those of messages
 * whose POST was answered 2xx: a POST still unanswered when the drain ends
 * may have been delivered all the same.  With the bitmaps, the deliveries
 * of such messages are set apart.
 */

static void
settle_counts(void)
{
    uint64_t  got;
    uint32_t  i, k;
    room_t   *r;
    sub_t    *s;
    int       j;

    /* the slow ones the server gave up on: no longer established */
    slow_gone = 0;
    for (i = 0; i < nsubs; i++) {
        s = &subs[i];
        if (s->stopped && s->state == S_READY && s->fd >= 0) {
            struct tcp_info  ti;
            socklen_t        tl = sizeof(ti);

            if (getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0
                && ti.tcpi_state != TCP_ESTABLISHED)
            {
                slow_gone++;
            }
        }
    }

    unanswered = 0;
    for (j = 0; j < npubs; j++) {
        if (pubs[j].state == P_BUSY && pubs[j].sched >= win_start
            && pubs[j].sched < win_end)
        {
            unanswered++;
        }
    }

    if (!dup_check) {
        return;
    }

    got = 0;
    for (i = 0; i < nsubs; i++) {
        s = &subs[i];
        if (s->seen == NULL) {
            continue;
        }
        r = &rooms[s->room];
        for (k = 0; k < s->seen_len && k < r->acc_len; k++) {
            got += __builtin_popcount(s->seen[k] & r->acc[k]);
        }
    }

    delivered_unanswered = received - got;
    received = got;
}


/* one rate step: warm-up, the window, the drain, a report line */

static void
run_step(double mult)
{
    int64_t  now, wait, when, limit;
    int      j, busy, gi;

    reset_step(mult);

    /* every publisher connected and idle */
    now = now_ns();
    enter(PH_PUBCONNECT, now);
    limit = now + 30 * 1000000000LL;
    while (!aborted && nidle < npubs && now_ns() < limit) {
        pump(10 * 1000000LL);
    }

    now = now_ns();
    t0 = now + 100 * 1000000LL;
    win_start = t0 + (int64_t) (warmup_s * 1e9);
    win_end = win_start + (int64_t) (duration_s * 1e9);
    enter(PH_RUN, now);

    while (!aborted) {
        now = now_ns();
        if (cpu_win0 == 0 && now >= win_start) {
            cpu_win0 = cpu_ticks(pids, npids) + 1;
            db_win0 = cpu_ticks(db_pids, ndb_pids);
            getrusage(RUSAGE_SELF, &ru0);
        }
        if (now >= win_end) {
            break;
        }

        dispatch(now);

        /* sleep until the next message is due, or the window changes */
        wait = 10 * 1000000LL;
        gi = next_due(&when);
        if (gi >= 0 && nidle > 0 && when - now < wait) {
            wait = when - now;
        }
        if (cpu_win0 == 0 && win_start - now < wait) {
            wait = win_start - now;
        }
        if (win_end - now < wait) {
            wait = win_end - now;
        }
        pump(wait);
    }

    if (cpu_win0 == 0) {
        cpu_win0 = cpu_ticks(pids, npids) + 1;
        db_win0 = cpu_ticks(db_pids, ndb_pids);
        getrusage(RUSAGE_SELF, &ru0);
    }
    cpu_win1 = cpu_ticks(pids, npids) + 1;
    db_win1 = cpu_ticks(db_pids, ndb_pids);
    getrusage(RUSAGE_SELF, &ru1);
    count_unsent();

    now = now_ns();
    enter(PH_DRAIN, now);

    while (!aborted) {
        now = now_ns();
        busy = 0;
        for (j = 0; j < npubs; j++) {
            if (pubs[j].state == P_BUSY) {
                busy++;
            }
        }
        if ((busy == 0 && received >= expected
             && now - t_phase > 200 * 1000000LL)
            || now - t_phase >= (int64_t) (drain_s * 1e9))
        {
            break;
        }
        pump(10 * 1000000LL);
    }

    settle_counts();
    memory(rss_end);
    report();
}


static void
run(void)
{
    int64_t  now;
    int      j, s;

    deadline = t_start + (int64_t) (time_limit_s * 1e9);

    connect_all();

    if (idle_mode) {
        now = now_ns();
        while (!aborted && now_ns() - now < (int64_t) (hold_s * 1e9)) {
            pump(10 * 1000000LL);
        }
        memory(rss_end);
        report();
        return;
    }

    for (j = 0; j < npubs; j++) {
        pub_open(j);
    }

    for (s = 0; s < nsteps && !aborted; s++) {
        if (s + 1 == slow_from) {
            for (j = 0; j < (int) nsubs; j++) {
                if (subs[j].slow) {
                    sub_stop_reading(&subs[j]);
                }
            }
        }
        run_step(steps[s]);
    }

    if (aborted && s < nsteps) {
        /* the steps not run: one line each, marked */
        for ( /* void */ ; s < nsteps; s++) {
            reset_step(steps[s]);
            report();
        }
    }
}


static void
parse_group(char *arg)
{
    group_t  *g;
    char     *a, *b, *c;

    if (ngroups == MAX_GROUPS) {
        die("at most %d --group", MAX_GROUPS);
    }
    g = &groups[ngroups++];

    a = strchr(arg, ':');
    b = a ? strchr(a + 1, ':') : NULL;
    c = b ? strchr(b + 1, ':') : NULL;
    if (c == NULL || a - arg >= (long) sizeof(g->name) || a == arg) {
        die("--group NAME:ROOMS:MEMBERS:RATE, not \"%s\"", arg);
    }

    memcpy(g->name, arg, a - arg);
    g->rooms = (uint32_t) strtoul(a + 1, NULL, 10);
    g->members = (uint32_t) strtoul(b + 1, NULL, 10);
    g->base_rate = strtod(c + 1, NULL);
    g->rate = g->base_rate;

    if (g->rooms == 0 || g->members == 0 || g->base_rate < 0) {
        die("--group %s: rooms and members must be positive", arg);
    }
}


static void
parse_pids(char *arg, int *list, int *count)
{
    char  *p;

    for (p = strtok(arg, ","); p; p = strtok(NULL, ",")) {
        if (*count == MAX_PIDS) {
            die("at most %d pids", MAX_PIDS);
        }
        list[(*count)++] = atoi(p);
    }
}


static void
parse_steps(char *arg)
{
    char  *p;

    nsteps = 0;
    for (p = strtok(arg, ","); p; p = strtok(NULL, ",")) {
        if (nsteps == MAX_STEPS) {
            die("at most %d steps", MAX_STEPS);
        }
        steps[nsteps] = strtod(p, NULL);
        if (steps[nsteps] <= 0) {
            die("--steps: positive multipliers");
        }
        nsteps++;
    }
    if (nsteps == 0) {
        die("--steps: at least one");
    }
}


static void
usage(void)
{
    fprintf(stderr,
"usage: ws-load --target foko|nchan --port N --group NAME:ROOMS:MEMBERS:RATE"
"\n               [--group ...] [options]\n"
"  --host 127.0.0.1        the only address accepted\n"
"  --rooms-file FILE       foko: channel ids and tokens (setup.py)\n"
"  --tag STR               nchan: channel names are STR-NAME-<room>\n"
"  --ws-path /ws --sub-prefix /sub/ --pub-prefix /pub/\n"
"  --publishers N          keep-alive POST connections (32)\n"
"  --size N                message text bytes (100)\n"
"  --warmup S --duration S --drain S   (2, 10, 5)\n"
"  --slow F                fraction of subscribers that never read (0)\n"
"  --slow-rcvbuf N         their SO_RCVBUF (4096)\n"
"  --slow-from-step K      they read normally before step K (1)\n"
"  --pids P,P              nginx workers: CPU and memory\n"
"  --db-pids P,P           the database: its CPU, reported apart\n"
"  --idle                  connect, measure memory, leave\n"
"  --hold S                idle: stay connected S more seconds\n"
"  --pending N             handshakes in flight at once (256)\n"
"  --connect-timeout S     (120)  --settle S (1)  --settle-max S (60)\n"
"  --time-limit S          hard stop, then report (300)\n"
"  --steps M,M,...         rate steps over the same connections: each\n"
"                          multiplies the groups' rates, one line each\n"
"  --label STR --seed N\n");
    exit(2);
}


int
main(int argc, char **argv)
{
    static struct option  opts[] = {
        { "target", 1, NULL, 'T' }, { "port", 1, NULL, 'p' },
        { "host", 1, NULL, 'H' }, { "group", 1, NULL, 'g' },
        { "rooms-file", 1, NULL, 'f' }, { "tag", 1, NULL, 't' },
        { "ws-path", 1, NULL, 'W' }, { "sub-prefix", 1, NULL, 'S' },
        { "pub-prefix", 1, NULL, 'P' }, { "publishers", 1, NULL, 'n' },
        { "size", 1, NULL, 'z' }, { "warmup", 1, NULL, 'w' },
        { "duration", 1, NULL, 'd' }, { "drain", 1, NULL, 'D' },
        { "slow", 1, NULL, 's' }, { "slow-rcvbuf", 1, NULL, 'R' },
        { "pids", 1, NULL, 'i' }, { "db-pids", 1, NULL, 'B' },
        { "idle", 0, NULL, 'I' },
        { "hold", 1, NULL, 'o' }, { "pending", 1, NULL, 'q' },
        { "connect-timeout", 1, NULL, 'c' }, { "settle", 1, NULL, 'e' },
        { "settle-max", 1, NULL, 'E' }, { "time-limit", 1, NULL, 'L' },
        { "label", 1, NULL, 'l' }, { "seed", 1, NULL, 'r' },
        { "steps", 1, NULL, 'x' }, { "slow-from-step", 1, NULL, 'F' },
        { "help", 0, NULL, 'h' }, { NULL, 0, NULL, 0 }
    };
    const char  *host = "127.0.0.1";
    group_t     *g;
    uint64_t     bitmap_bytes;
    uint32_t     ri, mi, si, want_slow, nmax;
    double       acc, smax;
    int          c, gi;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'T':
            if (strcmp(optarg, "foko") == 0) {
                target = T_FOKO;
            } else if (strcmp(optarg, "nchan") == 0) {
                target = T_NCHAN;
            } else {
                die("--target foko or nchan");
            }
            break;
        case 'p': port = atoi(optarg); break;
        case 'H': host = optarg; break;
        case 'g': parse_group(optarg); break;
        case 'f': rooms_file = optarg; break;
        case 't': snprintf(tag, sizeof(tag), "%s", optarg); break;
        case 'W': ws_path = optarg; break;
        case 'S': sub_prefix = optarg; break;
        case 'P': pub_prefix = optarg; break;
        case 'n': npubs = atoi(optarg); break;
        case 'z': text_size = atoi(optarg); break;
        case 'w': warmup_s = atof(optarg); break;
        case 'd': duration_s = atof(optarg); break;
        case 'D': drain_s = atof(optarg); break;
        case 's': slow_frac = atof(optarg); break;
        case 'R': slow_rcvbuf = atoi(optarg); break;
        case 'i': parse_pids(optarg, pids, &npids); break;
        case 'B': parse_pids(optarg, db_pids, &ndb_pids); break;
        case 'I': idle_mode = 1; break;
        case 'o': hold_s = atof(optarg); break;
        case 'q': max_pending = atoi(optarg); break;
        case 'c': connect_timeout_s = atof(optarg); break;
        case 'e': settle_s = atof(optarg); break;
        case 'E': settle_max_s = atof(optarg); break;
        case 'L': time_limit_s = atof(optarg); break;
        case 'l': label = optarg; break;
        case 'r': seed = strtoull(optarg, NULL, 0) | 1; break;
        case 'x': parse_steps(optarg); break;
        case 'F': slow_from = atoi(optarg); break;
        default: usage();
        }
    }

    if (target < 0 || port <= 0 || port > 65535 || ngroups == 0) {
        usage();
    }

    /* loopback only: refuse anything else */
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1
        || addr.sin_addr.s_addr != htonl(INADDR_LOOPBACK))
    {
        die("only 127.0.0.1 is allowed, not \"%s\"", host);
    }

    if (npubs < 1 || text_size < 32 || text_size > 4000 || duration_s <= 0
        || slow_frac < 0 || slow_frac >= 1 || max_pending < 1)
    {
        die("bad --publishers, --size (32-4000), --duration, --slow or "
            "--pending");
    }

    if (tag[0] == '\0') {
        snprintf(tag, sizeof(tag), "b%lx", (unsigned long) now_ns());
    }

    t_start = now_ns();
    seed ^= (uint64_t) t_start;
    load_rooms();

    /* the bitmaps of the duplicate check, sized for the highest step */
    smax = 0;
    for (c = 0; c < nsteps; c++) {
        smax = steps[c] > smax ? steps[c] : smax;
    }
    bitmap_bytes = 0;
    for (gi = 0; gi < ngroups; gi++) {
        g = &groups[gi];
        nmax = (uint32_t) ((g->base_rate * smax * (warmup_s + duration_s)
                            + 1) / g->rooms) + 2;
        g->nmax = nmax;
        nsubs += g->rooms * g->members;
        bitmap_bytes += (uint64_t) g->rooms * g->members * ((nmax + 7) / 8);
    }

    if (bitmap_bytes > (512ULL << 20)) {
        dup_check = 0;
    }

    subs = xalloc(nsubs * sizeof(sub_t));
    pubs = xalloc(npubs * sizeof(pub_t));
    idle_pubs = xalloc(npubs * sizeof(int));
    rbuf = xalloc(RBUF_SIZE + 16);

    /* subscribers: room by room; every 1/slow-th one is slow */
    si = 0;
    acc = 0;
    want_slow = 0;
    for (gi = 0; gi < ngroups; gi++) {
        g = &groups[gi];
        for (ri = 0; ri < g->rooms; ri++) {
            for (mi = 0; mi < g->members; mi++, si++) {
                subs[si].fd = -1;
                subs[si].room = g->room_base + ri;
                subs[si].member = mi;
                subs[si].last_seq = -1;
                acc += slow_frac;
                if (acc >= want_slow + 1) {
                    subs[si].slow = 1;
                    want_slow++;
                    nslow++;
                }
                if (dup_check && !idle_mode) {
                    subs[si].seen_len = (g->nmax + 7) / 8;
                    subs[si].seen = xalloc(subs[si].seen_len);
                }
            }
        }
    }
    for (c = 0; c < npubs; c++) {
        pubs[c].fd = -1;
    }
    if (dup_check && !idle_mode) {
        for (ri = 0; ri < nrooms; ri++) {
            rooms[ri].acc_len = (groups[rooms[ri].group].nmax + 7) / 8;
            rooms[ri].acc = xalloc(rooms[ri].acc_len);
        }
    }

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep == -1) {
        die("epoll_create1: %s", strerror(errno));
    }

    fprintf(stderr, "ws-load: %s, %u subscribers (%u slow), %u rooms, "
            "%d publishers, port %d\n", target == T_FOKO ? "foko" : "nchan",
            nsubs, nslow, nrooms, idle_mode ? 0 : npubs, port);

    run();

    /* everything closes at exit; resets leave no TIME_WAIT behind */
    for (si = 0; si < nsubs; si++) {
        close_reset(subs[si].fd);
    }
    for (c = 0; c < npubs; c++) {
        close_reset(pubs[c].fd);
    }

    return aborted ? 1 : 0;
}
