package openstack

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// cloudAt connects to a server through a clouds.yaml entry, as operators do.
func cloudAt(t *testing.T, url string) *Cloud {
	t.Helper()
	f := filepath.Join(t.TempDir(), "clouds.yaml")
	yml := "clouds:\n  csc:\n    auth_type: none\n    auth: {endpoint: \"" + url + "/\", project_id: p1}\n"
	if err := os.WriteFile(f, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Connect(context.Background(), "csc", Options{CloudsFile: f, RetryBase: time.Millisecond, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Errors a cloud answers with are retried a bounded number of times when
// they are transient, and then reported with the cloud, what was being
// done and what to do.
func TestCloudErrors(t *testing.T) {
	cases := []struct {
		name     string
		status   int
		failures int32 // answers with status before answering 200
		requests int32 // requests the first list makes
		err      string
	}{
		{"rate limited, always", http.StatusTooManyRequests, 100, 6, "cloud csc: list networks: "},
		{"rate limited, then fine", http.StatusTooManyRequests, 2, 3, ""},
		{"unavailable, then fine", http.StatusServiceUnavailable, 3, 4, ""},
		{"unavailable, always", http.StatusServiceUnavailable, 100, 6, "cloud csc: list networks"},
		{"refused credentials", http.StatusUnauthorized, 100, 1, "the credentials were refused"},
		{"forbidden", http.StatusForbidden, 100, 1, "ask the cloud's operator for the role"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var n atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if !strings.HasSuffix(r.URL.Path, "/v2.0/networks") {
					w.Write([]byte(`{"subnets":[],"ports":[],"security_groups":[],"address_groups":[]}`))
					return
				}
				if n.Add(1) <= c.failures {
					w.WriteHeader(c.status)
					return
				}
				w.Write([]byte(`{"networks":[]}`))
			}))
			defer srv.Close()
			_, err := Read(context.Background(), cloudAt(t, srv.URL))
			if got := n.Load(); got != c.requests {
				t.Errorf("%d requests, want %d", got, c.requests)
			}
			switch {
			case c.err == "" && err != nil:
				t.Errorf("want success after retries, got %v", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Errorf("error %v, want it to contain %q", err, c.err)
			}
		})
	}
}
