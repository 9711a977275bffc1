package app

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// GinMiddleware adapts gin middleware to the http.Handler chain of an
// application (register it as a MiddlewareKind): h runs first, and
// c.Next() (or returning without aborting) passes the request on; a
// handler that aborts answers it.
func GinMiddleware(h gin.HandlerFunc) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		gin.SetMode(gin.ReleaseMode)
		e := gin.New()
		e.Use(h)
		pass := func(c *gin.Context) { next.ServeHTTP(c.Writer, c.Request) }
		e.NoRoute(pass)
		e.NoMethod(pass)
		e.HandleMethodNotAllowed = false
		e.RedirectTrailingSlash, e.RedirectFixedPath = false, false
		return e
	}
}
