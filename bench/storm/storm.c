/*
 * storm: the reconnect storm after "nginx -s reload", measured from the
 * clients' side.
 *
 * It reads a plan (setup.py) of channels and users, opens one WebSocket
 * per user to 127.0.0.1 (GET /ws, {"type":"auth"}, wait for "ready"),
 * then posts at a fixed rate over REST (keep-alive, open loop, every
 * channel in turn, with a unique client_id, resent on a new connection if
 * the old one closes before its answer), sends SIGHUP to nginx's master
 * (a reload) and watches every client: the 1001 close, a reconnect after
 * a jittered delay (--jitter-min .. --jitter-max ms), "ready", then a
 * "resume" from the last seq it saw when "ready" shows the channel ahead,
 * until "resumed".  A client is resumed at "ready" when it is not behind,
 * else at "resumed".  Each client tracks its channel's seqs: a seq at or
 * below the last one seen is a duplicate, one past last + 1 a gap.  At the
 * end every client's last seq must be its channel's highest acknowledged
 * seq.
 *
 * Output: one JSON object on stdout; progress on stderr.
 *
 *     gcc -O2 -o storm storm.c
 *     storm --port P --plan plan.txt --master-pid PID [--rate 20]
 *           [--before 10] [--after 5] [--storm-timeout 360]
 *           [--connect-timeout 900] [--jitter-min 50] [--jitter-max 500]
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#define C_IDLE      0       /* waiting to (re)connect */
#define C_CONN      1
#define C_UPGRADE   2
#define C_AUTH      3
#define C_RESUMING  4
#define C_READY     5

#define MAX_INFLIGHT_HS  400
#define INBUF            65536
#define NPOSTERS         4
#define MAX_SEQ          8192


typedef struct {
    char      id[25];
    char     *tok;
    int64_t   acked_max;
    uint64_t  next_n;
} chan_t;

typedef struct {
    int       fd;
    int       state;
    int       ch;
    char     *tok;
    char     *in;
    size_t    in_len;
    int64_t   last;           /* last seq seen, -1 before the first ready */
    int64_t   ready_seq;
    double    reconnect_at;
    double    closed_at;      /* the 1001 of the storm */
    double    resumed_at;
    int       storm;          /* closed by the reload, not resumed yet */
    int       needed_resume;
    uint64_t  dups, gaps, closes, msgs;
    uint64_t  dups_resume, gaps_resume;   /* while resuming */
    int64_t   first_seq;      /* last_seq of the first ready */
    uint8_t  *seen;           /* times each seq arrived, up to MAX_SEQ */
    int       last_close;
} client_t;

typedef struct {
    int       fd;
    int       busy;
    int       connected;
    char      req[1024];
    size_t    req_len;
    char      in[8192];
    size_t    in_len;
    double    sent_at;
    int       ch;
    double    sched;
} poster_t;


static client_t  *cl;
static int        ncl;
static chan_t    *chs;
static int        nch;
static int        ep;
static int        port;
static poster_t   posters[NPOSTERS];
static int        inflight_hs;

static double    *post_lat_before, *post_lat_storm;
static size_t     nlat_before, nlat_storm, lat_cap = 1 << 20;
static uint64_t   acks_before, acks_storm, acks_after, post_fail, resent;
static double     t_reload, t_all_resumed, t_post_start, t_before_end;
static int        phase;
static uint64_t   anomalies;      /* 0 connect, 1 before, 2 storm, 3 after */


static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static int
tcp_connect(void)
{
    int                 fd, one = 1;
    struct sockaddr_in  sa;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0
        && errno != EINPROGRESS)
    {
        close(fd);
        return -1;
    }
    return fd;
}


static void
ep_add(int fd, uint32_t ev, uint64_t tag)
{
    struct epoll_event e = { .events = ev, .data.u64 = tag };
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
}


static void
ep_mod(int fd, uint32_t ev, uint64_t tag)
{
    struct epoll_event e = { .events = ev, .data.u64 = tag };
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
}


