package server

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/openai"
)

type embeddingRequest struct {
	Model          string        `json:"model"`
	Input          openai.Prompt `json:"input"`
	EncodingFormat string        `json:"encoding_format"`
	Dimensions     *int          `json:"dimensions"`
	User           string        `json:"user"`
}

type embeddingData struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"`
}

func (s *Server) handleEmbeddings(c *gin.Context) {
	var req embeddingRequest
	if e := s.decode(c, &req); e != nil {
		s.fail(c, e)
		return
	}
	if !s.settleModel(c, &req.Model) {
		return
	}
	if !req.Input.Set || req.Input.Count() == 0 {
		s.fail(c, openai.Invalid("input", "input must be a non-empty string, array of strings, or array of token ids"))
		return
	}
	if req.Input.Count() > s.limits.MaxPrompts {
		s.fail(c, openai.Invalid("input", "at most %d inputs per request, got %d", s.limits.MaxPrompts, req.Input.Count()))
		return
	}
	if req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64" {
		s.fail(c, openai.Invalid("encoding_format", "encoding_format must be float or base64"))
		return
	}
	mi, e := s.backend.Info(c.Request.Context(), req.Model)
	if e != nil {
		s.fail(c, e)
		return
	}
	size := 0
	for _, t := range req.Input.Texts {
		size += len(t)
	}
	if e := openai.CheckPromptBytes("input", size, s.limits); e != nil {
		s.fail(c, e)
		return
	}
	for _, t := range req.Input.Tokens {
		if e := openai.CheckTokens("input", t, mi.VocabSize); e != nil {
			s.fail(c, e)
			return
		}
	}
	if req.Dimensions != nil && (*req.Dimensions < 1 || *req.Dimensions > mi.Embedding) {
		s.fail(c, openai.Invalid("dimensions", "dimensions must be between 1 and %d", mi.Embedding))
		return
	}
	ereq := &llm.EmbedRequest{Model: req.Model}
	if req.Dimensions != nil {
		ereq.Dimensions = *req.Dimensions
	}
	for _, t := range req.Input.Tokens {
		ereq.Inputs = append(ereq.Inputs, llm.Prompt{Tokens: t, Tokenized: true})
	}
	for _, t := range req.Input.Texts {
		ereq.Inputs = append(ereq.Inputs, llm.Prompt{Text: t})
	}
	res, e := s.backend.Embed(c.Request.Context(), ereq)
	if e != nil {
		s.fail(c, e)
		return
	}
	resp := struct {
		Object string          `json:"object"`
		Data   []embeddingData `json:"data"`
		Model  string          `json:"model"`
		Usage  openai.Usage    `json:"usage"`
	}{Object: "list", Model: req.Model}
	for i, v := range res.Vectors {
		d := embeddingData{Object: "embedding", Index: i, Embedding: v}
		if req.EncodingFormat == "base64" {
			buf := make([]byte, 4*len(v))
			for j, x := range v {
				binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(x))
			}
			d.Embedding = base64.StdEncoding.EncodeToString(buf)
		}
		resp.Data = append(resp.Data, d)
	}
	resp.Usage.PromptTokens = res.PromptTokens
	resp.Usage.TotalTokens = res.PromptTokens
	c.JSON(http.StatusOK, resp)
}
