package server

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/openai"
)

// adapterRequest is vLLM's body for registering a LoRA adapter at run
// time, with llmux's base model and scale beside it.
type adapterRequest struct {
	Name  string  `json:"lora_name"`
	Path  string  `json:"lora_path"`
	Base  string  `json:"base_model_name"`
	Scale float64 `json:"scale"`
}

// adapters is the backend's adapter registry, or a 400 when it has none.
func (s *Server) adapters(c *gin.Context) (llm.AdapterManager, bool) {
	am, ok := s.backend.(llm.AdapterManager)
	if !ok {
		s.fail(c, openai.Invalid("", "this server does not register adapters at run time"))
	}
	return am, ok
}

// handleLoadAdapter is POST /v1/load_lora_adapter (admin): the adapter's
// file must lie in a directory given by --lora-dir.
func (s *Server) handleLoadAdapter(c *gin.Context) {
	var req adapterRequest
	if e := s.decode(c, &req); e != nil {
		s.fail(c, e)
		return
	}
	if req.Name == "" || req.Path == "" {
		s.fail(c, openai.Invalid("lora_name", "lora_name and lora_path are required"))
		return
	}
	am, ok := s.adapters(c)
	if !ok {
		return
	}
	mi, e := am.LoadAdapter(c.Request.Context(), &llm.AdapterRequest{Name: req.Name, Base: req.Base, Path: req.Path, Scale: req.Scale})
	if e != nil {
		s.fail(c, e)
		return
	}
	c.JSON(http.StatusOK, s.modelEntry(mi))
}

// handleUnloadAdapter is POST /v1/unload_lora_adapter (admin).
func (s *Server) handleUnloadAdapter(c *gin.Context) {
	var req adapterRequest
	if e := s.decode(c, &req); e != nil {
		s.fail(c, e)
		return
	}
	if req.Name == "" {
		s.fail(c, openai.Invalid("lora_name", "lora_name is required"))
		return
	}
	am, ok := s.adapters(c)
	if !ok {
		return
	}
	if e := am.UnloadAdapter(c.Request.Context(), req.Name); e != nil {
		s.fail(c, e)
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ok", "lora_name": req.Name})
}