/* a masked text frame */
static int
ws_send(int fd, const char *s, size_t n)
{
    char     buf[8192];
    size_t   h = 0, i;
    uint8_t  mask[4] = { 0x11, 0x22, 0x33, 0x44 };

    if (n + 14 > sizeof(buf)) {
        return -1;
    }
    buf[h++] = (char) 0x81;
    if (n < 126) {
        buf[h++] = (char) (0x80 | n);
    } else {
        buf[h++] = (char) (0x80 | 126);
        buf[h++] = (char) (n >> 8);
        buf[h++] = (char) (n & 0xff);
    }
    memcpy(buf + h, mask, 4);
    h += 4;
    for (i = 0; i < n; i++) {
        buf[h + i] = s[i] ^ mask[i & 3];
    }
    return write(fd, buf, h + n) == (ssize_t) (h + n) ? 0 : -1;
}


static void
ws_pong(int fd, const char *p, size_t n)
{
    char     buf[200];
    size_t   i;

    if (n > 125) {
        return;
    }
    buf[0] = (char) 0x8a;
    buf[1] = (char) (0x80 | n);
    memset(buf + 2, 0, 4);
    for (i = 0; i < n; i++) {
        buf[6 + i] = p[i];
    }
    (void) write(fd, buf, 6 + n);
}


static void
client_start(int i)
{
    client_t  *c = &cl[i];

    c->fd = tcp_connect();
    if (c->fd < 0) {
        c->reconnect_at = now() + 0.2;
        return;
    }
    c->state = C_CONN;
    c->in_len = 0;
    inflight_hs++;
    ep_add(c->fd, EPOLLOUT | EPOLLIN, (uint64_t) i);
}


static void
client_drop(int i, double retry_in)
{
    client_t  *c = &cl[i];

    if (c->fd >= 0) {
        close(c->fd);
    }
    if (c->state >= C_CONN && c->state <= C_AUTH) {
        inflight_hs--;
    }
    c->fd = -1;
    c->state = C_IDLE;
    c->reconnect_at = now() + retry_in;
}


static int64_t
json_int(const char *p, const char *end, const char *key)
{
    const char  *k = memmem(p, end - p, key, strlen(key));

    if (k == NULL) {
        return -1;
    }
    return strtoll(k + strlen(key), NULL, 10);
}


static void
client_resumed(client_t *c, double t)
{
    if (c->storm) {
        c->resumed_at = t;
        c->storm = 0;
    }
    c->state = C_READY;
}


static void
client_message(int i, const char *p, size_t n)
{
    client_t    *c = &cl[i];
    const char  *end = p + n;
    int64_t      seq;
    char         buf[256];
    int          len;

    if (memmem(p, n, "\"type\":\"message\"", 16) != NULL) {
        seq = json_int(p, end, "\"seq\":");
        c->msgs++;
        if (seq > 0 && seq < MAX_SEQ && c->seen[seq] < 255) {
            c->seen[seq]++;
        }
        if (c->last >= 0 && (seq <= c->last || seq > c->last + 1)) {
            if (c->state == C_RESUMING) {
                if (seq <= c->last) {
                    c->dups_resume++;
                } else {
                    c->gaps_resume++;
                }
            } else if (seq <= c->last) {
                c->dups++;
            } else {
                c->gaps++;
            }
            if (anomalies++ < 20) {
                fprintf(stderr, "storm: client %d (%s): seq %lld after "
                        "%lld, state %d, ready_seq %lld, closes %llu, "
                        "%.3f s after the reload\n", i,
                        seq <= c->last ? "duplicate" : "gap",
                        (long long) seq, (long long) c->last, c->state,
                        (long long) c->ready_seq,
                        (unsigned long long) c->closes,
                        t_reload ? now() - t_reload : -1.0);
            }
        }
        if (seq > c->last) {
            c->last = seq;
        }
        return;
    }
    if (c->state == C_AUTH && memmem(p, n, "\"type\":\"ready\"", 14)) {
        inflight_hs--;
        c->ready_seq = json_int(p, end, "\"last_seq\":");
        if (c->last < 0) {
            c->last = c->ready_seq;
            c->first_seq = c->ready_seq;
            c->state = C_READY;
            return;
        }
        if (c->ready_seq > c->last) {
            c->needed_resume = 1;
            len = snprintf(buf, sizeof(buf),
                           "{\"type\":\"resume\",\"channels\":{\"%s\":%lld}}",
                           chs[c->ch].id, (long long) c->last);
            ws_send(c->fd, buf, len);
            c->state = C_RESUMING;
            return;
        }
        client_resumed(c, now());
        return;
    }
    if (c->state == C_RESUMING && memmem(p, n, "\"type\":\"resumed\"", 16)) {
        client_resumed(c, now());
        return;
    }
    if (memmem(p, n, "\"type\":\"error\"", 14)) {
        fprintf(stderr, "storm: client %d: %.*s\n", i, (int) n, p);
    }
}


