// tlsload: N idle wss devices with a chosen TLS version, either all with
// full handshakes or all resuming one session (a ticket obtained by a first,
// uncounted connection), for tools/bench-tls.
//
// Prints "READY connected=N resumed=R failed=F seconds=S" once every dial
// has finished, keeps the connections open (answering pings) until SIGTERM,
// then closes them and prints "DONE".
//
//	tlsload -url 'wss://127.0.0.1:8443/v1/devices/{id}?token={token}' \
//	        -creds FILE -n 5000 -tls 1.3 [-resume] [-concurrency 64]
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// oneSession offers the first session it was given to every connection.
type oneSession struct {
	mu sync.Mutex
	s  *tls.ClientSessionState
}

func (c *oneSession) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.s, c.s != nil
}

func (c *oneSession) Put(_ string, s *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.s == nil && s != nil {
		c.s = s
	}
}

func main() {
	url := flag.String("url", "", "wss URL with {id} and {token}")
	credsFile := flag.String("creds", "", "file of id,token lines (else dev<i> and -token)")
	token := flag.String("token", "secret", "token when there is no -creds file")
	n := flag.Int("n", 1000, "connections")
	ver := flag.String("tls", "1.3", "TLS version: 1.2 or 1.3")
	resume := flag.Bool("resume", false, "every connection resumes one session")
	conc := flag.Int("concurrency", 64, "parallel handshakes")
	flag.Parse()

	type cred struct{ id, tok string }
	creds := make([]cred, 0, *n)
	if *credsFile != "" {
		f, err := os.Open(*credsFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() && len(creds) < *n {
			p := strings.SplitN(strings.TrimSpace(sc.Text()), ",", 2)
			if len(p) == 2 {
				creds = append(creds, cred{p[0], p[1]})
			}
		}
		f.Close()
	}
	for i := len(creds); i < *n; i++ {
		creds = append(creds, cred{fmt.Sprintf("dev%d", i), *token})
	}

	cfg := &tls.Config{InsecureSkipVerify: true}
	switch *ver {
	case "1.2":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	case "1.3":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	default:
		fmt.Fprintln(os.Stderr, "-tls: 1.2 or 1.3")
		os.Exit(2)
	}
	if *resume {
		cfg.ClientSessionCache = &oneSession{}
	} else {
		cfg.SessionTicketsDisabled = true
	}
	dialer := websocket.Dialer{TLSClientConfig: cfg, HandshakeTimeout: 60 * time.Second,
		ReadBufferSize: 1024, WriteBufferSize: 1024}
	urlOf := func(c cred) string {
		return strings.NewReplacer("{id}", c.id, "{token}", c.tok).Replace(*url)
	}

	if *resume {
		// the session to resume: one uncounted connection, read until the
		// ticket (sent before the 101 by TLS 1.3 servers) is in the cache
		ws, _, err := dialer.Dial(urlOf(creds[0]), nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "prime:", err)
			os.Exit(1)
		}
		ws.Close()
		if s, _ := cfg.ClientSessionCache.Get(""); s == nil {
			fmt.Fprintln(os.Stderr, "prime: server sent no session ticket")
		}
	}

	conns := make([]*websocket.Conn, *n)
	var resumed, failed int64
	var firstErr atomic.Value
	sem := make(chan struct{}, *conc)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := 0; i < *n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			ws, _, err := dialer.Dial(urlOf(creds[i]), nil)
			if err != nil {
				atomic.AddInt64(&failed, 1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			if tc, ok := ws.UnderlyingConn().(*tls.Conn); ok && tc.ConnectionState().DidResume {
				atomic.AddInt64(&resumed, 1)
			}
			conns[i] = ws
			go func() { // answers pings; ends when the connection does
				for {
					if _, _, err := ws.ReadMessage(); err != nil {
						return
					}
				}
			}()
		}(i)
	}
	wg.Wait()
	el := time.Since(t0).Seconds()
	if e := firstErr.Load(); e != nil {
		fmt.Fprintln(os.Stderr, "first error:", e)
	}
	fmt.Printf("READY connected=%d resumed=%d failed=%d seconds=%.2f\n",
		int64(*n)-failed, resumed, failed, el)

	// hold until SIGTERM (stdin may be /dev/null: not a signal to stop)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	for _, c := range conns {
		if c != nil {
			c.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
				time.Now().Add(time.Second))
			c.Close()
		}
	}
	fmt.Println("DONE")
}
