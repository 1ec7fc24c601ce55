// Command healthcheck is the container HEALTHCHECK for anqi-edge. The
// distroless runtime image has no shell, curl or wget, so this tiny static
// binary does the probe: GET the admin listener's /healthz and exit 0 on
// HTTP 200, 1 otherwise.
//
//	healthcheck [URL]   (default http://127.0.0.1:9090/healthz)
package main

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	url := "http://127.0.0.1:9090/healthz"
	if len(os.Args) > 1 {
		url = os.Args[1]
	}
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Fprintf(os.Stderr, "healthcheck: %v\n", err)
		os.Exit(1)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "healthcheck: %s answered %s\n", url, resp.Status)
		os.Exit(1)
	}
}