static void
client_read(int i)
{
    client_t  *c = &cl[i];
    ssize_t    r;
    size_t     off, hl, plen;
    uint8_t   *b;
    char      *hdr_end;
    double     t;

    for ( ;; ) {
        if (c->in_len == INBUF) {
            client_drop(i, 0.1);
            return;
        }
        r = read(c->fd, c->in + c->in_len, INBUF - c->in_len);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
            t = now();
            if (phase >= 2 && !c->storm && c->resumed_at == 0) {
                c->storm = 1;
                c->closed_at = t;
            }
            client_drop(i, 0.05 + (rand() % 451) / 1000.0);
            return;
        }
        if (r < 0) {
            return;
        }
        c->in_len += r;

        if (c->state == C_UPGRADE) {
            hdr_end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
            if (hdr_end == NULL) {
                continue;
            }
            if (strncmp(c->in, "HTTP/1.1 101", 12) != 0) {
                client_drop(i, 1.0);
                return;
            }
            off = hdr_end + 4 - c->in;
            memmove(c->in, c->in + off, c->in_len - off);
            c->in_len -= off;
            {
                char  a[1024];
                int   n = snprintf(a, sizeof(a),
                                   "{\"type\":\"auth\",\"token\":\"%s\"}",
                                   c->tok);
                ws_send(c->fd, a, n);
            }
            c->state = C_AUTH;
        }

        off = 0;
        while (c->in_len - off >= 2) {
            b = (uint8_t *) c->in + off;
            plen = b[1] & 0x7f;
            hl = 2;
            if (plen == 126) {
                if (c->in_len - off < 4) {
                    break;
                }
                plen = (b[2] << 8) | b[3];
                hl = 4;
            } else if (plen == 127) {
                if (c->in_len - off < 10) {
                    break;
                }
                plen = ((size_t) b[6] << 24) | (b[7] << 16) | (b[8] << 8)
                       | b[9];
                hl = 10;
            }
            if (c->in_len - off < hl + plen) {
                break;
            }
            switch (b[0] & 0x0f) {
            case 1:
                client_message(i, (char *) b + hl, plen);
                break;
            case 8:
                c->last_close = plen >= 2 ? (b[hl] << 8) | b[hl + 1] : 0;
                c->closes++;
                t = now();
                if (phase >= 2 && !c->storm && c->resumed_at == 0) {
                    c->storm = 1;
                    c->closed_at = t;
                }
                client_drop(i, 0.05 + (rand() % 451) / 1000.0);
                return;
            case 9:
                ws_pong(c->fd, (char *) b + hl, plen);
                break;
            }
            off += hl + plen;
        }
        if (off) {
            memmove(c->in, c->in + off, c->in_len - off);
            c->in_len -= off;
        }
    }
}


static void
client_event(int i, uint32_t ev)
{
    client_t  *c = &cl[i];
    char       req[512];
    int        n, err = 0;
    socklen_t  sl = sizeof(err);

    if (c->state == C_CONN && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl);
        if (err) {
            client_drop(i, 0.2);
            return;
        }
        n = snprintf(req, sizeof(req),
                     "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n");
        if (write(c->fd, req, n) != n) {
            client_drop(i, 0.2);
            return;
        }
        c->state = C_UPGRADE;
        ep_mod(c->fd, EPOLLIN, (uint64_t) i);
        return;
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        client_read(i);
    }
}


