//go:build linux

package procattr

import "syscall"

// DieWithParent returns attributes that make the kernel send sig to the
// child when the OS thread that started it dies, so a crashed or killed test
// binary or harness leaves no redis-server, nginx or anqi-edge behind.
//
// Pdeathsig follows the forking OS thread, not the process: the Go runtime
// retires a thread only when a goroutine exits while locked to it with
// runtime.LockOSThread, so do not start children from such a goroutine.
func DieWithParent(sig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: sig}
}
