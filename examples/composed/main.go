// Command composed is an llmux application written in Go: API-key auth in
// front of a keyword router that sends questions about code to one LLM
// deployment and everything else to another. llmux.yaml beside it is the
// same application as config.
//
//	go run ./examples/composed --chat chat.gguf --code code.gguf --key secret
package main

import (
	"context"
	"flag"
	"log"
	"net/http"

	"github.com/llmux/llmux/app"
	"github.com/llmux/llmux/llm"
	"github.com/llmux/llmux/middleware"
	"github.com/llmux/llmux/multiplex"
	"github.com/llmux/llmux/scheduler"
	"github.com/llmux/llmux/server"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "address to listen on")
	chat := flag.String("chat", "", "GGUF file of the chat model")
	code := flag.String("code", "", "GGUF file of the code model")
	key := flag.String("key", "secret", "API key clients send")
	direct := flag.Bool("direct", false, "serve the models without auth and router (to compare)")
	flag.Parse()
	handler, err := build(context.Background(), *chat, *code, *key, *direct)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("serving on http://%s/assistant/v1 (--direct: /v1)", *addr)
	log.Fatal(http.ListenAndServe(*addr, handler))
}

// build serves both models in this process and composes the application.
func build(ctx context.Context, chat, code, key string, direct bool) (http.Handler, error) {
	pool, err := multiplex.NewLocalPool([]multiplex.ModelConfig{{Name: "chat", Path: chat}, {Name: "code", Path: code}}, scheduler.Options{Parallel: 16})
	if err != nil {
		return nil, err
	}
	go pool.Run(ctx)
	if direct {
		return server.New(pool, server.Options{}).Handler(), nil
	}
	spec, err := assistant(key)
	if err != nil {
		return nil, err
	}
	a, err := app.Build(spec, app.Env{Registry: app.Builtin(),
		LLM:    func(d app.DeploymentSpec) (llm.Backend, error) { return app.Restrict(pool, d.Models), nil },
		Routes: func(b llm.Backend) http.Handler { return server.New(b, server.Options{}).Handler() },
	})
	if err != nil {
		return nil, err
	}
	return app.Mount(a), nil
}

// assistant is the application, mounted at /assistant.
func assistant(key string) (app.Spec, error) {
	return app.New("assistant").Route("/assistant").
		LLM("chat-llm", "chat").
		LLM("code-llm", "code").
		Deploy("router", "keyword-router", middleware.KeywordRouterConfig{
			Rules:   []middleware.KeywordRule{{Keywords: []string{"code", "function", "bug"}, To: "code-llm", Model: "code"}},
			Default: "chat-llm", DefaultModel: "chat",
		}, "chat-llm", "code-llm").
		Ingress("router").
		Use("auth", middleware.AuthConfig{Keys: []middleware.KeyConfig{{Key: key}}}).
		Spec()
}
