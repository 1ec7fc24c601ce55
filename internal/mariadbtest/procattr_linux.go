//go:build linux

package mariadbtest

import "syscall"

// sysProcAttr makes the kernel SIGKILL the child when the thread that started
// it dies, so a crashed or killed test binary never leaves redis-server
// processes behind. (Pdeathsig is tied to the forking OS thread; the Go
// runtime only retires threads whose goroutine exits while locked with
// runtime.LockOSThread, so do not call Start from such a goroutine.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
