// Command fake-anqicms serves anqi-edge's fake AnqiCMS (package
// anqi-edge/anqicms/fake) with seeded users and orders, for demos, manual
// testing and benchmarks.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"anqi-edge/anqicms/fake"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8001", "address to listen on")
	secret := flag.String("secret", "fake-secret", "site TokenSecret")
	users := flag.Int("users", 3, "users to seed (user1/pass1, ...)")
	orders := flag.Int("orders", 2, "orders to seed per user")
	detailLatency := flag.Duration("detail-latency", 0, "artificial latency of /api/communication/order/detail")
	printTokens := flag.Bool("print-tokens", false, "print a 30-day token per seeded user")
	tokenFile := flag.String("token-file", "", "write the first user's 30-day token to this file")
	dsn := flag.String("dsn", "", "keep orders and messages in this MySQL/MariaDB database "+
		"(go-sql-driver DSN, e.g. user:pw@tcp(127.0.0.1:3306)/anqicms); empty = in memory")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("fake-anqicms: ")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	opts := fake.Options{
		TokenSecret: *secret,
		Latency:     map[string]time.Duration{"/api/communication/order/detail": *detailLatency},
	}
	srv := fake.New(opts)
	if *dsn != "" {
		db, err := sql.Open("mysql", *dsn)
		if err != nil {
			log.Fatalf("-dsn: %v", err)
		}
		defer db.Close()
		if srv, err = fake.NewWithDB(opts, db); err != nil {
			log.Fatalf("-dsn: %v", err)
		}
		log.Printf("orders in the database; admin side: POST %s, %s, %s", fake.AdminReplyPath, fake.AdminQuotePath, fake.AdminStatusPath)
	}
	seeded, _ := srv.Seed(*users, *orders)
	const ttl = 30 * 24 * time.Hour
	if *printTokens {
		for _, u := range seeded {
			fmt.Printf("user %d %s token %s\n", u.ID, u.Name, srv.Token(u.ID, ttl))
		}
	}
	if *tokenFile != "" {
		if len(seeded) == 0 {
			log.Fatal("-token-file needs -users >= 1")
		}
		if err := os.WriteFile(*tokenFile, []byte(srv.Token(seeded[0].ID, ttl)), 0o600); err != nil {
			log.Fatal(err)
		}
	}

	base, err := srv.Start(*listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("serving %s (%d users, %d orders each, detail latency %s)", base, *users, *orders, *detailLatency)

	<-ctx.Done()
	if err := srv.Close(); err != nil {
		log.Fatal(err)
	}
}
