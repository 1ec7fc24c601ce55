//go:build linux

package main

import "syscall"

// sysProcAttr makes the kernel stop the private redis-server when the
// thread that started it dies, so a killed watchbench leaves nothing behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
