package server

import (
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/llmux/llmux/openai"
)

func (s *Server) modelEntry() openai.Model {
	return openai.Model{ID: s.opts.ModelName, Object: "model", Created: s.created, OwnedBy: "llmux", MaxModelLen: s.sched.SeqContext()}
}

func (s *Server) handleModels(c *gin.Context) {
	c.JSON(http.StatusOK, openai.ModelList{Object: "list", Data: []openai.Model{s.modelEntry()}})
}

func (s *Server) handleModel(c *gin.Context) {
	id := c.Param("id")
	if !s.names[id] {
		s.fail(c, openai.NotFound("model", "model_not_found", "the model %q does not exist", id))
		return
	}
	m := s.modelEntry()
	m.ID = id
	c.JSON(http.StatusOK, m)
}

func (s *Server) handleHealth(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// handleReady answers 200 while the model is loaded and accepting work.
func (s *Server) handleReady(c *gin.Context) {
	if s.draining.Load() {
		s.fail(c, openai.Unavailable("draining"))
		return
	}
	st := s.sched.Stats()
	c.JSON(http.StatusOK, gin.H{"status": "ready", "model": s.opts.ModelName, "running": st.Running, "waiting": st.Waiting})
}

func (s *Server) handleMetrics(c *gin.Context) {
	promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{}).ServeHTTP(c.Writer, c.Request)
}

type tokenizeRequest struct {
	Model      string `json:"model"`
	Content    string `json:"content"` // llama.cpp's name
	Prompt     string `json:"prompt"`  // vLLM's name
	AddSpecial *bool  `json:"add_special"`
}

func (s *Server) handleTokenize(c *gin.Context) {
	var req tokenizeRequest
	if e := decode(c, &req); e != nil {
		s.fail(c, e)
		return
	}
	if req.Model != "" {
		if e := s.resolveModel(c, req.Model); e != nil {
			s.fail(c, e)
			return
		}
	}
	text := req.Content
	if text == "" {
		text = req.Prompt
	}
	add := req.AddSpecial == nil || *req.AddSpecial
	toks, err := s.model.Tokenize(text, add, false)
	if err != nil {
		s.fail(c, openai.Invalid("content", "could not tokenize: %v", err))
		return
	}
	if toks == nil {
		toks = []int32{}
	}
	c.JSON(http.StatusOK, gin.H{"tokens": toks, "count": len(toks), "max_model_len": s.sched.SeqContext()})
}

func (s *Server) handleDetokenize(c *gin.Context) {
	var req struct {
		Model  string  `json:"model"`
		Tokens []int32 `json:"tokens"`
	}
	if e := decode(c, &req); e != nil {
		s.fail(c, e)
		return
	}
	for _, t := range req.Tokens {
		if !s.model.ValidToken(t) {
			s.fail(c, openai.Invalid("tokens", "token id %d is out of range [0, %d)", t, s.model.VocabSize()))
			return
		}
	}
	text := s.model.Detokenize(req.Tokens)
	c.JSON(http.StatusOK, gin.H{"content": text, "prompt": text})
}