/* ------------------------------------------------------------ posters */

static uint64_t  post_seq;

static void
poster_connect(poster_t *p, int k)
{
    p->fd = tcp_connect();
    p->connected = 0;
    p->in_len = 0;
    ep_add(p->fd, EPOLLOUT | EPOLLIN, (1ULL << 40) | k);
}


static void
poster_send(poster_t *p)
{
    if (p->connected && p->busy) {
        if (write(p->fd, p->req, p->req_len) != (ssize_t) p->req_len) {
            post_fail++;
        }
    }
}


static void
poster_new(poster_t *p, double sched)
{
    int     ch = (int) (post_seq % nch);
    char    body[256];
    int     bl;

    bl = snprintf(body, sizeof(body),
                  "{\"text\":\"storm post %llu\",\"client_id\":\"s-%d-%llu\"}",
                  (unsigned long long) post_seq, getpid(),
                  (unsigned long long) post_seq);
    post_seq++;
    p->req_len = snprintf(p->req, sizeof(p->req),
                          "POST /api/channels/%s/messages HTTP/1.1\r\n"
                          "Host: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                          "Content-Type: application/json\r\n"
                          "Content-Length: %d\r\n\r\n%s",
                          chs[ch].id, chs[ch].tok, bl, body);
    p->ch = ch;
    p->busy = 1;
    p->sched = sched;
    p->sent_at = now();
    poster_send(p);
}


static void
poster_answer(poster_t *p, int status, const char *body, size_t n)
{
    int64_t  seq;
    double   lat;

    if (status == 201 || status == 200) {
        seq = json_int(body, body + n, "\"seq\":");
        if (seq > chs[p->ch].acked_max) {
            chs[p->ch].acked_max = seq;
        }
        lat = now() - p->sched;
        if (phase == 1) {
            acks_before++;
            if (nlat_before < lat_cap) {
                post_lat_before[nlat_before++] = lat;
            }
        } else if (phase == 2) {
            acks_storm++;
            if (nlat_storm < lat_cap) {
                post_lat_storm[nlat_storm++] = lat;
            }
        } else {
            acks_after++;
        }
    } else {
        post_fail++;
        fprintf(stderr, "storm: post answered %d: %.*s\n", status,
                (int) (n > 200 ? 200 : n), body);
    }
    p->busy = 0;
}


static void
poster_event(int k, uint32_t ev)
{
    poster_t  *p = &posters[k];
    ssize_t    r;
    char      *he, *cl_h;
    size_t     hlen, blen;
    int        status, err = 0;
    socklen_t  sl = sizeof(err);

    if (!p->connected) {
        getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &sl);
        if (err) {
            close(p->fd);
            poster_connect(p, k);
            return;
        }
        p->connected = 1;
        ep_mod(p->fd, EPOLLIN, (1ULL << 40) | k);
        if (p->busy) {
            resent++;
            poster_send(p);
        }
        return;
    }
    for ( ;; ) {
        r = read(p->fd, p->in + p->in_len, sizeof(p->in) - p->in_len);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
            close(p->fd);
            poster_connect(p, k);     /* resends a pending request */
            return;
        }
        if (r < 0) {
            return;
        }
        p->in_len += r;
        for ( ;; ) {
            he = memmem(p->in, p->in_len, "\r\n\r\n", 4);
            if (he == NULL) {
                break;
            }
            hlen = he + 4 - p->in;
            cl_h = memmem(p->in, hlen, "Content-Length: ", 16);
            blen = cl_h ? strtoul(cl_h + 16, NULL, 10) : 0;
            if (p->in_len < hlen + blen) {
                break;
            }
            status = atoi(p->in + 9);
            poster_answer(p, status, p->in + hlen, blen);
            memmove(p->in, p->in + hlen + blen, p->in_len - hlen - blen);
            p->in_len -= hlen + blen;
        }
    }
}


