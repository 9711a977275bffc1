package benchmarks

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestListModels(t *testing.T) {
	cases := []struct {
		name    string
		status  int
		body    string
		want    string // ids joined by commas
		wantErr string
	}{
		{"one", 200, `{"object":"list","data":[{"id":"bench","object":"model"}]}`, "bench", ""},
		{"several in server order", 200, `{"data":[{"id":"b"},{"id":"a"},{"id":"c"}]}`, "b,a,c", ""},
		{"empty list", 200, `{"data":[]}`, "", "no models"},
		{"not JSON", 200, `<html>`, "", "invalid character"},
		{"unauthorized", 401, `{"error":"bad key"}`, "", "401"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var auth, path string
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				auth, path = r.Header.Get("Authorization"), r.URL.Path
				w.WriteHeader(c.status)
				w.Write([]byte(c.body))
			}))
			defer hs.Close()
			// A base URL ending in /v1/ names the same server.
			ids, err := ListModels(context.Background(), hs.URL+"/v1/", "sk-test", nil)
			if path != "/v1/models" || auth != "Bearer sk-test" {
				t.Errorf("request: path %q, auth %q", path, auth)
			}
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, %v; want an error with %q", ids, err, c.wantErr)
				}
				return
			}
			if err != nil || strings.Join(ids, ",") != c.want {
				t.Fatalf("got %v, %v; want %s", ids, err, c.want)
			}
		})
	}
}

func TestListModelsWithoutKey(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := r.Header.Get("Authorization"); h != "" {
			t.Errorf("Authorization %q sent without a key", h)
		}
		w.Write([]byte(`{"data":[{"id":"m"}]}`))
	}))
	defer hs.Close()
	if ids, err := ListModels(context.Background(), hs.URL, "", nil); err != nil || len(ids) != 1 || ids[0] != "m" {
		t.Fatalf("got %v, %v", ids, err)
	}
}
