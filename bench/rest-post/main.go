// rest-post: a load tool for the Foko chat REST API and its ceiling.
//
// It is not the module's code: it drives the module from outside over HTTP
// (net/http, one keep-alive connection per client) and drives the same
// MongoDB/FerretDB with the official Go driver.
//
// Two phases, alternated -reps times in one run (db, api, db, api, ...):
//
//	api  C closed-loop clients, each on its own keep-alive connection,
//	     POST /api/channels/:id/messages {text, client_id} back to back.
//	     Latency is measured from the request's send to the end of its
//	     answer; a message counts as acknowledged on 201.
//	db   the database's own batched insert rate: -inserters goroutines
//	     (one per nginx worker: each worker has one batch in flight at a
//	     time), each doing ordered insert_many of -batch documents shaped
//	     like the module's messages into a scratch collection of the same
//	     database, with the same unique indexes.
//
// Each phase runs -warmup, then is measured for -duration: the rate is what
// completed inside the measured window, divided by the window.  It talks
// only to 127.0.0.1.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

type config struct {
	apiURL     string
	mongoURI   string
	mode       string
	reps       int
	clients    int
	perChannel int
	duration   time.Duration
	warmup     time.Duration
	count      int
	textSize   int
	clientID   bool
	batch      int
	inserters  int
	timeout    time.Duration
	nginxPID   int
	ferretPID  int
	jsonOut    string
	scratch    string
	signupConc int
	workers    int
	verify     bool
	prime      bool
}

func main() {
	var c config
	flag.StringVar(&c.apiURL, "url", "", "base URL of the nginx (http://127.0.0.1:PORT)")
	flag.StringVar(&c.mongoURI, "mongo", "", "MongoDB URI of the same database the module uses (mongodb://127.0.0.1:PORT/foko_chat)")
	flag.StringVar(&c.mode, "mode", "both", "api, db or both (alternated: db, api, db, api, ...)")
	flag.IntVar(&c.reps, "reps", 3, "repetitions of each phase")
	flag.IntVar(&c.clients, "clients", 32, "concurrent API clients (one user and one keep-alive connection each)")
	flag.IntVar(&c.perChannel, "per-channel", 10, "clients per channel (1..10; 1 = a channel per client)")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "measured time of each phase")
	flag.DurationVar(&c.warmup, "warmup", 2*time.Second, "unmeasured time before each phase's window")
	flag.IntVar(&c.count, "count", 0, "api: messages per client per repetition instead of -duration (0: use -duration)")
	flag.IntVar(&c.textSize, "text-size", 100, "bytes of message text")
	flag.BoolVar(&c.clientID, "client-id", true, "send a unique client_id with every post")
	flag.IntVar(&c.batch, "batch", 256, "db: documents per insert_many (the module's NGX_FOKO_CHAT_BATCH_MAX is 256)")
	flag.IntVar(&c.inserters, "inserters", 1, "db: concurrent inserters (= nginx workers)")
	flag.DurationVar(&c.timeout, "timeout", 15*time.Second, "per-request timeout")
	flag.IntVar(&c.nginxPID, "nginx-pid", 0, "nginx master pid, for CPU accounting of its workers (optional)")
	flag.IntVar(&c.ferretPID, "ferretdb-pid", 0, "FerretDB pid, for CPU accounting (optional)")
	flag.StringVar(&c.jsonOut, "json", "", "write the results as JSON to this file")
	flag.StringVar(&c.scratch, "scratch", "bench_ceiling_messages", "db: scratch collection (dropped before and after)")
	flag.IntVar(&c.signupConc, "signup-concurrency", 4, "parallel sign-ups during setup")
	flag.IntVar(&c.workers, "workers", 0, "nginx workers (only printed in the report)")
	flag.BoolVar(&c.prime, "prime", true, "during setup, post one message to each channel (one at a time), so that the phases start with the channels known to the module; -prime=false measures the cold start too")
	flag.BoolVar(&c.verify, "verify", true, "after the run, check the seqs answered and the documents stored per channel")
	flag.Parse()

	if err := run(&c); err != nil {
		fmt.Fprintln(os.Stderr, "rest-post:", err)
		os.Exit(1)
	}
}

// loopback only: this tool must not load anything but the local machine
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	host := u.Hostname()
	if host != "127.0.0.1" && host != "::1" && host != "localhost" {
		return fmt.Errorf("%q: only 127.0.0.1 is allowed", raw)
	}
	return nil
}