/* ------------------------------------------------------------ main */

static int
cmp_d(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}


static double
q(double *v, size_t n, double f)
{
    if (n == 0) {
        return -1;
    }
    qsort(v, n, sizeof(double), cmp_d);
    return v[(size_t) (f * (n - 1) + 0.5)];
}


static void
load_plan(const char *path)
{
    FILE   *f = fopen(path, "r");
    char    line[2048], a[64], b[1500];
    int     k, cap_c = 1024, cap_u = 16384;

    if (f == NULL) {
        perror(path);
        exit(2);
    }
    chs = calloc(cap_c, sizeof(chan_t));
    cl = calloc(cap_u, sizeof(client_t));
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "ch %63s %1499s", a, b) == 2) {
            if (nch == cap_c) {
                cap_c *= 2;
                chs = realloc(chs, cap_c * sizeof(chan_t));
            }
            memset(&chs[nch], 0, sizeof(chan_t));
            memcpy(chs[nch].id, a, 24);
            chs[nch].id[24] = 0;
            chs[nch].tok = strdup(b);
            nch++;
        } else if (sscanf(line, "u %d %1499s", &k, b) == 2) {
            if (ncl == cap_u) {
                cap_u *= 2;
                cl = realloc(cl, cap_u * sizeof(client_t));
            }
            memset(&cl[ncl], 0, sizeof(client_t));
            cl[ncl].ch = k;
            cl[ncl].tok = strdup(b);
            cl[ncl].fd = -1;
            cl[ncl].last = -1;
            cl[ncl].in = malloc(INBUF);
            cl[ncl].seen = calloc(MAX_SEQ, 1);
            ncl++;
        }
    }
    fclose(f);
}


