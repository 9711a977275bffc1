package server

import (
	"time"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/openai"
)

func (s *Server) handleCompletions(c *gin.Context) {
	var req openai.CompletionRequest
	_, ok := s.parseGeneration(c, &req, &req.Model)
	if !ok {
		return
	}
	var prompts []llm.Prompt
	for _, t := range req.Prompt.Tokens {
		prompts = append(prompts, llm.Prompt{Tokens: t, Tokenized: true})
	}
	for _, t := range req.Prompt.Texts {
		prompts = append(prompts, llm.Prompt{Text: t})
	}
	top := -1
	if req.Logprobs != nil {
		top = *req.Logprobs
	}
	lreq := &llm.Request{ID: requestIDOf(c), TraceParent: c.GetString(traceParentKey), Model: req.Model, Prompts: prompts, Echo: req.Echo, Params: req.Sampling.Params(req.MaxTokens, top, seedFor(req.Seed))}
	lreq.Params.SeedGiven = req.Seed != nil
	s.limits.BoundParams(&lreq.Params)
	var ping func() error
	if req.Stream {
		ping = sseComment(c)
	}
	st, err := s.start(c, lreq, ping)
	if err != nil {
		s.endStream(c, c.Writer.Written(), err, generation{}, nil, nil)
		return
	}
	echo := st.Header().Echo
	n := max(lreq.Params.N, 1)
	total := n * len(prompts)
	echoFor := func(index int) string {
		if !req.Echo || index/n >= len(echo) {
			return ""
		}
		return echo[index/n]
	}
	id := newID("cmpl-")
	created := time.Now().Unix()
	fp := s.fingerprint(req.Model)
	resp := func(choices []openai.CompletionChoice) openai.Completion {
		return openai.Completion{ID: id, Object: "text_completion", Created: created, Model: req.Model, SystemFingerprint: fp, Choices: choices}
	}
	if req.Stream {
		started := false
		echoed := make([]bool, total)
		offsets := make([]int, total)
		g, err := s.consume(c.Request.Context(), st, req.Model, func(ev llm.Event) error {
			if ev.Error != nil {
				return ev.Error
			}
			if !started {
				started = true
				startSSE(c)
			}
			text := ev.Text
			if !echoed[ev.Index] {
				echoed[ev.Index] = true
				text = echoFor(ev.Index) + text
			}
			ch := openai.CompletionChoice{Index: ev.Index, Text: text, FinishReason: finishString(ev.Finish)}
			if top >= 0 && len(ev.Tokens) > 0 {
				ch.Logprobs = s.completionLogprobs(ev.Tokens, &offsets[ev.Index])
			}
			if text == "" && ch.FinishReason == nil && ch.Logprobs == nil {
				return nil
			}
			if err := writeSSE(c, resp([]openai.CompletionChoice{ch})); err != nil {
				return err
			}
			if s.traceWrite != nil && text != "" {
				s.traceWrite(requestIDOf(c), ev.At)
			}
			return nil
		})
		s.endStream(c, started, err, g, func() any {
			r := resp([]openai.CompletionChoice{})
			r.Usage, r.Timings = &g.usage, timingsOf(g)
			return r
		}, req.StreamOptions)
		return
	}
	lps := make([]*openai.CompletionLogprobs, total)
	offsets := make([]int, total)
	for i := range offsets {
		offsets[i] = len(echoFor(i))
	}
	var each func(llm.Event)
	if top >= 0 {
		each = func(ev llm.Event) {
			if len(ev.Tokens) == 0 {
				return
			}
			lp := s.completionLogprobs(ev.Tokens, &offsets[ev.Index])
			if lps[ev.Index] == nil {
				lps[ev.Index] = lp
				return
			}
			x := lps[ev.Index]
			x.Tokens = append(x.Tokens, lp.Tokens...)
			x.TokenLogprobs = append(x.TokenLogprobs, lp.TokenLogprobs...)
			x.TopLogprobs = append(x.TopLogprobs, lp.TopLogprobs...)
			x.TextOffset = append(x.TextOffset, lp.TextOffset...)
		}
	}
	res, err := s.collect(c.Request.Context(), st, req.Model, total, echoFor, each)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := resp(nil)
	out.Usage = &res.gen.usage
	for i := range total {
		out.Choices = append(out.Choices, openai.CompletionChoice{Index: i, Text: res.texts[i].String(), FinishReason: res.finish[i], Logprobs: lps[i]})
	}
	c.Header("Server-Timing", serverTiming(res.gen))
	c.JSON(200, out)
}

// completionLogprobs builds the legacy logprobs object; offset tracks the
// text offset of the next token within the choice.
func (s *Server) completionLogprobs(toks []llm.Token, offset *int) *openai.CompletionLogprobs {
	lp := &openai.CompletionLogprobs{}
	for _, t := range toks {
		lp.Tokens = append(lp.Tokens, string(t.Bytes))
		lp.TokenLogprobs = append(lp.TokenLogprobs, float64(t.Logprob))
		lp.TextOffset = append(lp.TextOffset, *offset)
		*offset += len(t.Bytes)
		top := map[string]float64{}
		for _, alt := range t.Top {
			top[string(alt.Bytes)] = float64(alt.Logprob)
		}
		lp.TopLogprobs = append(lp.TopLogprobs, top)
	}
	return lp
}