func run(c *config) error {
	doAPI := c.mode == "api" || c.mode == "both"
	doDB := c.mode == "db" || c.mode == "both"
	if !doAPI && !doDB {
		return fmt.Errorf("-mode must be api, db or both")
	}
	if c.mongoURI == "" || checkLoopback(c.mongoURI) != nil {
		return fmt.Errorf("-mongo mongodb://127.0.0.1:PORT/db is required")
	}
	if doAPI {
		if c.apiURL == "" {
			return fmt.Errorf("-url is required for the api phase")
		}
		if err := checkLoopback(c.apiURL); err != nil {
			return err
		}
		c.apiURL = strings.TrimRight(c.apiURL, "/")
	}
	if c.perChannel < 1 || c.perChannel > 10 {
		return fmt.Errorf("-per-channel must be 1..10 (foko_chat_max_members defaults to 10)")
	}
	if c.clients < 1 || c.reps < 1 || c.batch < 1 || c.inserters < 1 {
		return fmt.Errorf("-clients, -reps, -batch and -inserters must be positive")
	}

	ctx := context.Background()
	mc, err := mongo.Connect(ctx, options.Client().ApplyURI(c.mongoURI).
		SetAppName("foko-bench").SetMaxPoolSize(uint64(c.inserters+2)))
	if err != nil {
		return fmt.Errorf("mongo connect: %w", err)
	}
	defer mc.Disconnect(context.Background())
	dbName := dbFromURI(c.mongoURI)
	db := mc.Database(dbName)
	if err := mc.Ping(ctx, nil); err != nil {
		return fmt.Errorf("mongo ping: %w", err)
	}

	text := makeText(c.textSize)
	var env *apiEnv
	if doAPI {
		t0 := time.Now()
		env, err = setupAPI(c)
		if err != nil {
			return fmt.Errorf("setup: %w", err)
		}
		primed := ""
		if c.prime {
			primed = ", one post each"
		}
		fmt.Printf("setup: %d users, %d channels (%d clients per channel%s) in %.1fs\n",
			len(env.users), len(env.channels), c.perChannel, primed, time.Since(t0).Seconds())
	}

	var scratch *mongo.Collection
	var gen *docGen
	if doDB {
		scratch = db.Collection(c.scratch)
		_ = scratch.Drop(ctx)
		idx, err := createIndexes(ctx, db, c.scratch)
		if err != nil {
			return fmt.Errorf("scratch indexes: %w", err)
		}
		fmt.Printf("scratch collection %s.%s, indexes: %s\n", dbName, c.scratch, idx)
		nch := (c.clients + c.perChannel - 1) / c.perChannel
		gen = newDocGen(nch, c.clients, text)
		defer scratch.Drop(context.Background())
	}

	var apiRes, dbRes []*phaseResult
	for rep := 1; rep <= c.reps; rep++ {
		if doDB {
			before, n0 := commandCounts(ctx, mc), gen.next.Load()
			r := runDB(ctx, c, scratch, gen)
			after, n1 := commandCounts(ctx, mc), gen.next.Load()
			r.Commands = commandDelta(before, after)
			if r.Commands["insert"] > 0 {
				r.PerInsert = float64(n1-n0) / float64(r.Commands["insert"])
			}
			r.Rep = rep
			dbRes = append(dbRes, r)
			printPhase(r)
		}
		if doAPI {
			before := commandCounts(ctx, mc)
			r := runAPI(c, env, text, rep)
			after := commandCounts(ctx, mc)
			r.Commands = commandDelta(before, after)
			if r.Commands["insert"] > 0 {
				r.PerInsert = float64(r.AllAcked) / float64(r.Commands["insert"])
			}
			r.Rep = rep
			apiRes = append(apiRes, r)
			printPhase(r)
		}
	}

	var verify *verifyResult
	if doAPI && c.verify {
		verify = verifyAPI(ctx, db, env)
	}

	sum := summarize(c, apiRes, dbRes, verify)
	printSummary(c, sum)
	if c.jsonOut != "" {
		b, _ := json.MarshalIndent(sum, "", "  ")
		if err := os.WriteFile(c.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func dbFromURI(uri string) string {
	u, err := url.Parse(uri)
	if err == nil {
		if p := strings.Trim(u.Path, "/"); p != "" {
			return p
		}
	}
	return "foko_chat"
}

func makeText(n int) string {
	const words = "the quick brown fox jumps over the lazy dog while chat messages fly "
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(words)
	}
	return strings.TrimSpace(b.String()[:n])
}

// ---------------------------------------------------------------- results

type phaseResult struct {
	Phase     string             `json:"phase"`
	Rep       int                `json:"rep"`
	Window    float64            `json:"window_s"`
	Acked     int64              `json:"acked"` // api: 201s; db: documents
	Rate      float64            `json:"rate"`  // per second
	Batches   int64              `json:"batches,omitempty"`
	Commands  map[string]int64   `json:"db_commands,omitempty"` // during the whole phase
	AllAcked  int64              `json:"acked_whole_phase,omitempty"`
	PerInsert float64            `json:"msgs_per_insert,omitempty"`
	P50       float64            `json:"p50_ms"`
	P90       float64            `json:"p90_ms"`
	P99       float64            `json:"p99_ms"`
	Max       float64            `json:"max_ms"`
	Errors    map[string]int     `json:"errors,omitempty"`
	CPU       map[string]float64 `json:"cpu_cores,omitempty"`
	Other     int64              `json:"other_2xx,omitempty"`
	Drained   bool               `json:"drained"`
}

func percentiles(lat []time.Duration, r *phaseResult) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(lat)))) - 1
		if i < 0 {
			i = 0
		}
		return float64(lat[i]) / 1e6
	}
	r.P50, r.P90, r.P99 = q(0.50), q(0.90), q(0.99)
	r.Max = float64(lat[len(lat)-1]) / 1e6
}