int
main(int argc, char **argv)
{
    static struct option opts[] = {
        { "port", 1, 0, 'p' }, { "plan", 1, 0, 'f' },
        { "master-pid", 1, 0, 'm' }, { "rate", 1, 0, 'r' },
        { "before", 1, 0, 'b' }, { "after", 1, 0, 'a' },
        { "storm-timeout", 1, 0, 's' }, { "seqs", 1, 0, 'q' }, { "connect-timeout", 1, 0, 'c' },
        { 0, 0, 0, 0 }
    };
    int                 o, i, n, ready, resumed, storming, k;
    pid_t               master = 0;
    const char         *seqs_path = NULL;
    double              rate = 20, before = 10, after = 5, storm_to = 360;
    double              connect_to = 900, t0, t, next_post, t_ready;
    double              t_last_print = 0, t_storm_end = 0, *lat, t_drain = 0;
    size_t              nlat;
    struct epoll_event  evs[512];
    uint64_t            dups = 0, gaps = 0, wrong_last = 0, needed = 0;
    uint64_t            never_closed = 0, msgs = 0, missing = 0;
    uint64_t            doubled = 0, dups_resume = 0, gaps_resume = 0;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'p': port = atoi(optarg); break;
        case 'f': load_plan(optarg); break;
        case 'm': master = atoi(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'b': before = atof(optarg); break;
        case 'a': after = atof(optarg); break;
        case 's': storm_to = atof(optarg); break;
        case 'c': connect_to = atof(optarg); break;
        case 'q': seqs_path = optarg; break;
        default: return 2;
        }
    }
    if (port == 0 || ncl == 0 || nch == 0 || master == 0) {
        fprintf(stderr, "storm: --port, --plan and --master-pid needed\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    srand(getpid());
    ep = epoll_create1(0);
    post_lat_before = malloc(lat_cap * sizeof(double));
    post_lat_storm = malloc(lat_cap * sizeof(double));

    /* connect: at most MAX_INFLIGHT_HS handshakes and sign-ins at once */
    t0 = now();
    i = 0;
    for ( ;; ) {
        while (i < ncl && inflight_hs < MAX_INFLIGHT_HS) {
            client_start(i++);
        }
        n = epoll_wait(ep, evs, 512, 20);
        for (k = 0; k < n; k++) {
            client_event((int) evs[k].data.u64, evs[k].events);
        }
        t = now();
        ready = 0;
        for (k = 0; k < ncl; k++) {
            if (cl[k].state == C_IDLE && cl[k].reconnect_at > 0
                && t >= cl[k].reconnect_at && inflight_hs < MAX_INFLIGHT_HS)
            {
                client_start(k);
            }
            ready += cl[k].state == C_READY;
        }
        if (t - t_last_print > 5) {
            fprintf(stderr, "storm: %d/%d ready after %.0f s\n", ready, ncl,
                    t - t0);
            t_last_print = t;
        }
        if (ready == ncl) {
            break;
        }
        if (t - t0 > connect_to) {
            printf("{\"error\":\"only %d of %d clients ready after %.0f s\"}\n",
                   ready, ncl, t - t0);
            return 1;
        }
    }
    t_ready = now() - t0;
    fprintf(stderr, "storm: all %d ready in %.1f s\n", ncl, t_ready);

    for (k = 0; k < NPOSTERS; k++) {
        poster_connect(&posters[k], k);
    }
    phase = 1;
    t_post_start = now();
    next_post = t_post_start;
    t_before_end = t_post_start + before;

    for ( ;; ) {
        n = epoll_wait(ep, evs, 512, 5);
        for (k = 0; k < n; k++) {
            if (evs[k].data.u64 >> 40) {
                poster_event((int) (evs[k].data.u64 & 0xffff),
                             evs[k].events);
            } else {
                client_event((int) evs[k].data.u64, evs[k].events);
            }
        }
        t = now();
        while (t >= next_post && (phase < 4)) {
            for (k = 0; k < NPOSTERS && posters[k].busy; k++) { }
            if (k == NPOSTERS) {
                break;                /* all busy: the schedule slips */
            }
            poster_new(&posters[k], next_post);
            next_post += 1.0 / rate;
        }
        storming = 0;
        resumed = 0;
        for (k = 0; k < ncl; k++) {
            if (cl[k].state == C_IDLE && cl[k].reconnect_at > 0
                && t >= cl[k].reconnect_at && inflight_hs < MAX_INFLIGHT_HS)
            {
                client_start(k);
            }
            storming += cl[k].storm;
            resumed += cl[k].resumed_at > 0;
        }
        if (phase == 1 && t >= t_before_end) {
            phase = 2;
            t_reload = now();
            fprintf(stderr, "storm: reload (SIGHUP to %d)\n", (int) master);
            kill(master, SIGHUP);
        } else if (phase == 2) {
            if (t - t_last_print > 5) {
                fprintf(stderr, "storm: %d/%d resumed %.0f s after the "
                        "reload\n", resumed, ncl, t - t_reload);
                t_last_print = t;
            }
            if ((resumed == ncl && storming == 0)
                || t - t_reload > storm_to)
            {
                t_all_resumed = resumed == ncl ? t - t_reload : -1;
                t_storm_end = t;
                phase = 3;
            }
        } else if (phase == 3 && t - t_storm_end > after) {
            phase = 4;                /* stop posting, drain */
            t_drain = t;
        } else if (phase == 4) {
            for (k = 0; k < NPOSTERS && !posters[k].busy; k++) { }
            if ((k == NPOSTERS && t - t_drain > 2) || t - t_drain > 30) {
                break;
            }
        }
    }

    /* per-client results */
    lat = malloc(ncl * sizeof(double));
    nlat = 0;
    resumed = 0;
    for (k = 0; k < ncl; k++) {
        client_t *c = &cl[k];
        dups += c->dups;
        gaps += c->gaps;
        msgs += c->msgs;
        needed += c->needed_resume;
        if (c->resumed_at > 0) {
            resumed++;
            lat[nlat++] = c->resumed_at - c->closed_at;
        } else if (c->closes == 0 && c->closed_at == 0) {
            never_closed++;
        }
        for (int64_t x = c->first_seq + 1;
             x <= chs[c->ch].acked_max && x < MAX_SEQ; x++)
        {
            missing += c->seen[x] == 0;
            doubled += c->seen[x] > 1 ? c->seen[x] - 1 : 0;
        }
        dups_resume += c->dups_resume;
        gaps_resume += c->gaps_resume;
        if (c->state == C_READY && c->last != chs[c->ch].acked_max) {
            wrong_last++;
        }
    }
    qsort(lat, nlat, sizeof(double), cmp_d);

    /*
     * per channel and seq, the clients (ready at the end) that never got
     * it or got it more than once: the caller compares them with the seqs
     * stored
     */
    if (seqs_path != NULL) {
        FILE  *f = fopen(seqs_path, "w");
        int    c, miss, twice;

        for (c = 0; f != NULL && c < nch; c++) {
            fprintf(f, "max %s %lld\n", chs[c].id,
                    (long long) chs[c].acked_max);
            for (int64_t x = 1; x <= chs[c].acked_max && x < MAX_SEQ; x++) {
                miss = 0;
                twice = 0;
                for (k = 0; k < ncl; k++) {
                    if (cl[k].ch != c || cl[k].first_seq >= x
                        || cl[k].state != C_READY)
                    {
                        /* a client still coming back is not counted */
                        continue;
                    }
                    miss += cl[k].seen[x] == 0;
                    twice += cl[k].seen[x] > 1;
                }
                if (miss || twice) {
                    fprintf(f, "seq %s %lld %d %d\n", chs[c].id,
                            (long long) x, miss, twice);
                }
            }
        }
        if (f != NULL) {
            fclose(f);
        }
    }
    printf("{\"clients\":%d,\"channels\":%d,\"connect_s\":%.1f,"
           "\"rate\":%.1f,\"resumed\":%d,\"resumed_fraction\":%.4f,"
           "\"all_resumed_s\":%.2f,\"storm_window_s\":%.2f,"
           "\"client_p50_ms\":%.1f,\"client_p99_ms\":%.1f,"
           "\"client_max_ms\":%.1f,\"needed_resume\":%llu,"
           "\"never_closed\":%llu,"
           "\"acks_before\":%llu,\"before_s\":%.1f,"
           "\"acks_storm\":%llu,\"acks_after\":%llu,"
           "\"acks_per_s_before\":%.2f,\"acks_per_s_storm\":%.2f,",
           ncl, nch, t_ready, rate, resumed, (double) resumed / ncl,
           t_all_resumed, t_storm_end - t_reload,
           q(lat, nlat, 0.5) * 1e3, q(lat, nlat, 0.99) * 1e3,
           nlat ? lat[nlat - 1] * 1e3 : -1.0,
           (unsigned long long) needed, (unsigned long long) never_closed,
           (unsigned long long) acks_before, before,
           (unsigned long long) acks_storm,
           (unsigned long long) acks_after,
           acks_before / before,
           acks_storm / (t_storm_end - t_reload));
    printf("\"post_p50_ms_before\":%.1f,\"post_p99_ms_before\":%.1f,",
           q(post_lat_before, nlat_before, 0.5) * 1e3,
           q(post_lat_before, nlat_before, 0.99) * 1e3);
    printf("\"post_p50_ms_storm\":%.1f,\"post_p99_ms_storm\":%.1f,",
           q(post_lat_storm, nlat_storm, 0.5) * 1e3,
           q(post_lat_storm, nlat_storm, 0.99) * 1e3);
    printf("\"post_failures\":%llu,\"posts_resent\":%llu,"
           "\"messages_received\":%llu,\"duplicates\":%llu,\"gaps\":%llu,"
           "\"clients_not_at_last_seq\":%llu,\"missing\":%llu,"
           "\"doubled\":%llu,\"duplicates_while_resuming\":%llu,"
           "\"gaps_while_resuming\":%llu}\n",
           (unsigned long long) post_fail, (unsigned long long) resent,
           (unsigned long long) msgs, (unsigned long long) dups,
           (unsigned long long) gaps, (unsigned long long) wrong_last,
           (unsigned long long) missing, (unsigned long long) doubled,
           (unsigned long long) dups_resume,
           (unsigned long long) gaps_resume);
    return 0;
}
