package app

import (
	"net/http"

	"github.com/llmux/llmux/deploy"
	"github.com/llmux/llmux/middleware"
)

// Builtin returns a registry of the kinds llmux ships (package
// middleware); register your own kinds beside them.
//
//	deployments: keyword-router, classifier-router, cache, fanout, guard
//	middleware:  auth
func Builtin() *Registry {
	r := NewRegistry()
	r.Register("keyword-router", Kind{Calls: -1,
		Config: func() any { return &middleware.KeywordRouterConfig{} },
		New: func(cfg any, calls []*deploy.Handle) (deploy.Deployment, error) {
			return middleware.NewKeywordRouter(*cfg.(*middleware.KeywordRouterConfig), calls)
		}})
	r.Register("classifier-router", Kind{Calls: -1,
		Config: func() any { return &middleware.ClassifierRouterConfig{} },
		New: func(cfg any, calls []*deploy.Handle) (deploy.Deployment, error) {
			return middleware.NewClassifierRouter(*cfg.(*middleware.ClassifierRouterConfig), calls)
		}})
	r.Register("cache", Kind{Calls: 1,
		Config: func() any { return &middleware.CacheConfig{} },
		New: func(cfg any, calls []*deploy.Handle) (deploy.Deployment, error) {
			return middleware.NewCache(*cfg.(*middleware.CacheConfig), calls[0])
		}})
	r.Register("fanout", Kind{Calls: -1,
		Config: func() any { return &middleware.FanOutConfig{} },
		New: func(cfg any, calls []*deploy.Handle) (deploy.Deployment, error) {
			return middleware.NewFanOut(*cfg.(*middleware.FanOutConfig), calls)
		}})
	r.Register("guard", Kind{Calls: 1,
		Config: func() any { return &middleware.GuardConfig{} },
		New: func(cfg any, calls []*deploy.Handle) (deploy.Deployment, error) {
			return middleware.NewGuard(*cfg.(*middleware.GuardConfig), calls[0])
		}})
	r.RegisterMiddleware("auth", MiddlewareKind{
		Config: func() any { return &middleware.AuthConfig{} },
		New: func(cfg any) (func(http.Handler) http.Handler, error) {
			a, err := middleware.NewAuth(*cfg.(*middleware.AuthConfig))
			if err != nil {
				return nil, err
			}
			return a.Wrap, nil
		}})
	return r
}