func printPhase(r *phaseResult) {
	unit := "acked msgs/s"
	if r.Phase == "db" {
		unit = "docs/s"
	}
	fmt.Printf("rep %d %-3s %9.0f %-12s p50 %7.2f p90 %7.2f p99 %7.2f max %8.2f ms",
		r.Rep, r.Phase, r.Rate, unit, r.P50, r.P90, r.P99, r.Max)
	if r.PerInsert > 0 {
		fmt.Printf("  %.1f msgs/insert", r.PerInsert)
	}
	if r.Phase == "api" && r.AllAcked > 0 && r.Commands != nil {
		fmt.Printf(" %.2f finds/msg", float64(r.Commands["find"])/float64(r.AllAcked))
	}
	if len(r.CPU) > 0 {
		fmt.Printf("  cpu")
		for _, k := range []string{"nginx", "ferretdb", "tool", "ours", "others"} {
			if v, ok := r.CPU[k]; ok {
				fmt.Printf(" %s=%.2f", k, v)
			}
		}
	}
	if len(r.Errors) > 0 {
		fmt.Printf("  errors %v", r.Errors)
	}
	if !r.Drained {
		fmt.Printf("  (in-flight requests did not finish within -timeout)")
	}
	fmt.Println()
	if r.Phase == "api" && len(r.Commands) > 0 {
		keys := make([]string, 0, len(r.Commands))
		for k := range r.Commands {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Printf("      database commands during the phase:")
		for _, k := range keys {
			fmt.Printf(" %s=%d", k, r.Commands[k])
		}
		fmt.Println()
	}
}

// ---------------------------------------------------------------- CPU

// CPU seconds used by a process (and, for the nginx master, its children)
type cpuProbe struct {
	c     *config
	start map[string]float64
	t0    time.Time
}

var clkTck = 100.0 // USER_HZ on Linux

func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clkTck
}

func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func cpuNow(c *config) map[string]float64 {
	m := map[string]float64{}
	if c.nginxPID > 0 {
		v := procCPU(c.nginxPID)
		for _, ch := range children(c.nginxPID) {
			v += procCPU(ch)
		}
		m["nginx"] = v
	}
	if c.ferretPID > 0 {
		m["ferretdb"] = procCPU(c.ferretPID)
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		// first line: cpu user nice system idle iowait irq softirq steal
		line := strings.SplitN(string(b), "\n", 2)[0]
		f := strings.Fields(line)
		busy := 0.0
		for i, x := range f {
			if i == 0 || i == 4 || i == 5 || i > 8 {
				continue
			}
			v, _ := strconv.ParseFloat(x, 64)
			busy += v
		}
		m["machine"] = busy / clkTck
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		m["tool"] = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	return m
}

func startCPU(c *config) *cpuProbe {
	return &cpuProbe{c: c, start: cpuNow(c), t0: time.Now()}
}

// cores used on average since start
func (p *cpuProbe) stop() map[string]float64 {
	end := cpuNow(p.c)
	el := time.Since(p.t0).Seconds()
	out := map[string]float64{}
	total := 0.0
	for k, v := range end {
		d := (v - p.start[k]) / el
		out[k] = math.Round(d*100) / 100
		if k != "machine" {
			total += d
		}
	}
	out["ours"] = math.Round(total*100) / 100
	if m, ok := out["machine"]; ok {
		// everything else on the machine (other users' processes)
		out["others"] = math.Round(math.Max(0, m-total)*100) / 100
	}
	return out
}

// ---------------------------------------------------------------- API

type user struct {
	ID    string
	Token string
}

type channel struct {
	ID      string
	members []int // client indexes posting here
	seqs    []int64
	mu      sync.Mutex
}

type apiEnv struct {
	users    []user
	partner  *user
	channels []*channel
	chOf     []int // client -> channel index
	runID    string
}

func newClient(c *config) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		DisableCompression:  true,
		IdleConnTimeout:     5 * time.Minute,
	}
	return &http.Client{Transport: tr, Timeout: c.timeout}
}

