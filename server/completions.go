package server

import (
	"time"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/openai"
	"github.com/llmux/llmux/scheduler"
)

func (s *Server) handleCompletions(c *gin.Context) {
	var req openai.CompletionRequest
	mi, ok := s.parseGeneration(c, &req, &req.Model)
	if !ok {
		return
	}
	// One scheduler request per prompt.
	prompts := req.Prompt.Tokens
	for _, t := range req.Prompt.Texts {
		toks, err := s.model.Tokenize(t, true, false)
		if err != nil {
			s.fail(c, openai.Invalid("prompt", "could not tokenize the prompt: %v", err))
			return
		}
		prompts = append(prompts, toks)
	}
	top := -1
	if req.Logprobs != nil {
		top = *req.Logprobs
	}
	seed := seedFor(req.Seed)
	var reqs []scheduler.Request
	var echo []string
	for i, p := range prompts {
		if len(p) >= mi.Context {
			s.fail(c, openai.InvalidCode("prompt", "context_length_exceeded", "prompt %d is %d tokens long, but this model's context holds %d", i, len(p), mi.Context))
			return
		}
		r, e := req.Sampling.Request(p, req.MaxTokens, top, seed)
		if e != nil {
			s.fail(c, e)
			return
		}
		r.ID, r.Model = requestIDOf(c), req.Model
		reqs = append(reqs, r)
		if req.Echo {
			echo = append(echo, s.model.Detokenize(p))
		}
	}
	n := reqs[0].N
	total := n * len(reqs)
	echoFor := func(index int) string {
		if !req.Echo {
			return ""
		}
		return echo[index/n]
	}
	id := newID("cmpl-")
	created := time.Now().Unix()
	resp := func(choices []openai.CompletionChoice) openai.Completion {
		return openai.Completion{ID: id, Object: "text_completion", Created: created, Model: req.Model, SystemFingerprint: s.fingerprint, Choices: choices}
	}
	if req.Stream {
		started := false
		echoed := make([]bool, total)
		offsets := make([]int, total)
		g, err := s.generate(c.Request.Context(), reqs, func(ev choiceEvent) error {
			if ev.Err != nil {
				return ev.Err
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
		s.endStream(c, started, err, func() any {
			r := resp([]openai.CompletionChoice{})
			r.Usage = &g.usage
			return r
		}, req.StreamOptions)
		return
	}
	lps := make([]*openai.CompletionLogprobs, total)
	offsets := make([]int, total)
	for i := range offsets {
		offsets[i] = len(echoFor(i))
	}
	var each func(choiceEvent)
	if top >= 0 {
		each = func(ev choiceEvent) {
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
	res, err := s.collect(c.Request.Context(), reqs, total, echoFor, each)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := resp(nil)
	out.Usage = &res.gen.usage
	for i := range total {
		out.Choices = append(out.Choices, openai.CompletionChoice{Index: i, Text: res.texts[i].String(), FinishReason: res.finish[i], Logprobs: lps[i]})
	}
	c.Header("Server-Timing", serverTiming(res.gen.timings))
	c.JSON(200, out)
}

// completionLogprobs builds the legacy logprobs object; offset tracks the
// text offset of the next token within the choice.
func (s *Server) completionLogprobs(toks []scheduler.TokenInfo, offset *int) *openai.CompletionLogprobs {
	lp := &openai.CompletionLogprobs{}
	for _, t := range toks {
		lp.Tokens = append(lp.Tokens, string(t.Piece))
		lp.TokenLogprobs = append(lp.TokenLogprobs, float64(t.Logprob))
		lp.TextOffset = append(lp.TextOffset, *offset)
		*offset += len(t.Piece)
		top := map[string]float64{}
		for _, alt := range t.Top {
			top[string(s.model.Piece(alt.Token))] = float64(alt.Logprob)
		}
		lp.TopLogprobs = append(lp.TopLogprobs, top)
	}
	return lp
}
