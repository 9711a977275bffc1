package engine

import (
	"math"
	"sort"
)

// TokenLogprob is a token with its log-probability.
type TokenLogprob struct {
	Token   int32
	Logprob float32
}

// LogProbs computes, from raw logits, the log-probability of token and the
// top n tokens by probability (n = 0: none). It uses the model's own
// distribution, before temperature and other sampling transforms, as vLLM
// and OpenAI report it.
func LogProbs(logits []float32, token int32, n int) (float32, []TokenLogprob) {
	maxL := float32(math.Inf(-1))
	for _, l := range logits {
		if l > maxL {
			maxL = l
		}
	}
	var sum float64
	for _, l := range logits {
		sum += math.Exp(float64(l - maxL))
	}
	lse := float64(maxL) + math.Log(sum)
	lp := func(t int32) float32 { return float32(float64(logits[t]) - lse) }
	var chosen float32
	if token >= 0 && int(token) < len(logits) {
		chosen = lp(token)
	}
	if n <= 0 {
		return chosen, nil
	}
	n = min(n, len(logits))
	// Keep a small sorted list of the best n (n is at most ~20).
	top := make([]TokenLogprob, 0, n+1)
	for i, l := range logits {
		if len(top) == n && l <= logits[top[n-1].Token] {
			continue
		}
		j := sort.Search(len(top), func(k int) bool { return logits[top[k].Token] < l })
		top = append(top, TokenLogprob{})
		copy(top[j+1:], top[j:])
		top[j] = TokenLogprob{Token: int32(i)}
		if len(top) > n {
			top = top[:n]
		}
	}
	for i := range top {
		top[i].Logprob = lp(top[i].Token)
	}
	return chosen, top
}