func doJSON(hc *http.Client, method, u, token string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

func signup(hc *http.Client, base, email, name string) (user, error) {
	st, b, err := doJSON(hc, "POST", base+"/api/auth/signup", "", map[string]string{
		"email": email, "password": "bench password 1", "username": name,
	})
	if err != nil {
		return user{}, err
	}
	if st != 201 {
		return user{}, fmt.Errorf("signup %s: %d %s", email, st, b)
	}
	var r struct {
		User  struct{ ID string } `json:"user"`
		Token string              `json:"token"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return user{}, err
	}
	return user{ID: r.User.ID, Token: r.Token}, nil
}

func setupAPI(c *config) (*apiEnv, error) {
	env := &apiEnv{runID: strconv.FormatInt(time.Now().UnixNano(), 36)}
	env.users = make([]user, c.clients)
	hc := newClient(c)

	// health first: the module must be up and see MongoDB
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, b, err := doJSON(hc, "GET", c.apiURL+"/api/health", "", nil)
		if err == nil && st == 200 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("health: %d %s %v", st, b, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	var wg sync.WaitGroup
	var firstErr error
	var emu sync.Mutex
	sem := make(chan struct{}, c.signupConc)
	for i := 0; i < c.clients; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			hc := newClient(c)
			u, err := signup(hc, c.apiURL,
				fmt.Sprintf("bench.%s.%d@example.com", env.runID, i),
				fmt.Sprintf("bench%d", i))
			if err != nil {
				emu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				emu.Unlock()
				return
			}
			hc.CloseIdleConnections()
			env.users[i] = u
		}(i)
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if c.perChannel == 1 {
		p, err := signup(hc, c.apiURL,
			fmt.Sprintf("bench.%s.partner@example.com", env.runID), "partner")
		if err != nil {
			return nil, err
		}
		env.partner = &p
	}

	env.chOf = make([]int, c.clients)
	for first := 0; first < c.clients; first += c.perChannel {
		last := min(first+c.perChannel, c.clients)
		members := []string{}
		ch := &channel{}
		for i := first; i < last; i++ {
			if i != first {
				members = append(members, env.users[i].ID)
			}
			ch.members = append(ch.members, i)
			env.chOf[i] = len(env.channels)
		}
		if len(members) == 0 {
			if env.partner != nil {
				members = append(members, env.partner.ID)
			} else { // the last group has one client: add the previous user
				members = append(members, env.users[0].ID)
			}
		}
		st, b, err := doJSON(hc, "POST", c.apiURL+"/api/channels", env.users[first].Token,
			map[string]any{"name": fmt.Sprintf("bench %d", len(env.channels)), "members": members})
		if err != nil {
			return nil, err
		}
		if st != 201 {
			return nil, fmt.Errorf("create channel: %d %s", st, b)
		}
		var r struct{ ID string }
		if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
			return nil, fmt.Errorf("create channel: %s", b)
		}
		ch.ID = r.ID
		env.channels = append(env.channels, ch)
	}
	// a channel whose group of one was joined by users[0]: users[0] is a
	// member but posts only to its own channel, which is fine
	if c.prime {
		for _, ch := range env.channels {
			u := env.users[ch.members[0]]
			st, b, err := doJSON(hc, "POST", c.apiURL+"/api/channels/"+ch.ID+"/messages", u.Token,
				map[string]string{"text": "hello", "client_id": env.runID + "-prime"})
			if err != nil {
				return nil, err
			}
			if st != 201 {
				return nil, fmt.Errorf("first post: %d %s", st, b)
			}
			if s := parseSeq(b); s > 0 {
				ch.seqs = append(ch.seqs, s)
			}
		}
	}
	hc.CloseIdleConnections()
	return env, nil
}

var seqKey = []byte(`"seq":`)

func parseSeq(b []byte) int64 {
	i := bytes.Index(b, seqKey)
	if i < 0 {
		return -1
	}
	b = b[i+len(seqKey):]
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	var n int64
	j := 0
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		n = n*10 + int64(b[j]-'0')
	}
	if j == 0 {
		return -1
	}
	return n
}

func errClass(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET):
		return "conn_reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "conn_refused"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	}
	return "transport"
}

// phases of a run, for what an answer counts toward
const (
	inWarmup int32 = iota
	inWindow
	afterWindow
)

var stageName = [...]string{"warm-up ", "", "after window "}

func runAPI(c *config, env *apiEnv, text string, rep int) *phaseResult {
	var (
		stage     atomic.Int32
		stop      atomic.Bool
		wg        sync.WaitGroup
		mu        sync.Mutex
		lat       []time.Duration
		acked     int64
		allAcked  int64
		other     int64
		errs      = map[string]int{}
		firstBody = map[string]string{}
	)

	note := func(k, body string) {
		mu.Lock()
		if _, ok := firstBody[k]; !ok {
			firstBody[k] = body
		}
		mu.Unlock()
	}

	for i := 0; i < c.clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			hc := newClient(c)
			defer hc.CloseIdleConnections()
			ch := env.channels[env.chOf[i]]
			u := c.apiURL + "/api/channels/" + ch.ID + "/messages"
			auth := "Bearer " + env.users[i].Token
			myLat := make([]time.Duration, 0, 4096)
			myErr := map[string]int{}
			var myAcked, myOther int64
			mySeqs := make([]int64, 0, 4096)
			prefix := fmt.Sprintf("%s-r%d-c%d-", env.runID, rep, i)
			for n := 0; !stop.Load() && (c.count == 0 || n < c.count); n++ {
				body := map[string]string{"text": text}
				if c.clientID {
					body["client_id"] = prefix + strconv.Itoa(n)
				}
				b, _ := json.Marshal(body)
				req, _ := http.NewRequest("POST", u, bytes.NewReader(b))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", auth)
				t0 := time.Now()
				res, err := hc.Do(req)
				var rb []byte
				if err == nil {
					rb, err = io.ReadAll(res.Body)
					res.Body.Close()
				}
				d := time.Since(t0)
				st := stage.Load()
				if err != nil {
					k := stageName[st] + errClass(err)
					myErr[k]++
					note(k, err.Error())
					time.Sleep(10 * time.Millisecond)
					continue
				}
				if res.StatusCode == 201 {
					if s := parseSeq(rb); s > 0 {
						mySeqs = append(mySeqs, s)
					}
				}
				switch {
				case res.StatusCode == 201:
					if st == inWindow {
						myAcked++
						myLat = append(myLat, d)
					}
				case res.StatusCode >= 200 && res.StatusCode < 300:
					if st == inWindow {
						myOther++
					}
				default:
					k := stageName[st] + strconv.Itoa(res.StatusCode)
					myErr[k]++
					note(k, strings.TrimSpace(string(rb)))
				}
			}
			ch.mu.Lock()
			ch.seqs = append(ch.seqs, mySeqs...)
			ch.mu.Unlock()
			mu.Lock()
			allAcked += int64(len(mySeqs))
			lat = append(lat, myLat...)
			acked += myAcked
			other += myOther
			for k, v := range myErr {
				errs[k] += v
			}
			mu.Unlock()
		}(i)
	}

	var probe *cpuProbe
	var t0 time.Time
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	if c.count == 0 {
		select {
		case <-time.After(c.warmup):
		case <-done:
		}
	}
	probe = startCPU(c)
	t0 = time.Now()
	stage.Store(inWindow)
	if c.count == 0 {
		select {
		case <-time.After(c.duration):
		case <-done:
		}
	} else {
		<-done
	}
	stage.Store(afterWindow)
	window := time.Since(t0)
	cpu := probe.stop()
	stop.Store(true)
	drained := true
	select {
	case <-done:
	case <-time.After(c.timeout + 2*time.Second):
		drained = false
	}

	mu.Lock()
	defer mu.Unlock()
	r := &phaseResult{Phase: "api", Window: window.Seconds(), Acked: acked,
		Rate: float64(acked) / window.Seconds(), AllAcked: allAcked, Other: other, CPU: cpu, Drained: drained}
	percentiles(lat, r)
	if len(errs) > 0 {
		r.Errors = errs
		keys := make([]string, 0, len(firstBody))
		for k := range firstBody {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Printf("  first %s answer: %.300s\n", k, firstBody[k])
		}
	}
	return r
}

// ---------------------------------------------------------------- DB ceiling

type docGen struct {
	next     atomic.Int64
	channels []primitive.ObjectID
	authors  []primitive.ObjectID
	names    []string
	text     string
	run      string
}

func newDocGen(nch, nauth int, text string) *docGen {
	g := &docGen{text: text, run: strconv.FormatInt(time.Now().UnixNano(), 36)}
	for i := 0; i < nch; i++ {
		g.channels = append(g.channels, primitive.NewObjectID())
	}
	for i := 0; i < nauth; i++ {
		g.authors = append(g.authors, primitive.NewObjectID())
		g.names = append(g.names, fmt.Sprintf("bench%d", i))
	}
	return g
}

// documents as ngx_foko_chat_store_message_bson() builds them: _id,
// channel_id, seq (int64), author_id, author_name, text, created (date),
// client_id; seqs grow by one per channel
func (g *docGen) batch(n int) []any {
	first := g.next.Add(int64(n)) - int64(n)
	docs := make([]any, n)
	now := primitive.NewDateTimeFromTime(time.Now())
	nch := int64(len(g.channels))
	for k := 0; k < n; k++ {
		i := first + int64(k)
		a := int(i % int64(len(g.authors)))
		docs[k] = bson.D{
			{Key: "_id", Value: primitive.NewObjectID()},
			{Key: "channel_id", Value: g.channels[i%nch]},
			{Key: "seq", Value: i/nch + 1},
			{Key: "author_id", Value: g.authors[a]},
			{Key: "author_name", Value: g.names[a]},
			{Key: "text", Value: g.text},
			{Key: "created", Value: now},
			{Key: "client_id", Value: g.run + "-" + strconv.FormatInt(i, 10)},
		}
	}
	return docs
}

// the module's indexes on messages: channel_seq_unique, and
// author_client_unique (partial; else sparse; else a plain "author_client")
func createIndexes(ctx context.Context, db *mongo.Database, coll string) (string, error) {
	cmd := func(index bson.D) error {
		return db.RunCommand(ctx, bson.D{{Key: "createIndexes", Value: coll},
			{Key: "indexes", Value: bson.A{index}}}).Err()
	}
	if err := cmd(bson.D{{Key: "key", Value: bson.D{{Key: "channel_id", Value: 1}, {Key: "seq", Value: 1}}},
		{Key: "name", Value: "channel_seq_unique"}, {Key: "unique", Value: true}}); err != nil {
		return "", err
	}
	key := bson.D{{Key: "author_id", Value: 1}, {Key: "client_id", Value: 1}}
	variants := []struct {
		what  string
		index bson.D
	}{
		{"partial", bson.D{{Key: "key", Value: key}, {Key: "name", Value: "author_client_unique"}, {Key: "unique", Value: true},
			{Key: "partialFilterExpression", Value: bson.D{{Key: "client_id", Value: bson.D{{Key: "$exists", Value: true}}}}}}},
		{"sparse", bson.D{{Key: "key", Value: key}, {Key: "name", Value: "author_client_unique"}, {Key: "unique", Value: true},
			{Key: "sparse", Value: true}}},
		{"plain", bson.D{{Key: "key", Value: key}, {Key: "name", Value: "author_client"}}},
	}
	var last error
	for _, v := range variants {
		if last = cmd(v.index); last == nil {
			return "channel_seq_unique (unique), author_client (" + v.what + ")", nil
		}
	}
	return "", last
}

func runDB(ctx context.Context, c *config, coll *mongo.Collection, gen *docGen) *phaseResult {
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		wg        sync.WaitGroup
		mu        sync.Mutex
		lat       []time.Duration
		docs      int64
		batches   int64
		errs      = map[string]int{}
		printed   atomic.Int32
	)
	opts := options.InsertMany().SetOrdered(true)
	for w := 0; w < c.inserters; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var myLat []time.Duration
			var myDocs, myBatches int64
			myErr := map[string]int{}
			for !stop.Load() {
				b := gen.batch(c.batch)
				t0 := time.Now()
				_, err := coll.InsertMany(ctx, b, opts)
				d := time.Since(t0)
				if !measuring.Load() {
					continue
				}
				if err != nil {
					k := "insert_error"
					var we mongo.BulkWriteException
					if errors.As(err, &we) && len(we.WriteErrors) > 0 {
						k = "write_error_" + strconv.Itoa(we.WriteErrors[0].Code)
					}
					myErr[k]++
					if printed.Add(1) <= 5 {
						fmt.Printf("  db error: %.300s\n", err.Error())
					}
					continue
				}
				myDocs += int64(len(b))
				myBatches++
				myLat = append(myLat, d)
			}
			mu.Lock()
			lat = append(lat, myLat...)
			docs += myDocs
			batches += myBatches
			for k, v := range myErr {
				errs[k] += v
			}
			mu.Unlock()
		}()
	}
	time.Sleep(c.warmup)
	probe := startCPU(c)
	t0 := time.Now()
	measuring.Store(true)
	time.Sleep(c.duration)
	measuring.Store(false)
	window := time.Since(t0)
	cpu := probe.stop()
	stop.Store(true)
	wg.Wait()

	r := &phaseResult{Phase: "db", Window: window.Seconds(), Acked: docs,
		Rate: float64(docs) / window.Seconds(), Batches: batches, CPU: cpu, Drained: true}
	percentiles(lat, r)
	if len(errs) > 0 {
		r.Errors = errs
	}
	return r
}

// serverStatus metrics.commands.<name>.total: commands served by the
// database (FerretDB counts an insert_many as one insert command); nil if
// the server does not report them
func commandCounts(ctx context.Context, mc *mongo.Client) map[string]int64 {
	var st bson.M
	err := mc.Database("admin").RunCommand(ctx, bson.D{{Key: "serverStatus", Value: 1}}).Decode(&st)
	if err != nil {
		return nil
	}
	m, ok := st["metrics"].(bson.M)
	if !ok {
		return nil
	}
	cmds, ok := m["commands"].(bson.M)
	if !ok {
		return nil
	}
	out := map[string]int64{}
	for name, v := range cmds {
		c, ok := v.(bson.M)
		if !ok {
			continue
		}
		switch t := c["total"].(type) {
		case int64:
			out[name] = t
		case int32:
			out[name] = int64(t)
		}
	}
	return out
}

// the commands run between two commandCounts, without the ones of this
// tool's own serverStatus calls
func commandDelta(a, b map[string]int64) map[string]int64 {
	if a == nil || b == nil {
		return nil
	}
	d := map[string]int64{}
	for k, v := range b {
		if x := v - a[k]; x > 0 && k != "serverStatus" {
			d[k] = x
		}
	}
	return d
}

// ---------------------------------------------------------------- verify

type verifyResult struct {
	Channels int      `json:"channels"`
	Answered int64    `json:"answered_201"`
	Stored   int64    `json:"stored"`
	DupSeqs  int64    `json:"duplicate_seqs"`
	Seconds  float64  `json:"seconds"`
	Problems []string `json:"problems,omitempty"`
}

// every 201's seq is unique in its channel, and every acknowledged message
// is in MongoDB with that seq (posts answered outside the windows count
// too).  One pass over the messages collection: FerretDB's SQLite backend
// scans a collection for any filter but {_id}, so one scan, not one per
// channel.
func verifyAPI(ctx context.Context, db *mongo.Database, env *apiEnv) *verifyResult {
	t0 := time.Now()
	v := &verifyResult{Channels: len(env.channels)}
	stored := map[string]map[int64]int{}
	for _, ch := range env.channels {
		stored[ch.ID] = map[int64]int{}
	}
	cur, err := db.Collection("messages").Find(ctx, bson.D{},
		options.Find().SetProjection(bson.D{{Key: "channel_id", Value: 1}, {Key: "seq", Value: 1}}).
			SetBatchSize(10000))
	if err != nil {
		v.Problems = append(v.Problems, "find: "+err.Error())
		return v
	}
	for cur.Next(ctx) {
		var d struct {
			Channel primitive.ObjectID `bson:"channel_id"`
			Seq     int64              `bson:"seq"`
		}
		if err := cur.Decode(&d); err != nil {
			continue
		}
		if m, ok := stored[d.Channel.Hex()]; ok {
			m[d.Seq]++
		}
	}
	if err := cur.Err(); err != nil {
		v.Problems = append(v.Problems, "find: "+err.Error())
	}
	cur.Close(ctx)

	for _, ch := range env.channels {
		seen := map[int64]bool{}
		var maxSeq int64
		for _, s := range ch.seqs {
			if seen[s] {
				v.DupSeqs++
			}
			seen[s] = true
			maxSeq = max(maxSeq, s)
		}
		v.Answered += int64(len(ch.seqs))
		st := stored[ch.ID]
		v.Stored += int64(len(st))
		lost, dup := 0, 0
		for s := range seen {
			if st[s] == 0 {
				lost++
			}
		}
		for _, n := range st {
			if n > 1 {
				dup++
			}
		}
		if lost > 0 {
			v.Problems = append(v.Problems, fmt.Sprintf("channel %s: %d seqs answered 201 are not stored: acknowledged messages lost", ch.ID, lost))
		}
		if dup > 0 {
			v.Problems = append(v.Problems, fmt.Sprintf("channel %s: %d seqs stored more than once", ch.ID, dup))
		}
		if len(st) > len(seen) {
			v.Problems = append(v.Problems, fmt.Sprintf("channel %s: %d stored, %d answered 201 (posts stored but not answered 201 to this tool, e.g. timed out)",
				ch.ID, len(st), len(seen)))
		}
		// gaps are expected only where a post failed after taking a seq
		if int64(len(seen)) != maxSeq && len(v.Problems) < 20 {
			v.Problems = append(v.Problems, fmt.Sprintf("channel %s: %d distinct seqs answered, highest %d (gaps: a seq spent on a post not answered 201)",
				ch.ID, len(seen), maxSeq))
		}
	}
	v.Seconds = math.Round(time.Since(t0).Seconds()*10) / 10
	return v
}

// ---------------------------------------------------------------- summary

type summary struct {
	Clients    int            `json:"clients"`
	PerChannel int            `json:"per_channel"`
	Channels   int            `json:"channels"`
	Workers    int            `json:"workers,omitempty"`
	Inserters  int            `json:"inserters"`
	Batch      int            `json:"batch"`
	TextSize   int            `json:"text_size"`
	Duration   float64        `json:"duration_s"`
	API        []*phaseResult `json:"api,omitempty"`
	DB         []*phaseResult `json:"db,omitempty"`
	APIRate    float64        `json:"api_median_rate"`
	DBRate     float64        `json:"db_median_rate"`
	Ratio      float64        `json:"ratio"`
	APIP50     float64        `json:"api_median_p50_ms"`
	APIP99     float64        `json:"api_median_p99_ms"`
	DBP50      float64        `json:"db_median_batch_p50_ms"`
	DBP99      float64        `json:"db_median_batch_p99_ms"`
	Verify     *verifyResult  `json:"verify,omitempty"`
}

func median(rs []*phaseResult, f func(*phaseResult) float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func summarize(c *config, api, db []*phaseResult, v *verifyResult) *summary {
	s := &summary{Clients: c.clients, PerChannel: c.perChannel,
		Channels: (c.clients + c.perChannel - 1) / c.perChannel, Workers: c.workers,
		Inserters: c.inserters, Batch: c.batch, TextSize: c.textSize,
		Duration: c.duration.Seconds(), API: api, DB: db, Verify: v}
	s.APIRate = median(api, func(r *phaseResult) float64 { return r.Rate })
	s.DBRate = median(db, func(r *phaseResult) float64 { return r.Rate })
	s.APIP50 = median(api, func(r *phaseResult) float64 { return r.P50 })
	s.APIP99 = median(api, func(r *phaseResult) float64 { return r.P99 })
	s.DBP50 = median(db, func(r *phaseResult) float64 { return r.P50 })
	s.DBP99 = median(db, func(r *phaseResult) float64 { return r.P99 })
	if s.DBRate > 0 {
		s.Ratio = s.APIRate / s.DBRate
	}
	return s
}

func printSummary(c *config, s *summary) {
	fmt.Println()
	fmt.Printf("summary: %d clients, %d channels (%d clients each), %d worker(s) / %d inserter(s), batch %d, text %d B, %gs windows, medians of %d reps\n",
		s.Clients, s.Channels, s.PerChannel, s.Workers, s.Inserters, s.Batch, s.TextSize, s.Duration, c.reps)
	fmt.Println()
	fmt.Println("| module acked msgs/s | DB batched insert docs/s | ratio | API p50 ms | API p99 ms | DB batch p50 ms | DB batch p99 ms |")
	fmt.Println("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	ratio := "n/a"
	if s.Ratio > 0 {
		ratio = fmt.Sprintf("%.1f%%", s.Ratio*100)
	}
	fmt.Printf("| %.0f | %.0f | %s | %.2f | %.2f | %.2f | %.2f |\n",
		s.APIRate, s.DBRate, ratio, s.APIP50, s.APIP99, s.DBP50, s.DBP99)
	if s.Ratio > 0 {
		verdict := "below"
		if s.Ratio >= 0.70 {
			verdict = "meets"
		}
		fmt.Printf("\ntarget: module >= 70%% of the database's own batched rate: %s (%.1f%%)\n", verdict, s.Ratio*100)
	}
	errs := map[string]int{}
	for _, r := range s.API {
		for k, v := range r.Errors {
			errs[k] += v
		}
	}
	if len(errs) > 0 {
		fmt.Printf("API errors by status (all reps): %v\n", errs)
	} else if len(s.API) > 0 {
		fmt.Println("API errors: none")
	}
	if v := s.Verify; v != nil {
		fmt.Printf("verify (%.1fs): %d channels, %d posts answered 201 (incl. warm-up), %d stored, %d duplicate seqs answered\n",
			v.Seconds, v.Channels, v.Answered, v.Stored, v.DupSeqs)
		for _, p := range v.Problems {
			fmt.Println("  verify:", p)
		}
	}
}
