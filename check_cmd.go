package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"time"

	"anqi-edge/cdc"
	"anqi-edge/check"
	"anqi-edge/config"
)

// checkTimeout bounds a whole "anqi-edge check" run; each check has its
// own, shorter bound inside it.
const checkTimeout = time.Minute

// checkExtras are checks other packages contribute to "anqi-edge check",
// run after the built-in ones.
var checkExtras = []check.Func{checkCDC}

// checkCDC tries the [cdc] account: server settings (log_bin,
// binlog_format=ROW), grants and the watched tables, one line each.
func checkCDC(ctx context.Context, cfg *config.Config) []check.Result {
	if cfg.CDC.Addr == "" {
		return nil
	}
	var out []check.Result
	for _, r := range cdc.Check(ctx, cdc.FromConfig(cfg.CDC)) {
		res := check.Result{Name: "cdc " + r.Name + " (cdc.addr " + cfg.CDC.Addr + ")"}
		if !r.OK {
			res.Err = errors.New(r.Detail)
		}
		out = append(out, res)
	}
	return out
}

// checkCmd is "anqi-edge check [-config FILE]", anqi-edge's nginx -t: it
// validates FILE, then tries everything it names and prints one line per
// check, "ok   WHAT" or "FAIL WHAT: REASON". Exit 0 only when all pass, 1
// when any fails (an invalid file included), 2 on a bad command line.
// Unlike a plain start, a missing FILE is a failure, never the embedded
// default: the point is to check the file that will be used.
func checkCmd(args, environ []string, stderr io.Writer) int {
	fl := flag.NewFlagSet("anqi-edge check", flag.ContinueOnError)
	path := fl.String("config", "config.toml", "config file to check")
	if code, ok := parseFlags(fl, args, stderr, "usage: anqi-edge check [-config FILE]"); !ok {
		return code
	}
	cfg, err := config.Load(*path, environ)
	if err != nil {
		check.Write(stderr, []check.Result{{Name: "config " + *path, Err: err}})
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	results := append([]check.Result{{Name: "config " + *path}}, check.Run(ctx, cfg, check.Options{Extra: checkExtras})...)
	if !check.Write(stderr, results) {
		return 1
	}
	return 0
}
