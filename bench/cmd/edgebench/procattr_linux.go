//go:build linux

package main

import "syscall"

// sysProcAttr makes the kernel send SIGTERM to a child when the thread that
// started it dies, so a crashed or killed edgebench leaves no anqi-edge,
// nginx or redis-server behind. (Pdeathsig follows the forking OS thread;
// the Go runtime only retires threads locked with runtime.LockOSThread,
// which edgebench never does.) SIGTERM rather than SIGKILL lets the nginx
// master take its workers down with it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
