// Command anqi-edge is a caching edge proxy for AnqiCMS.
//
//	anqi-edge [-config config.toml]
//	anqi-edge purge [-config config.toml] -id N [-host H]
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"anqi-edge/cache"
	"anqi-edge/config"
	"anqi-edge/replica"
)

// defaultConfig is the shipped config.toml, used when -config is not given
// and no config.toml is in the working directory.
//
//go:embed config.toml
var defaultConfig []byte

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stderr))
}

func run(args, environ []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "purge" {
		return purge(args[1:], environ, stderr)
	}
	if len(args) > 0 && args[0] == "check" {
		return checkCmd(args[1:], environ, stderr)
	}
	fl := flag.NewFlagSet("anqi-edge", flag.ContinueOnError)
	path := fl.String("config", "config.toml", "config file")
	if code, ok := parseFlags(fl, args, stderr, usage); !ok {
		return code
	}
	cfg, err := loadConfig(fl, *path, environ)
	if err != nil {
		fmt.Fprintf(stderr, "anqi-edge: %v\n", err)
		return 2
	}
	level := new(slog.LevelVar)
	level.UnmarshalText([]byte(cfg.Log.Level))
	log := newLogger(cfg.Log, level, stderr)
	slog.SetDefault(log)
	// Process-wide, so set here and not per proxy.Server.
	redis.SetLogger(replica.RedisLogger{L: log})

	// Catch signals before listening: a SIGTERM that arrives just after the
	// listeners open must drain, not kill the process.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGHUP (caught from here on, like SIGTERM) and POST /admin/reload
	// re-read the file, as nginx -s reload does.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	srv, err := replica.New(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "anqi-edge: %v\n", err)
		return 1
	}
	reload := func() error {
		next, err := loadConfig(fl, *path, environ)
		if err == nil {
			var restart []string
			if restart, err = srv.Reload(next); err == nil {
				level.UnmarshalText([]byte(next.Log.Level))
				if len(restart) > 0 {
					log.Warn("config reloaded; these keys need a restart and keep their old value: "+strings.Join(restart, ", "), "keys", restart)
				} else {
					log.Info("config reloaded")
				}
				return nil
			}
		}
		log.Error("config reload refused; the running config stays: "+err.Error(), "err", err)
		return err
	}
	// Set before the admin listener opens, so the first POST /admin/reload
	// already finds it.
	srv.SetReloader(reload)
	if err := srv.Start(); err != nil {
		fmt.Fprintf(stderr, "anqi-edge: %v\n", err)
		return 1
	}
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-hup:
			reload()
		}
	}
	stop()
	log.Info("shutting down", "grace", cfg.Server.ShutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownGrace.Duration)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown did not finish cleanly", "err", err)
	}
	log.Info("stopped")
	return 0
}

const usage = `usage: anqi-edge [-config FILE]
       anqi-edge check [-config FILE]
       anqi-edge purge [-config FILE] -id N [-host H]`

// parseFlags parses a command's flags. The flag package follows its error
// with the whole usage text; an operator gets one line naming the bad flag
// instead, and the usage on -h. When it reports false, the command ends
// with code (0 for -h, 2 for a bad command line).
func parseFlags(fl *flag.FlagSet, args []string, stderr io.Writer, usage string) (code int, ok bool) {
	fl.SetOutput(io.Discard)
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, usage)
			fl.SetOutput(stderr)
			fl.PrintDefaults()
			return 0, false
		}
		fmt.Fprintf(stderr, "%s: %v (see %s -h)\n", fl.Name(), err, fl.Name())
		return 2, false
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fl.Name(), fl.Arg(0))
		return 2, false
	}
	return 0, true
}

// loadConfig reads path; when -config was not given and the default file is
// absent, the embedded copy of config.toml is used instead.
func loadConfig(fl *flag.FlagSet, path string, environ []string) (*config.Config, error) {
	explicit := false
	fl.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := config.Load(path, environ)
	if err != nil && !explicit && errors.Is(err, fs.ErrNotExist) {
		return config.Parse(defaultConfig, environ)
	}
	return cfg, err
}

func newLogger(c config.Log, level slog.Leveler, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// purge invalidates one order on every replica. With Redis configured it
// runs the invalidation script itself (every replica hears it on pub/sub);
// without Redis it asks this host's admin listener.
func purge(args, environ []string, stderr io.Writer) int {
	fl := flag.NewFlagSet("anqi-edge purge", flag.ContinueOnError)
	fl.SetOutput(stderr)
	path := fl.String("config", "config.toml", "config file")
	id := fl.Int64("id", 0, "order id to purge (required)")
	host := fl.String("host", "", "site host (informational: purges drop the order on every site)")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *id <= 0 {
		fmt.Fprintln(stderr, "anqi-edge purge: -id must be a positive integer")
		return 2
	}
	cfg, err := loadConfig(fl, *path, environ)
	if err != nil {
		fmt.Fprintf(stderr, "anqi-edge purge: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	if len(cfg.Redis.Addrs) > 0 {
		rc := cfg.Redis
		client, err := cache.NewRedisClient(rc)
		if err != nil {
			fmt.Fprintf(stderr, "anqi-edge purge: %v\n", err)
			return 2
		}
		defer client.Close()
		r := cache.NewRedis(cache.RedisOptions{Client: client, Prefix: rc.KeyPrefix, Channel: rc.Channel, ReplicaID: "cli"})
		if queued, err := r.Invalidate(ctx, *id); err != nil || queued {
			fmt.Fprintf(stderr, "anqi-edge purge: order %d: redis.addrs %v: %v\n", *id, rc.Addrs, err)
			return 1
		}
		fmt.Fprintf(stderr, "purged order %d on every replica (via redis)\n", *id)
		return 0
	}

	if cfg.Admin.Token == "" {
		fmt.Fprintln(stderr, "anqi-edge purge: no redis configured and admin.token is empty: nothing can accept the purge")
		return 1
	}
	q := url.Values{"id": {strconv.FormatInt(*id, 10)}}
	if *host != "" {
		q.Set("host", *host)
	}
	addr := cfg.Admin.Listen
	if h, p, err := net.SplitHostPort(addr); err == nil && (h == "" || h == "0.0.0.0" || h == "::") {
		addr = net.JoinHostPort("127.0.0.1", p)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/admin/purge?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+cfg.Admin.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "anqi-edge purge: admin.listen %s: %v\n", cfg.Admin.Listen, err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		fmt.Fprintf(stderr, "anqi-edge purge: admin answered %s: %s\n", resp.Status, body)
		return 1
	}
	fmt.Fprintf(stderr, "purged order %d (via admin listener %s)\n", *id, cfg.Admin.Listen)
	return 0
}
