// Package procattr ties a child process's life to its parent's: the one
// place the tests (internal/redistest, deploy) and the load harness in bench/
// (a module of its own, which may import this package because its path,
// anqi-edge/bench/..., lies under anqi-edge/, the parent of internal/) start
// redis-server, mariadbd, nginx and anqi-edge from.
package procattr
