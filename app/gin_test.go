package app

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"
)

// TestGinMiddlewareWrapsAHandler: gin middleware that sets a header and
// aborts one path runs in front of a plain http.Handler, which sees the
// request it lets through with its path intact.
func TestGinMiddlewareWrapsAHandler(t *testing.T) {
	mw := GinMiddleware(func(c *gin.Context) {
		c.Header("X-Seen", "yes")
		if c.Request.URL.Path == "/blocked" {
			c.AbortWithStatusJSON(http.StatusForbidden, gin.H{"error": "no"})
			return
		}
		c.Next()
	})
	var got string
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.URL.Path; w.WriteHeader(204) }))
	for path, want := range map[string]int{"/v1/chat/completions": 204, "/blocked": 403} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, path, nil))
		if w.Code != want || w.Header().Get("X-Seen") != "yes" {
			t.Errorf("%s: %d (X-Seen %q), want %d", path, w.Code, w.Header().Get("X-Seen"), want)
		}
	}
	if got != "/v1/chat/completions" {
		t.Errorf("the handler saw %q", got)
	}
}
