package tlscert

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// RedirectHandler answers every request with 308 Permanent Redirect to the
// same host, path and query on https. httpsPort is the TLS listener's port:
// 443 is left out of the URL, any other port is written after the host
// (the port the client used for plain HTTP is dropped). 308 keeps the
// method and body, so a form POSTed to http is re-sent to https as a POST.
func RedirectHandler(httpsPort int) fasthttp.RequestHandler {
	suffix := ""
	if httpsPort != 443 && httpsPort > 0 {
		suffix = ":" + strconv.Itoa(httpsPort)
	}
	return func(ctx *fasthttp.RequestCtx) {
		host, ok := hostWithoutPort(ctx.Host())
		if !ok {
			ctx.Error("missing or malformed Host header", fasthttp.StatusBadRequest)
			return
		}
		uri := ctx.Request.Header.RequestURI()
		if len(uri) == 0 || uri[0] != '/' {
			// Absolute-form ("GET http://h/p") or "*": rebuild path?query.
			uri = ctx.URI().RequestURI()
		}
		loc := make([]byte, 0, len("https://")+len(host)+len(suffix)+len(uri))
		loc = append(loc, "https://"...)
		loc = append(loc, host...)
		loc = append(loc, suffix...)
		loc = append(loc, uri...)
		ctx.Response.Header.SetBytesV(fasthttp.HeaderLocation, loc)
		ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
	}
}

// RedirectServer is a fasthttp.Server for server.redirect_http running
// RedirectHandler: small limits, since it only ever answers redirects.
func RedirectServer(httpsPort int) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               RedirectHandler(httpsPort),
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          10 * time.Second,
		IdleTimeout:           30 * time.Second,
		MaxRequestBodySize:    64 << 10,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		CloseOnShutdown:       true,
	}
}

// hostWithoutPort returns the host of a Host header value ("a.example:80",
// "[::1]:80", "a.example") without its port, refusing anything that is not
// a plain DNS name or IP literal so nothing odd reaches the Location header.
func hostWithoutPort(h []byte) ([]byte, bool) {
	if len(h) == 0 {
		return nil, false
	}
	if h[0] == '[' { // IPv6 literal
		end := -1
		for i, c := range h {
			if c == ']' {
				end = i
				break
			}
		}
		if end < 2 || (end+1 < len(h) && h[end+1] != ':') {
			return nil, false
		}
		for _, c := range h[1:end] {
			if !(c == ':' || c == '.' || c == '%' || isAlnum(c)) {
				return nil, false
			}
		}
		return h[:end+1], true
	}
	for i := len(h) - 1; i >= 0; i-- {
		if h[i] == ':' {
			h = h[:i]
			break
		}
	}
	if len(h) == 0 {
		return nil, false
	}
	for _, c := range h {
		if !(c == '.' || c == '-' || c == '_' || isAlnum(c)) {
			return nil, false
		}
	}
	return h, true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
