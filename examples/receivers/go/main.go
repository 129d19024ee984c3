// A hookrelay webhook receiver that verifies with the Standard Webhooks Go library.
//
// Run it:
//
//	cd examples/receivers/go
//	go mod tidy   # downloads the library and writes go.sum
//	WEBHOOK_SECRET='whsec_...' PORT=8000 go run .
//
// WEBHOOK_SECRET is exactly the `secret` given to hookrelay for the webhook. PORT=0 picks a
// free port; the `listening <port>` line says which. Stdout carries one line per request
// (`verified <id> <type>`, `duplicate <id>`, `rejected <reason>`), nothing else.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// hookrelay's events are at most 256 KiB; refusing far larger bodies keeps a stranger from
// filling our memory.
const maxBody = 1 << 20

// How many webhook-ids we remember. Production keeps them in a database table with a unique
// constraint, or in Redis (SET NX with a TTL). The TTL must exceed the 5-minute timestamp
// tolerance, or a captured request could be replayed once its id is forgotten; to also
// absorb hookrelay's retries of a delivery we did process (same id, fresh timestamp), keep
// ids longer than the retry schedule (about 28 hours by default).
const seenLimit = 100_000

// newVerifier keys the HMAC as hookrelay does: the base64 decoding of what follows `whsec_`,
// else the secret's own UTF-8 bytes. NewWebhook base64-decodes whatever it is given, so a
// plain secret goes through NewWebhookRaw.
func newVerifier(secret string) (*standardwebhooks.Webhook, error) {
	if strings.HasPrefix(secret, "whsec_") {
		return standardwebhooks.NewWebhook(secret)
	}
	return standardwebhooks.NewWebhookRaw([]byte(secret))
}

// seenIDs is a bounded set of webhook-ids: the oldest is forgotten first. net/http serves
// requests concurrently, so check-and-add happens under one lock, or two copies of a
// delivery arriving together could both pass.
type seenIDs struct {
	mu    sync.Mutex
	ids   map[string]struct{}
	order []string
}

// addIfNew reports whether id was new, remembering it if so.
func (s *seenIDs) addIfNew(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[id]; ok {
		return false
	}
	s.ids[id] = struct{}{}
	s.order = append(s.order, id)
	if len(s.order) > seenLimit {
		delete(s.ids, s.order[0])
		s.order = s.order[1:]
	}
	return true
}

// stdout is shared by concurrent handlers; one Fprintln per line keeps lines whole
// (os.Stdout is unbuffered, so nothing waits for a flush).
var stdoutMu sync.Mutex

func say(format string, args ...any) {
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	fmt.Fprintln(os.Stdout, fmt.Sprintf(format, args...))
}

func reject(w http.ResponseWriter, status int, reason string) {
	say("rejected %s", reason)
	http.Error(w, reason, status)
}

func handler(wh *standardwebhooks.Webhook, seen *seenIDs) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		// Verify the exact bytes received: re-serialised JSON would not match the signature.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				reject(w, http.StatusRequestEntityTooLarge, "body too large")
			} else {
				reject(w, http.StatusBadRequest, "unreadable body")
			}
			return
		}
		// Checks webhook-timestamp against now (5 minutes either way), then every
		// space-separated `v1,` signature (two during a secret rotation). Its errors read
		// "message timestamp too old", "no matching signature found", and so on.
		if err := wh.Verify(body, r.Header); err != nil {
			reject(w, http.StatusBadRequest, err.Error())
			return
		}
		var event struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(body, &event); err != nil || event.Type == "" {
			reject(w, http.StatusBadRequest, "body is not a hookrelay event")
			return
		}

		// Dedupe only after verifying, so that forged requests cannot plant ids.
		id := r.Header.Get("webhook-id")
		if !seen.addIfNew(id) {
			// 2xx, not an error: hookrelay retries anything else, and we already have it.
			say("duplicate %s", id)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		// Real work belongs on a queue: hookrelay waits at most 15 s (by default) for the
		// answer and counts a slow one as failed, then sends the event again. (Here the id is
		// remembered before the work; with a database, record it in the work's transaction.)
		say("verified %s %s", id, event.Type)
		w.WriteHeader(http.StatusNoContent)
	}
}

func main() {
	log.SetOutput(os.Stderr)
	secret := os.Getenv("WEBHOOK_SECRET")
	if secret == "" {
		log.Fatal("WEBHOOK_SECRET is not set")
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8000"
	}
	wh, err := newVerifier(secret)
	if err != nil {
		log.Fatalf("WEBHOOK_SECRET: %v", err)
	}
	// Listen first, then announce: whoever waits for `listening` can connect at once.
	listener, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		log.Fatal(err)
	}
	say("listening %d", listener.Addr().(*net.TCPAddr).Port)
	seen := &seenIDs{ids: make(map[string]struct{})}
	log.Fatal(http.Serve(listener, handler(wh, seen)))
}
