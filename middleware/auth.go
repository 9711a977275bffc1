// Package middleware holds the middleware llmux ships for applications,
// usable as they are or as examples to copy: API-key auth with per-key
// rate limits (HTTP middleware), and Go deployments that sit between the
// routes and the LLM deployments — a keyword router, a router that asks a
// small model, a response cache, a fan-out and a prompt guard. Each
// deployment streams when what it calls streams.
package middleware

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/llmux/llmux/openai"
)

// AuthConfig configures Auth.
type AuthConfig struct {
	Keys []KeyConfig `json:"keys" yaml:"keys"`
}

// KeyConfig is one API key and its rate limit.
type KeyConfig struct {
	Key string `json:"key" yaml:"key"`
	// RequestsPerSecond refills the key's token bucket (0: no limit).
	RequestsPerSecond float64 `json:"requests_per_second,omitempty" yaml:"requests_per_second,omitempty"`
	// Burst is the bucket's size (default: one second's worth, at least 1).
	Burst int `json:"burst,omitempty" yaml:"burst,omitempty"`
}

// Validate checks the keys.
func (c *AuthConfig) Validate() error {
	if len(c.Keys) == 0 {
		return fmt.Errorf("keys: at least one key is needed")
	}
	for i, k := range c.Keys {
		if k.Key == "" {
			return fmt.Errorf("keys[%d]: the key is empty", i)
		}
		if k.RequestsPerSecond < 0 || k.Burst < 0 || math.IsNaN(k.RequestsPerSecond) {
			return fmt.Errorf("keys[%d]: rate limits must not be negative", i)
		}
	}
	return nil
}

// Auth checks the bearer key of each request and applies that key's
// token-bucket rate limit: a missing or wrong key is a 401, a key over
// its rate a 429 with Retry-After. Keys are compared in constant time.
type Auth struct {
	keys []authKey
}

type authKey struct {
	sum     [32]byte // of the key, so comparisons take the same time for any length
	limiter *rate.Limiter
}

// NewAuth returns the middleware for cfg.
func NewAuth(cfg AuthConfig) (*Auth, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Auth{}
	for _, k := range cfg.Keys {
		var lim *rate.Limiter
		if k.RequestsPerSecond > 0 {
			burst := k.Burst
			if burst == 0 {
				burst = max(1, int(math.Ceil(k.RequestsPerSecond)))
			}
			lim = rate.NewLimiter(rate.Limit(k.RequestsPerSecond), burst)
		}
		a.keys = append(a.keys, authKey{sum: sha256.Sum256([]byte(k.Key)), limiter: lim})
	}
	return a, nil
}

// KeysAuth is Auth over plain keys with no rate limits (--api-key).
func KeysAuth(keys []string) (*Auth, error) {
	cfg := AuthConfig{}
	for _, k := range keys {
		cfg.Keys = append(cfg.Keys, KeyConfig{Key: k})
	}
	return NewAuth(cfg)
}

// RequestKey is the key a request presents: Authorization: Bearer (OpenAI's
// clients), else x-api-key (Anthropic's).
func RequestKey(r *http.Request) (string, bool) {
	if key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return key, true
	}
	if key := r.Header.Get("X-Api-Key"); key != "" {
		return key, true
	}
	return "", false
}

// Check admits r, or says why not in OpenAI's error shape.
func (a *Auth) Check(r *http.Request) *openai.Error {
	key, ok := RequestKey(r)
	if !ok {
		return openai.Unauthorized("missing API key: send Authorization: Bearer <key> (or x-api-key: <key>)")
	}
	sum := sha256.Sum256([]byte(key))
	var match *authKey
	for i := range a.keys {
		if subtle.ConstantTimeCompare(sum[:], a.keys[i].sum[:]) == 1 {
			match = &a.keys[i]
		}
	}
	if match == nil {
		return openai.Unauthorized("incorrect API key")
	}
	if match.limiter != nil {
		res := match.limiter.Reserve()
		if d := res.Delay(); d > 0 {
			res.Cancel()
			return openai.RateLimited(fmt.Sprintf("this API key is over its rate limit; retry in %s", d.Round(time.Millisecond)), d)
		}
	}
	return nil
}

// Wrap is Auth as HTTP middleware.
func (a *Auth) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e := a.Check(r); e != nil {
			WriteError(w, e)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// WriteError answers with e in OpenAI's error shape (and Retry-After).
func WriteError(w http.ResponseWriter, e *openai.Error) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(openai.ErrorBody{Error: e})
}
