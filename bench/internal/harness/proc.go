// Package harness starts, watches and stops the child processes of the
// bench programs (edgebench, soak): redis-server, nginx, anqi-edge. Every
// child listens on 127.0.0.1 only, logs to a file in a work directory, and
// gets a signal from the kernel if the harness dies (internal/procattr).
package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"anqi-edge/internal/procattr"
)

// Proc is one child process with its output in a log file.
type Proc struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string
	done    chan struct{} // closed when the process has exited
	waitErr error
}

// Start starts bin with args in dir; stdout and stderr go to dir/name.log
// (appended, so a restarted process keeps one log). The kernel sends
// SIGTERM to the child if the harness dies (Linux).
func Start(name, dir, bin string, args ...string) (*Proc, error) {
	return StartEnv(name, dir, bin, nil, args...)
}

// StartEnv is Start with extra KEY=VALUE environment entries added to
// ChildEnv's, for an override the caller means to pass on.
func StartEnv(name, dir, bin string, extra []string, args ...string) (*Proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(ChildEnv(), extra...)
	// SIGTERM if the harness dies, rather than SIGKILL, so the nginx
	// master takes its workers down with it.
	cmd.SysProcAttr = procattr.DieWithParent(syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// ChildEnv is this process's environment without ANQI_EDGE_* overrides, so
// a stray variable in the caller's shell cannot change a generated config.
func ChildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ANQI_EDGE_") {
			env = append(env, kv)
		}
	}
	return env
}

// PID is the child's process id.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// WaitErr is cmd.Wait's result; valid once Done is closed.
func (p *Proc) WaitErr() error { return p.waitErr }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, waits up to grace, then SIGKILL.
func (p *Proc) Stop(grace time.Duration) {
	if p == nil || p.Exited() {
		return
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.Cmd.Process.Kill()
		<-p.done
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() {
	if p == nil || p.Exited() {
		return
	}
	p.Cmd.Process.Kill()
	<-p.done
}

// Tail returns the last lines of the process log, for error messages.
func (p *Proc) Tail() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// WaitReady polls ready until it succeeds, the process exits, or 20 s pass.
func (p *Proc) WaitReady(ctx context.Context, ready func(context.Context) error) error {
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("%s exited during startup (%v); log %s:\n%s", p.Name, p.waitErr, p.LogPath, p.Tail())
		}
		c, cancel := context.WithTimeout(ctx, time.Second)
		last = ready(c)
		cancel()
		if last == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within 20s (last error: %v); log %s:\n%s", p.Name, last, p.LogPath, p.Tail())
}

// Group stops every process it holds, last started first.
type Group struct{ procs []*Proc }

// Add remembers p for StopAll.
func (g *Group) Add(p *Proc) { g.procs = append(g.procs, p) }

// StopAll stops every process, last added first.
func (g *Group) StopAll() {
	for i := len(g.procs) - 1; i >= 0; i-- {
		g.procs[i].Stop(5 * time.Second)
	}
	g.procs = nil
}
