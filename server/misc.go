package server

import (
	"io"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/openai"
)

func (s *Server) modelEntry(mi llm.ModelInfo) openai.Model {
	m := openai.Model{ID: mi.ID, Object: "model", Created: s.created, OwnedBy: "llmux", MaxModelLen: mi.Context, Parent: mi.Parent, State: string(mi.State)}
	if mi.Chat != nil {
		m.LLMux = &openai.ModelExt{Chat: mi.Chat}
	}
	return m
}

func (s *Server) handleModels(c *gin.Context) {
	list := openai.ModelList{Object: "list", Data: []openai.Model{}}
	for _, mi := range s.backend.Models(c.Request.Context()) {
		list.Data = append(list.Data, s.modelEntry(mi))
	}
	c.JSON(http.StatusOK, list)
}

func (s *Server) handleModel(c *gin.Context) {
	mi, e := s.backend.Info(c.Request.Context(), c.Param("id"))
	if e != nil {
		s.fail(c, e)
		return
	}
	c.JSON(http.StatusOK, s.modelEntry(mi))
}

func (s *Server) handleHealth(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// handleReady answers 200 while the server accepts work: not draining,
// and the backend ready (its pinned models loaded, a replica up).
func (s *Server) handleReady(c *gin.Context) {
	if s.draining.Load() {
		s.fail(c, openai.Unavailable("draining"))
		return
	}
	l := s.backend.Load()
	if l.Unready != "" {
		s.fail(c, openai.Unavailable(l.Unready))
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready", "running": l.Running, "waiting": l.Waiting})
}

// handleAdminStatus reports every model's state and the server's load.
func (s *Server) handleAdminStatus(c *gin.Context) {
	models := []openai.Model{}
	for _, mi := range s.backend.Models(c.Request.Context()) {
		models = append(models, s.modelEntry(mi))
	}
	l := s.backend.Load()
	st := gin.H{"version": s.opts.Version, "draining": s.draining.Load(), "running": l.Running, "waiting": l.Waiting, "models": models}
	if s.opts.Deployments != nil {
		st["deployments"] = s.opts.Deployments()
	}
	c.JSON(http.StatusOK, st)
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
	if e := s.decode(c, &req); e != nil {
		s.fail(c, e)
		return
	}
	text := req.Content
	if text == "" {
		text = req.Prompt
	}
	if e := openai.CheckPromptBytes("content", len(text), s.limits); e != nil {
		s.fail(c, e)
		return
	}
	if !s.settleModel(c, &req.Model) {
		return
	}
	res, e := s.backend.Tokenize(c.Request.Context(), &llm.TokenizeRequest{Model: req.Model, Text: text, AddSpecial: req.AddSpecial == nil || *req.AddSpecial})
	if e != nil {
		s.fail(c, e)
		return
	}
	c.JSON(http.StatusOK, gin.H{"tokens": res.Tokens, "count": len(res.Tokens), "max_model_len": res.Context})
}

func (s *Server) handleDetokenize(c *gin.Context) {
	var req struct {
		Model  string  `json:"model"`
		Tokens []int32 `json:"tokens"`
	}
	if e := s.decode(c, &req); e != nil {
		s.fail(c, e)
		return
	}
	if !s.settleModel(c, &req.Model) {
		return
	}
	res, e := s.backend.Detokenize(c.Request.Context(), &llm.DetokenizeRequest{Model: req.Model, Tokens: req.Tokens})
	if e != nil {
		s.fail(c, e)
		return
	}
	c.JSON(http.StatusOK, gin.H{"content": res.Text, "prompt": res.Text})
}

// handleApply applies a config file sent as the body (llmux apply): its
// applications replace the running ones, as on SIGHUP. A file with
// mistakes is a 400 listing them; nothing changes.
func (s *Server) handleApply(c *gin.Context) {
	apply := s.apply.Load()
	if apply == nil {
		s.fail(c, openai.Forbidden("apply_unavailable", "this server applies no config"))
		return
	}
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		s.fail(c, openai.Invalid("", "could not read the config: %v", err))
		return
	}
	changed, err := (*apply)(body)
	if err != nil {
		msg := err.Error() // every problem, with its line: an admin's own file
		if len(msg) > 64<<10 {
			msg = msg[:64<<10] + "..."
		}
		s.fail(c, openai.InvalidCode("", "invalid_config", "%s", msg))
		return
	}
	c.JSON(http.StatusOK, gin.H{"applied": true, "changes": changed})
}
